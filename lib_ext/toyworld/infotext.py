"""A1111-style infotext ("parameters") for toy-host images, in the order and quoting of v1.10.1's create_infotext."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def quote(value: Any) -> Any:
    """A1111's `infotext_utils.quote`: JSON-quote values holding a comma, a colon or a newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    return json.dumps(text, ensure_ascii=False)


def format_number(value: Any) -> Any:
    """7.0 → 7 (as the UI's sliders give it), other values unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def create_infotext(
    prompt: str,
    negative_prompt: str,
    *,
    steps: int,
    sampler_name: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model_name: str,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """`prompt\\nNegative prompt: …\\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 32x32, Model: …, …`.

    Keys whose value is None are left out; a key whose value equals the key is written alone (A1111's rule).
    """
    params: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler_name,
        "CFG scale": format_number(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model": model_name,
        **(extra or {}),
    }
    text = ", ".join(k if k == v else f"{k}: {quote(format_number(v))}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{text}".strip()
