"""The toy host's CFG denoiser: `cfg.py`'s batched guidance plus A1111's step protocol (session, interrupt).

One UNet forward per step on [every sub-prompt row of image 0, of image 1, ..., one uncond row per image]
(v1.10.1 `CFGDenoiser.forward` with `batch_cond_uncond` on and `pad_cond_uncond` on: a prompt and a negative prompt
of different lengths are padded with the empty prompt's chunk so that they still share one forward). Around the
forward it drives the `SamplingSession` exactly as the A1111 adapter does: `begin_step(layout, step)` before the
UNet runs, `combine(DenoiseStep)` after; a step hook's tensor replaces the host formula (`default_combine`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..seam import BatchLayout, DenoiseStep, JobInfo, Prediction, sampler_step_of
from ..session import SamplingSession
from .cfg import batch_cond_uncond


class Interrupted(BaseException):  # like A1111's InterruptedException
    """Raised at the start of a denoiser step when the user interrupted; the sampler call returns `last_latent`."""


@dataclass
class MulticondBatch:
    """A1111's `reconstruct_multicond_batch` result: cond rows in host order and each image's (row, weight)."""

    tensor: torch.Tensor  # (n_cond_rows, T, D)
    conds_list: list[list[tuple[int, float]]]

    @property
    def layout(self) -> BatchLayout:
        return BatchLayout.from_conds_list(self.conds_list)


def stack_conds(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack (T, D) contexts; shorter ones repeat their last token vector, as A1111's `stack_conds`."""
    n = max(t.shape[0] for t in tensors)
    out = [t if t.shape[0] == n else torch.vstack([t, t[-1:].repeat([n - t.shape[0], 1])]) for t in tensors]
    return torch.stack(out)


def pad_cond_uncond(cond: torch.Tensor, uncond: torch.Tensor, empty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A1111's `pad_cond_uncond`: append copies of the empty prompt's chunk to the shorter side."""
    num_repeats = (cond.shape[1] - uncond.shape[1]) // empty.shape[1]
    if num_repeats < 0:
        cond = torch.cat([cond, empty.repeat((cond.shape[0], -num_repeats, 1))], dim=1)
    elif num_repeats > 0:
        uncond = torch.cat([uncond, empty.repeat((uncond.shape[0], num_repeats, 1))], dim=1)
    return cond, uncond


class ToyCFGDenoiser(torch.nn.Module):
    """`(x, sigma, cond, uncond, cond_scale) -> combined prediction` for the samplers of `sampling.py`.

    `inner_model(x_in, sigma_in, context=...)` returns x0 (a `DiscreteEpsDenoiser`, prediction "x0") or eps
    (a `TimestepsEpsDenoiser` called on timesteps, prediction "eps").
    """

    def __init__(
        self,
        inner_model: torch.nn.Module,
        prediction: Prediction,
        empty_chunk: torch.Tensor,
        total_steps: int,
        session: SamplingSession | None = None,
        job: JobInfo | None = None,
        should_interrupt: Callable[[], bool] = lambda: False,
        on_step: Callable[[int, int], None] | None = None,
        alphas_cumprod: torch.Tensor | None = None,
        sampler_steps: int | None = None,
        pass_name: str = "first",
    ) -> None:
        super().__init__()
        self.pass_name = pass_name
        self.inner_model = inner_model
        self.prediction: Prediction = prediction
        self.empty_chunk = empty_chunk  # (1, 77, D)
        self.total_steps = total_steps  # expected model calls (A1111: 2 × steps for second-order samplers)
        self.sampler_steps = sampler_steps  # the sampler's steps (None: one call per step)
        self.session = session
        self.job = job
        self.should_interrupt = should_interrupt
        self.on_step = on_step
        self.alphas_cumprod = alphas_cumprod
        self.step = 0
        self.padded_cond_uncond = False
        self.last_latent: torch.Tensor | None = None  # x0 of each image's first sub-prompt, for interrupts

    def get_pred_x0(self, x_in: torch.Tensor, x_out: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.prediction == "x0":
            return x_out
        # CFGDenoiserTimesteps: sigma holds the timesteps.
        a_t = self.alphas_cumprod.to(x_in.device)[sigma.to(dtype=torch.long)][:, None, None, None]
        return (x_in - (1 - a_t).sqrt() * x_out) / a_t.sqrt()

    def forward(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: MulticondBatch, uncond: torch.Tensor, cond_scale: float
    ) -> torch.Tensor:
        if self.should_interrupt():
            raise Interrupted
        conds_list, tensor = cond.conds_list, cond.tensor
        layout = cond.layout
        self.padded_cond_uncond = tensor.shape[1] != uncond.shape[1]
        if self.padded_cond_uncond:
            tensor, uncond = pad_cond_uncond(tensor, uncond, self.empty_chunk)
        x_in, sigma_in, cond_in = batch_cond_uncond(x, sigma, tensor, uncond, conds_list)

        if self.session is not None:
            self.session.begin_step(layout, self.step)
        x_out = self.inner_model(x_in, sigma_in, context=cond_in)

        step = DenoiseStep(
            x_in=x_in,
            x_out=x_out,
            sigma=sigma,
            layout=layout,
            cond_scale=float(cond_scale),
            step=self.step,
            total_steps=self.total_steps,
            prediction=self.prediction,
            pass_name=self.pass_name,
            uncond_skipped=False,
            job=self.job,
            **sampler_step_of(self.step, self.sampler_steps or self.total_steps, self.total_steps),
        )
        replaced = self.session.combine(step) if self.session is not None else None
        denoised = step.default_combine() if replaced is None else replaced

        first = [c[0][0] for c in conds_list]
        self.last_latent = self.get_pred_x0(x_in[first], x_out[first], sigma)
        self.step += 1
        if self.on_step is not None:
            self.on_step(self.step, self.total_steps)
        return denoised
