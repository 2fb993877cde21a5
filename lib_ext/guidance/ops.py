"""Tensor operations of the guidance maths, one per formula, each on one image's tensors (C, H, W).

neutral-prompt's (filter_abs_top_k, perpendicular_component, salient_blend, cfg_rescale) give its numbers, with
its two crashes fixed (k = 0 at ratio 1; a zero-norm projection base). SEGA's per-channel threshold uses
`kthvalue`, picking the exact order statistic that `torch.quantile`'s interpolated threshold lets through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _selectable(t: torch.Tensor) -> torch.Tensor:
    """kthvalue and softmax have no CPU kernels for float16: compute in float32 there (float16 values are exact in
    float32, so a selection is unchanged)."""
    if t.device.type == "cpu" and t.dtype == torch.float16:
        return t.float()
    return t


def _dims(v: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, v.dim()))


def filter_abs_top_k(v: torch.Tensor, ratio: float, *, batched: bool = False) -> torch.Tensor:
    """AND_TOPK in neutral-prompt: v where |v| ≥ its k-th smallest value over all of C·H·W, else 0, with
    k = int(numel·(1−ratio)) clamped to [1, numel] (neutral-prompt crashes at k = 0). `batched`: per sample of a
    leading dimension."""
    flat = v.reshape(v.shape[0], -1) if batched else v.reshape(1, -1)
    n = flat.shape[1]
    k = min(max(int(n * (1 - ratio)), 1), n)
    mag = flat.abs()
    tau = torch.kthvalue(_selectable(mag), k, dim=1, keepdim=True).values.to(mag.dtype)
    return (flat * (mag >= tau).to(flat.dtype)).reshape(v.shape)


def quantile_rank(n: int, q: float) -> int:
    """1-based rank k such that `|x| >= kthvalue(|x|, k)` keeps exactly what `|x| >= quantile(|x|, q)` keeps.

    torch.quantile (linear) interpolates between order statistics at position q·(n−1); since no value lies strictly
    between two neighbouring order statistics, the interpolated threshold keeps the same elements as the upper one,
    or the lower one when the position is a whole number. k is clamped to [1, n].
    """
    pos = q * (n - 1)
    nearest = round(pos)
    if abs(pos - nearest) <= 1e-9 * max(1.0, abs(pos)):
        pos = nearest
    return min(max(math.ceil(pos) + 1, 1), n)


def channel_quantile_filter(psi: torch.Tensor, q: float) -> torch.Tensor:
    """SEGA's threshold: per sample and channel, zero the entries of `psi` whose |.| is below the q-quantile of that
    channel's H·W values. `psi` is (..., C, H, W); selection runs on one (N·C, H·W) view."""
    h, w = psi.shape[-2], psi.shape[-1]
    flat = psi.reshape(-1, h * w)
    mag = flat.abs()
    k = quantile_rank(h * w, q)
    tau = torch.kthvalue(_selectable(mag), k, dim=1, keepdim=True).values.to(mag.dtype)
    return torch.where(mag >= tau, flat, torch.zeros_like(flat)).reshape(psi.shape)


def perpendicular_component(normal: torch.Tensor, vector: torch.Tensor, *, batched: bool = False) -> torch.Tensor:
    """v − n·<n,v>/‖n‖² over the whole tensor (per sample when `batched`); v itself where n is zero (nothing to be
    perpendicular to; neutral-prompt warns there)."""
    dims = _dims(normal) if batched else tuple(range(normal.dim()))
    norm_sq = torch.sum(normal * normal, dim=dims, keepdim=True)
    dot = torch.sum(normal * vector, dim=dims, keepdim=True)
    nonzero = norm_sq > 0
    projected = vector - normal * (dot / torch.where(nonzero, norm_sq, torch.ones_like(norm_sq)))
    return torch.where(nonzero, projected, vector)


def salience(v: torch.Tensor, *, batched: bool = False) -> torch.Tensor:
    """softmax of |v| over the whole tensor, per sample when `batched` (CPU has no float16 softmax: float32 there)."""
    flat = v.abs().reshape(v.shape[0], -1) if batched else v.abs().reshape(1, -1)
    return torch.softmax(_selectable(flat), dim=1).to(v.dtype).reshape(v.shape)


def salient_blend(
    normal: torch.Tensor, vectors: Sequence[tuple[torch.Tensor, float]], *, batched: bool = False
) -> torch.Tensor:
    """AND_SALT: where vector i is the most salient of [normal, vectors...], add w_i·(v_i − normal)."""
    result = torch.zeros_like(normal)
    if not vectors:
        return result
    maps = torch.stack([salience(normal, batched=batched)] + [salience(v, batched=batched) for v, _ in vectors])
    winner = torch.argmax(maps, dim=0)
    for i, (v, w) in enumerate(vectors, start=1):
        result += w * (winner == i).to(normal.dtype) * (v - normal)
    return result


def cfg_rescale(cfg_cond: torch.Tensor, cond: torch.Tensor, phi: float, *, batched: bool = False) -> torch.Tensor:
    """neutral-prompt's CFG rescale: move the guided prediction's mean and spread toward the unguided one's by φ
    (statistics over the whole tensor, per sample when `batched`)."""
    if phi == 0:
        return cfg_cond
    dims = _dims(cfg_cond) if batched else tuple(range(cfg_cond.dim()))
    mean = cfg_cond.mean(dim=dims, keepdim=True)
    target_mean = (1 - phi) * mean + phi * cond.mean(dim=dims, keepdim=True)
    factor = phi * (cond.std(dim=dims, keepdim=True) / cfg_cond.std(dim=dims, keepdim=True) - 1) + 1
    return target_mean + (cfg_cond - mean) * factor
