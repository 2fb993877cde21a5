"""The toy model's noise schedule: Stable Diffusion's "scaled linear" β schedule (√β linear from √0.00085 to √0.012
over 1000 steps), so the toy model uses SD's own timesteps and sigmas.

A host wraps the ε-model exactly like A1111's k-diffusion `CompVisDenoiser`:
    sigma_t = sqrt((1 - ᾱ_t) / ᾱ_t),  c_in = 1 / sqrt(σ² + 1),  x0 = x − σ·ε.
sigma runs from about 0.029 (t = 0) to about 14.6 (t = 999). Pixels are scaled to [-1, 1].

Why not DDPM's linear 1e-4 … 0.02: its σ_max ≈ 157 multiplies every ε error of the first sampling steps by 157
(x0 = x − σ·ε); a first training run with it (445 steps) drew saturated, noisy images from pure noise although its
teacher-forced ε loss was low. SD's schedule keeps σ_max ≈ 14.6, at the price of a little signal left at t = 999
(the "non-zero terminal SNR" SD itself lives with).
"""

from __future__ import annotations

import torch

NUM_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
NAME = "scaled_linear(0.00085, 0.012, 1000)"


def betas(n: int = NUM_TIMESTEPS) -> torch.Tensor:
    return torch.linspace(BETA_START**0.5, BETA_END**0.5, n, dtype=torch.float64) ** 2


def alphas_cumprod(n: int = NUM_TIMESTEPS) -> torch.Tensor:
    """ᾱ_t for t = 0..n-1 as float32 (computed in float64)."""
    return torch.cumprod(1.0 - betas(n), dim=0).to(torch.float32)


def sigmas(n: int = NUM_TIMESTEPS) -> torch.Tensor:
    """k-diffusion sigmas for t = 0..n-1: sqrt((1 - ᾱ) / ᾱ)."""
    ac = torch.cumprod(1.0 - betas(n), dim=0)
    return ((1.0 - ac) / ac).sqrt().to(torch.float32)
