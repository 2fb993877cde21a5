#!/usr/bin/env bash
# The test command README gives: set-up (idempotent), then every test tier that can run here.
# The browser tier needs Debian's chromium + chromium-driver; as root with apt we install them, otherwise those
# tests skip and say why. The live tier runs only when PROMPTSCOPE_WEBUI names a WebUI checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Chromium for the browser tests (apt-get)..."
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
      || echo "Could not install Chromium; the browser tests will be skipped."
  fi
fi
# Two torch threads that spin while waiting starve each other on a small shared CPU; let them sleep instead.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec .venv/bin/python -m pytest -q "$@"
