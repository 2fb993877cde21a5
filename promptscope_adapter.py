"""Which host glue runs PromptScope, decided once at load time from the WebUI's own markers.

- Forge (Neo, and Forge 2 which shares its `backend` sampling package) ships `modules_forge/forge_version.py`
  (Neo: `version = "neo"`) and the `backend.sampling.sampling_function` module its CFG goes through:
  `promptscope_forge`.
- Anything else is AUTOMATIC1111: `promptscope_a1111`.

Nothing is guessed from paths. The `scripts/` entry points ask this module for their classes, so the same files
load in both hosts; `lib_ext` never learns which host it runs in.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

A1111, FORGE = "a1111", "forge"
PACKAGES = {A1111: "promptscope_a1111", FORGE: "promptscope_forge"}


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing or not a package
        return False


def forge_version() -> tuple[str, str] | None:
    """(version, release) from Forge's own version module, or None outside Forge."""
    if not _has_module("modules_forge.forge_version"):
        return None
    module = importlib.import_module("modules_forge.forge_version")
    return str(getattr(module, "version", "")), str(getattr(module, "release", ""))


def detect_host() -> str:
    """`forge` when the WebUI is a Forge with the `backend` sampling package (Neo, Forge 2), else `a1111`."""
    if forge_version() is not None and _has_module("backend.sampling.sampling_function"):
        return FORGE
    return A1111


def load(module: str, *names: str) -> Any:
    """`names` from the chosen adapter's `module` (one value for one name, else a tuple)."""
    mod = importlib.import_module(f"{PACKAGES[detect_host()]}.{module}")
    values = tuple(getattr(mod, n) for n in names)
    return values[0] if len(values) == 1 else values
