"""From summed token maps to one normalised map per word (DAAM's word heat map), masks and IoU.

A word's map is the mean of its token positions' summed maps (every occurrence, every sub-token), then min-max
normalised to [0, 1] as DAAM's ``expand_as`` does; DAAM's τ = 0.4 threshold turns it into a mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

Mode = Literal["positive", "negative", "delta"]
MODES: tuple[str, ...] = ("positive", "negative", "delta")
DEFAULT_THRESHOLD = 0.4


def word_map(token_maps: torch.Tensor, positions: Sequence[int], normalize: bool = True) -> torch.Tensor:
    """Mean over ``positions`` of ``token_maps`` ``[L, H, W]`` → ``[H, W]``, min-max normalised unless told not to."""
    if not positions:
        raise ValueError("a word needs at least one token position")
    n = token_maps.shape[0]
    bad = [p for p in positions if not 0 <= p < n]
    if bad:
        raise ValueError(f"token positions {bad} are outside the captured context of {n} tokens")
    index = torch.as_tensor(list(positions), dtype=torch.long, device=token_maps.device)
    heat = token_maps.index_select(0, index).float().mean(dim=0)
    return normalize_minmax(heat) if normalize else heat


def normalize_minmax(heat: torch.Tensor) -> torch.Tensor:
    """Scale to [0, 1]; a flat map becomes all zeros (nothing stands out)."""
    low, high = heat.min(), heat.max()
    span = high - low
    if float(span) <= 0:
        return torch.zeros_like(heat, dtype=torch.float32)
    return ((heat - low) / span).float()


def token_normalize(token_maps: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """DAAM's ``normalize=True``: per pixel, divide by the sum over the prompt's real tokens (positions 1..n)."""
    real = token_maps[1 : n_tokens + 1]
    return token_maps / (real.sum(dim=0, keepdim=True) + 1e-6)


def combine_mode(positive: torch.Tensor | None, negative: torch.Tensor | None, mode: Mode) -> torch.Tensor:
    """positive / negative / delta = max(0, pos − neg) of two normalised maps of one word.

    A word absent from the other prompt is given as None: it counts as zero.
    """
    if mode not in MODES:
        raise ValueError(f"unknown heatmap mode {mode!r}; use one of {', '.join(MODES)}")
    ref = positive if positive is not None else negative
    if ref is None:
        raise ValueError("no map for this word in either prompt")
    zero = torch.zeros_like(ref)
    pos = positive if positive is not None else zero
    neg = negative if negative is not None else zero
    if mode == "positive":
        return pos
    if mode == "negative":
        return neg
    return (pos - neg).clamp_min(0)


def resize_map(heat: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of one ``[H, W]`` map to (height, width), clamped to the input's range."""
    if tuple(heat.shape) == (height, width):
        return heat
    out = F.interpolate(heat[None, None].float(), size=(height, width), mode="bicubic", align_corners=False)[0, 0]
    return out.clamp(float(heat.min()), float(heat.max()))


def threshold_mask(heat: torch.Tensor, tau: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """DAAM's mask: normalised heat above τ."""
    return normalize_minmax(heat) > tau


def iou(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Intersection over union of two boolean masks; two empty masks count as a perfect match."""
    pred, truth = pred.bool(), truth.bool()
    union = (pred | truth).sum().item()
    if union == 0:
        return 1.0
    return (pred & truth).sum().item() / union
