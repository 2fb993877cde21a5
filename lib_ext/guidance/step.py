"""What the host's CFG denoiser hands the guidance maths at one step."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Prediction = Literal["x0", "eps"]


@dataclass
class GuidanceStep:
    """One denoiser step, laid out as A1111's CFGDenoiser lays it out.

    x_out: model outputs, all rows: the cond rows (image 0's sub-prompts, image 1's, ...; deduplicated sub-prompts
      may share a row) followed by one uncond row per image. x0 predictions for k-diffusion samplers, eps for
      timestep samplers (DDIM/PLMS/UniPC) — `prediction` says which.
    x_in: the noisy input rows, same layout (only needed to express single outputs, not differences, in eps).
    sigma: per image (k-diffusion sigma; ignored for eps predictions).
    conds_list: per image, (row index, weight) per sub-prompt, in the image's leaf order.
    step / total_steps: the sampler's step (every model call of one step shares it: Heun calls the model twice) and
      its number of steps, as in the SEGA paper and diffusers; the host's call counter when it cannot tell.
    uncond_skipped: the host skipped the uncond rows this step (NGMS, "skip early CFG") and put copies of each
      image's first cond row there; it then combines with cond_scale 1. Momentum is neither used nor updated.
    """

    x_out: torch.Tensor
    x_in: torch.Tensor
    sigma: torch.Tensor
    conds_list: Sequence[Sequence[tuple[int, float]]]
    cond_scale: float
    step: int
    total_steps: int
    prediction: Prediction
    uncond_skipped: bool = False

    @property
    def n_images(self) -> int:
        return len(self.conds_list)

    def uncond(self) -> torch.Tensor:
        return self.x_out[-self.n_images :]

    def eps_factor(self, image: int) -> float:
        """f with eps-difference = f · output-difference: 1 for eps, −1/σ for x0 (x0 = x − σ·eps)."""
        if self.prediction == "eps":
            return 1.0
        sigma = float(self.sigma[image]) if torch.is_tensor(self.sigma) else float(self.sigma[image])
        return -1.0 / max(sigma, SIGMA_FLOOR)

    @classmethod
    def from_denoise_step(cls, ds) -> GuidanceStep:
        """From the host seam's `DenoiseStep` (lib_ext/seam.py): sampler steps where the host knows them."""
        step, total_steps = ds.steps() if hasattr(ds, "steps") else (int(ds.step), int(ds.total_steps))
        return cls(
            x_out=ds.x_out,
            x_in=ds.x_in,
            sigma=ds.sigma,
            conds_list=[list(c) for c in ds.layout.conds],
            cond_scale=float(ds.cond_scale),
            step=step,
            total_steps=total_steps,
            prediction=ds.prediction,
            uncond_skipped=bool(getattr(ds, "uncond_skipped", False)),
        )


SIGMA_FLOOR = 1e-5  # k-diffusion never evaluates the model at σ = 0; guard the eps conversion anyway
