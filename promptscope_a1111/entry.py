"""Imported by `scripts/promptscope.py` while A1111 loads scripts (our folder is on sys.path only then)."""

from __future__ import annotations

from .base_script import PromptScopeScript
from .lifecycle import start

lifetime = start()

__all__ = ["PromptScopeScript", "lifetime"]
