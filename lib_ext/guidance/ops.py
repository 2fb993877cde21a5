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


def abs_top_k_threshold(v: torch.Tensor, ratio: float) -> torch.Tensor:
    """neutral-prompt's threshold: the k-th smallest |v| over the whole tensor, k = int(numel·(1−ratio)) in [1, n]."""
    n = v.numel()
    k = min(max(int(n * (1 - ratio)), 1), n)
    return torch.kthvalue(_selectable(v.abs().flatten()), k).values.to(v.dtype)


def filter_abs_top_k(v: torch.Tensor, ratio: float) -> torch.Tensor:
    """v where |v| ≥ its (1−ratio) order statistic over all of C·H·W, else 0 (AND_TOPK in neutral-prompt)."""
    return v * (v.abs() >= abs_top_k_threshold(v, ratio)).to(v.dtype)


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


def perpendicular_component(normal: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """v − n·<n,v>/‖n‖² over the whole tensor; v itself when n is zero (nothing to be perpendicular to)."""
    norm_sq = torch.sum(normal * normal)
    if float(norm_sq) == 0.0:
        return vector
    return vector - normal * torch.sum(normal * vector) / norm_sq


def salience(v: torch.Tensor) -> torch.Tensor:
    """softmax of |v| over the whole tensor (CPU has no float16 softmax: computed in float32 there)."""
    return torch.softmax(_selectable(v.abs().flatten()), dim=0).to(v.dtype).reshape_as(v)


def salient_blend(normal: torch.Tensor, vectors: Sequence[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """AND_SALT: where vector i is the most salient of [normal, vectors...], add w_i·(v_i − normal)."""
    result = torch.zeros_like(normal)
    if not vectors:
        return result
    maps = torch.stack([salience(normal)] + [salience(v) for v, _ in vectors], dim=0)
    winner = torch.argmax(maps, dim=0)
    for i, (v, w) in enumerate(vectors, start=1):
        result += w * (winner == i).to(normal.dtype) * (v - normal)
    return result


def cfg_rescale(cfg_cond: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """neutral-prompt's CFG rescale: move the guided prediction's mean and spread toward the unguided one's by φ."""
    if phi == 0:
        return cfg_cond
    mean = cfg_cond.mean()
    target_mean = (1 - phi) * mean + phi * cond.mean()
    factor = phi * (cond.std() / cfg_cond.std() - 1) + 1
    return target_mean + (cfg_cond - mean) * factor
