#!/usr/bin/env bash
# Creates .venv/ at the repository root with the host's pinned versions. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.promptscope-setup
want=$(cat requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade "pip<25"
# pip prefers a CPU wheel from a local find-links folder when one matches the pin; else it takes PyPI's.
.venv/bin/python -m pip install --quiet -r requirements-dev.txt
echo "$want" > "$stamp"
