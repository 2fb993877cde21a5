#!/usr/bin/env bash
# The live tier in one command, against the A1111 checkout named by PROMPTSCOPE_WEBUI (prepared by
# tools/prepare_webui.py): the double-vs-A1111 differential tests with that checkout's source, then tests/live once
# per checkpoint (default: the SD1.5-shaped and the SDXL-shaped random-weight checkpoints the script makes; set
# PROMPTSCOPE_LIVE_CHECKPOINTS to names under models/Stable-diffusion/ to choose). Extra arguments go to pytest.
# Every run is reported; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PROMPTSCOPE_WEBUI:-}" ]; then
  echo "Set PROMPTSCOPE_WEBUI to an A1111 WebUI checkout (prepare one with: python3 tools/prepare_webui.py PATH)." >&2
  exit 2
fi
bash tools/setup.sh || exit 1
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
checkpoints=${PROMPTSCOPE_LIVE_CHECKPOINTS:-"random-sd15.safetensors random-sdxl-tiny.safetensors"}
failed=()
echo "== differential tests: the test double against ${PROMPTSCOPE_WEBUI}'s source"
PROMPTSCOPE_A1111_GIT="${PROMPTSCOPE_A1111_GIT:-$PROMPTSCOPE_WEBUI}" \
  .venv/bin/python -m pytest -q tests/host/test_fake_webui_vs_a1111.py "$@" || failed+=("differential")
for ckpt in $checkpoints; do
  if [ ! -f "$PROMPTSCOPE_WEBUI/models/Stable-diffusion/$ckpt" ]; then
    echo "== $ckpt: not in $PROMPTSCOPE_WEBUI/models/Stable-diffusion (run tools/prepare_webui.py)" >&2
    failed+=("$ckpt (missing)")
    continue
  fi
  echo "== live tier with $ckpt"
  log=""
  [ -n "${PROMPTSCOPE_WEBUI_LOG:-}" ] && log="${PROMPTSCOPE_WEBUI_LOG%.log}-${ckpt%.safetensors}.log"
  PROMPTSCOPE_WEBUI_LOG="$log" \
    PROMPTSCOPE_WEBUI_ARGS="--ckpt models/Stable-diffusion/$ckpt ${PROMPTSCOPE_WEBUI_ARGS:-}" \
    .venv/bin/python -m pytest -q tests/live "$@" || failed+=("$ckpt")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "== live tier: failed: ${failed[*]}" >&2
  exit 1
fi
echo "== live tier: all passed"
