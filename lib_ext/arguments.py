"""Coercion of argument values that arrive from UI components or HTTP API payloads (JSON or form strings)."""

from __future__ import annotations

from typing import Any

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def as_bool(name: str, value: Any) -> bool:
    """A checkbox value: bool, 0/1, or a yes/no word; anything else is a ValueError naming the argument."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, not {value!r}")
