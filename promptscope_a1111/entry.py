"""Imported by `scripts/promptscope.py` while A1111 loads scripts (our folder is on sys.path only then).

Everything the glue needs at run time is imported here, at load time, because A1111 takes our folder off
`sys.path` once the scripts are loaded.
"""

from __future__ import annotations

from . import guidance_script, heatmaps_script, host, sampling
from .base_script import PromptScopeScript
from .lifecycle import start

__all__ = ["PromptScopeScript", "guidance_script", "heatmaps_script", "host", "sampling", "start"]
