#!/usr/bin/env bash
# The UI code that A1111 (Gradio 3.41, pydantic 1) and Forge Neo (Gradio 4.40, pydantic 2) both run, tested on
# Gradio 4.40 in .venv-g4/ (tools/setup.sh gradio4): the shared builders of the standalone app, the feature
# controls and the seed-bandit tab, and the bandit's HTTP routes. tools/test.sh runs them on Gradio 3.41.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh gradio4
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# These tests skip where gradio does not import: here that would hide a broken environment, so check it first.
.venv-g4/bin/python -c "import gradio, pydantic; assert gradio.__version__.startswith('4.') and pydantic.VERSION.startswith('2.')"
GRADIO4_TESTS=(tests/unit/app tests/unit/bandit_tab)
if [ "$#" -eq 0 ]; then
  set -- "${GRADIO4_TESTS[@]}"
fi
exec .venv-g4/bin/python -m pytest -q "$@"
