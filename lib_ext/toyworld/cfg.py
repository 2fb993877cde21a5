"""Classifier-free guidance with A1111's CFGDenoiser batch layout, for the toy model's samplers.

One model call holds every cond row (image 0's sub-prompts, then image 1's, ...) followed by one uncond row per
image; image i's result is uncond_i + Σ_j w_ij·scale·(cond_ij − uncond_i) (`combine_denoised`). The same
combination serves x0 outputs (k-diffusion samplers) and ε outputs (timestep samplers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Conds = Sequence[Sequence[tuple[int, float]]]  # per image: (cond row, weight) per sub-prompt


def default_conds(n_images: int) -> list[list[tuple[int, float]]]:
    """One sub-prompt of weight 1 per image, in row order."""
    return [[(i, 1.0)] for i in range(n_images)]


def batch_cond_uncond(
    x: torch.Tensor, sigma: torch.Tensor, cond_ctx: torch.Tensor, uncond_ctx: torch.Tensor, conds_list: Conds
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_in, sigma_in, context_in): image i's x and sigma repeated once per sub-prompt, then the uncond rows."""
    repeats = [len(c) for c in conds_list]
    x_in = torch.cat([torch.stack([x[i]] * n) for i, n in enumerate(repeats)] + [x])
    sigma_in = torch.cat([torch.stack([sigma[i]] * n) for i, n in enumerate(repeats)] + [sigma])
    return x_in, sigma_in, torch.cat([cond_ctx, uncond_ctx])


def combine_denoised(x_out: torch.Tensor, conds_list: Conds, n_uncond: int, cond_scale: float) -> torch.Tensor:
    """A1111's combination: start from each image's uncond row, add weighted, scaled (cond − uncond)."""
    denoised_uncond = x_out[-n_uncond:]
    denoised = denoised_uncond.clone()
    for i, conds in enumerate(conds_list):
        for cond_index, weight in conds:
            denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
    return denoised


def cfg_denoise(
    denoiser: Any,
    x: torch.Tensor,
    sigma: torch.Tensor,
    cond_ctx: torch.Tensor,
    uncond_ctx: torch.Tensor,
    scale: float,
    conds_list: Conds | None = None,
) -> torch.Tensor:
    """One guided prediction for a batch of B images.

    `denoiser(x, sigma, context=...)` is a `DiscreteEpsDenoiser` (sigma per row, returns x0) or a
    `TimestepsEpsDenoiser` (timestep per row, returns ε). `cond_ctx` has one row per sub-prompt in `conds_list`
    order (default: one per image), `uncond_ctx` one row per image. `sigma` is per image, or a scalar.
    """
    n_images = x.shape[0]
    conds_list = default_conds(n_images) if conds_list is None else conds_list
    if len(conds_list) != n_images:
        raise ValueError(f"conds_list names {len(conds_list)} images, x holds {n_images}")
    n_cond = sum(len(c) for c in conds_list)
    if cond_ctx.shape[0] != n_cond or uncond_ctx.shape[0] != n_images:
        raise ValueError(
            f"expected {n_cond} cond rows and {n_images} uncond rows, got {cond_ctx.shape[0]} and {uncond_ctx.shape[0]}"
        )
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.dim() == 0:
        sigma = sigma.expand(n_images)
    x_in, sigma_in, ctx_in = batch_cond_uncond(x, sigma, cond_ctx, uncond_ctx, conds_list)
    x_out = denoiser(x_in, sigma_in, context=ctx_in)
    return combine_denoised(x_out, conds_list, n_images, scale)


class CFGDenoiser(torch.nn.Module):
    """The model a sampler calls: `(x, sigma, cond=..., uncond=..., cond_scale=..., conds_list=None)`, as A1111
    passes cond/uncond/cond_scale through the samplers' `extra_args`."""

    def __init__(self, denoiser: Any) -> None:
        super().__init__()
        self.inner_model = denoiser
        self.step = 0

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        # For timestep samplers, which read ᾱ from the model they call.
        return self.inner_model.alphas_cumprod

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        cond_scale: float,
        conds_list: Conds | None = None,
    ) -> torch.Tensor:
        out = cfg_denoise(self.inner_model, x, sigma, cond, uncond, cond_scale, conds_list)
        self.step += 1
        return out
