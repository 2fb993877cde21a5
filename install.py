"""Run by A1111 on every launch (not with --skip-install). Installs only what the WebUI's environment lacks.

PromptScope needs torch, gradio, numpy, Pillow and safetensors, which the WebUI itself ships at its own pinned
versions, and OpenCV for colour maps. We never install, upgrade or downgrade torch, gradio or numpy.
"""

from __future__ import annotations

import importlib.util
import sys

# Import name -> the pip requirement to use when it is missing.
NEEDED = {
    "cv2": "opencv-python-headless",
    "safetensors": "safetensors",
}


def missing() -> list[str]:
    return [req for name, req in NEEDED.items() if importlib.util.find_spec(name) is None]


def main() -> None:
    # A1111 itself does not run this file with --skip-install; the check covers running it by hand.
    if "--skip-install" in sys.argv:
        return
    todo = missing()
    if not todo:
        return
    import launch  # the WebUI's own module: present whenever A1111 runs this file

    for req in todo:
        launch.run_pip(f"install {req}", f"PromptScope requirement: {req}")


main()
