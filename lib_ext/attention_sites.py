"""Find the cross-attention modules of a UNet, whatever its family.

SD1.x / SD2.x (`ldm`), SDXL (`sgm`) and diffusers all name the cross-attention of a transformer block `attn2`
and give it `to_q`, `to_k`, `to_v` and `to_out`; that shape is all we rely on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionSite:
    name: str  # dotted module path inside the UNet, e.g. "input_blocks.1.1.transformer_blocks.0.attn2"
    module: torch.nn.Module
    heads: int
    block: str  # "down", "mid", "up" or "other"

    @property
    def short_name(self) -> str:
        """A compact label such as IN01, MID, OUT05 (A1111 users know these from block weights)."""
        parts = self.name.split(".")
        for prefix, label in (("input_blocks", "IN"), ("output_blocks", "OUT")):
            if parts[0] == prefix and len(parts) > 1 and parts[1].isdigit():
                return f"{label}{int(parts[1]):02d}"
        if parts[0] in ("middle_block", "mid_block"):
            return "MID"
        for prefix, label in (("down_blocks", "DOWN"), ("up_blocks", "UP")):
            if parts[0] == prefix and len(parts) > 1 and parts[1].isdigit():
                return f"{label}{int(parts[1]):02d}"
        return self.name


def _block_of(name: str) -> str:
    head = name.split(".", 1)[0]
    if head in ("input_blocks", "down_blocks"):
        return "down"
    if head in ("middle_block", "mid_block"):
        return "mid"
    if head in ("output_blocks", "up_blocks"):
        return "up"
    return "other"


def is_cross_attention(module: torch.nn.Module) -> bool:
    return all(hasattr(module, a) for a in ("to_q", "to_k", "to_v", "to_out"))


def find_cross_attention(unet: torch.nn.Module) -> list[AttentionSite]:
    """Every `attn2` module with q/k/v/out projections, in module order."""
    sites = []
    for name, module in unet.named_modules():
        if name.rsplit(".", 1)[-1] == "attn2" and is_cross_attention(module):
            heads = int(getattr(module, "heads", 0) or getattr(module, "num_heads", 0) or 1)
            sites.append(AttentionSite(name, module, heads, _block_of(name)))
    return sites
