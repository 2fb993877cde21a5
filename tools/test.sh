#!/usr/bin/env bash
# The test command README gives: set-up (idempotent), then every test tier that can run here.
# The live tier runs only when PROMPTSCOPE_WEBUI names a WebUI checkout; otherwise it is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest -q "$@"
