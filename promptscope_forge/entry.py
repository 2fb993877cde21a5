"""Imported through `promptscope_adapter` by `scripts/promptscope.py` while Forge loads scripts."""

from __future__ import annotations

from . import guidance_script, heatmaps_script, host, sampling
from .base_script import PromptScopeScript
from .lifecycle import start

__all__ = ["PromptScopeScript", "guidance_script", "heatmaps_script", "host", "sampling", "start"]
