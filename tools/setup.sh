#!/usr/bin/env bash
# Creates .venv/ at the repository root with the host's pinned versions. Safe to run again.
# `tools/setup.sh gradio4` creates .venv-g4/ instead: Forge Neo's UI stack (requirements-g4.txt), where
# tools/test_gradio4.sh runs the shared UI builders' and the bandit routes' tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=.venv
requirements=requirements-dev.txt
if [ "${1:-}" = gradio4 ]; then
  venv=.venv-g4
  requirements=requirements-g4.txt
fi
if [ ! -x "$venv/bin/python" ]; then
  "$PY" -m venv "$venv"
fi
stamp=$venv/.promptscope-setup
want=$(cat "$requirements" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$venv/bin/python" -m pip install --quiet --upgrade "pip<25"
# pip prefers a CPU wheel from a local find-links folder when one matches the pin; else it takes PyPI's.
"$venv/bin/python" -m pip install --quiet -r "$requirements"
echo "$want" > "$stamp"
