"""Loads the shipped toy-world weights (one .safetensors holding text encoder + UNet, config in its metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .model import ToyConfig, ToyTextEncoder, ToyUNet
from .tokenizer import ToyTokenizer

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "toyworld.safetensors"


def read_metadata(path: str | Path | None = None) -> dict:
    from safetensors import safe_open

    with safe_open(str(path or DEFAULT_WEIGHTS), framework="pt") as f:
        return dict(f.metadata() or {})


def load_toyworld(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[ToyTextEncoder, ToyUNet, ToyTokenizer, ToyConfig]:
    """(text_encoder, unet, tokenizer, config), in eval mode, fp32, on device."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    meta = read_metadata(path)
    if "config" not in meta:
        raise ValueError(f"{path} has no toy-world config in its metadata")
    cfg = ToyConfig.from_dict(json.loads(meta["config"]))
    tensors = load_file(str(path))
    te, unet = ToyTextEncoder(cfg), ToyUNet(cfg)
    te_state = {k[len("text_encoder.") :]: v.float() for k, v in tensors.items() if k.startswith("text_encoder.")}
    unet_state = {k[len("unet.") :]: v.float() for k, v in tensors.items() if k.startswith("unet.")}
    te.load_state_dict(te_state, strict=True)
    unet.load_state_dict(unet_state, strict=True)
    tok = ToyTokenizer()
    if tok.vocab_size != cfg.vocab_size:
        raise ValueError(f"weights expect a vocabulary of {cfg.vocab_size} words, the tokenizer has {tok.vocab_size}")
    te.eval().to(device)
    unet.eval().to(device)
    return te, unet, tok, cfg
