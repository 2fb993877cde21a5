"""The toy model's noise schedule: DDPM's linear β schedule (1e-4 … 0.02 over 1000 steps).

Chosen because it is the schedule DDPM used for 32×32 pixel-space images (CIFAR-10) and keeps SD's discrete
timesteps 0..999, so a host wraps the ε-model exactly like A1111's k-diffusion `CompVisDenoiser`:
    sigma_t = sqrt((1 - ᾱ_t) / ᾱ_t),  c_in = 1 / sqrt(σ² + 1),  x0 = x − σ·ε.
sigma runs from about 0.01 (t = 0) to about 157 (t = 999). Pixels are scaled to [-1, 1].
"""

from __future__ import annotations

import torch

NUM_TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02


def betas(n: int = NUM_TIMESTEPS) -> torch.Tensor:
    return torch.linspace(BETA_START, BETA_END, n, dtype=torch.float64)


def alphas_cumprod(n: int = NUM_TIMESTEPS) -> torch.Tensor:
    """ᾱ_t for t = 0..n-1 as float32 (computed in float64)."""
    return torch.cumprod(1.0 - betas(n), dim=0).to(torch.float32)


def sigmas(n: int = NUM_TIMESTEPS) -> torch.Tensor:
    """k-diffusion sigmas for t = 0..n-1: sqrt((1 - ᾱ) / ᾱ)."""
    ac = torch.cumprod(1.0 - betas(n), dim=0)
    return ((1.0 - ac) / ac).sqrt().to(torch.float32)
