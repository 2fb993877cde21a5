"""PromptScope's glue for Forge Neo (and Forge 2, which shares its `backend` sampling package).

Neo keeps A1111's script API, processing objects, prompt parser, infotext, settings, X/Y/Z grid and API, so the
script classes, settings and tabs of `promptscope_a1111` serve here unchanged (they import only what Neo has too).
What differs is sampling: Neo never calls A1111's `combine_denoised`, averages native `AND` conds before any CFG
hook, and lets extensions patch a per-pass clone of `p.sd_model.forge_objects.unet`. `sampling.py` does that.
The library is mounted once under its private name by `promptscope_a1111` (see there).
"""

from __future__ import annotations

import sys

import promptscope_a1111

PACKAGES = ("promptscope_forge", "promptscope_adapter")


def forget_modules() -> None:
    """Drop our packages (and the library, through promptscope_a1111) so a script reload imports them afresh."""
    promptscope_a1111.forget_modules()
    for name in list(sys.modules):
        if name.split(".", 1)[0] in PACKAGES:
            sys.modules.pop(name, None)
