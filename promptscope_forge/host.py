"""The Forge side of the host seam where it differs from A1111: the UNet module and the text encoder's chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from promptscope_lib_ext.seam import PromptTokens

from promptscope_a1111.host import tokenize_with


def unet_patcher_of(sd_model: Any) -> Any | None:
    """The `UnetPatcher` Forge samples with now (reset by Forge before every sampling pass)."""
    return getattr(getattr(sd_model, "forge_objects", None), "unet", None)


def unet_of(sd_model: Any) -> torch.nn.Module | None:
    """The diffusion model (`UnetPatcher.model` is Forge's KModel; its `diffusion_model` is the UNet)."""
    patcher = unet_patcher_of(sd_model)
    return getattr(getattr(patcher, "model", None), "diffusion_model", None)


def text_model_of(sd_model: Any) -> Any | None:
    """Forge's classic text engine (A1111's chunking: `tokenize_line`, 75 + start/end, BREAK, emphasis); for
    SDXL the CLIP-L engine, whose chunking the CLIP-G engine shares."""
    for name in ("text_processing_engine", "text_processing_engine_l"):
        engine = getattr(sd_model, name, None)
        if engine is not None and hasattr(engine, "tokenize_line"):
            return engine
    return None


def tokenizer_for(sd_model: Any) -> Callable[[str], PromptTokens]:
    def tokenize(prompt: str) -> PromptTokens:
        text_model = text_model_of(sd_model)
        if text_model is None:
            raise RuntimeError("PromptScope: this model's text engine does not expose tokenize_line()")
        return tokenize_with(text_model, prompt)

    return tokenize
