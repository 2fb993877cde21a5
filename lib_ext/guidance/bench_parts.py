"""Timing pieces for `python -m bench semantic_guidance`, on SD1.5-shaped latents (B, 4, 64, 64).

- `quantile_vs_kthvalue`: the SEGA per-channel threshold done the reference way (torch.quantile) and ours
  (kthvalue on a (B·C, H·W) view); both must keep the same entries.
- `time_combine`: one guidance combine step for a batch, as the host would call it.
- `combine_overhead_ratio`: that time over the time of one UNet forward of the same batch (measured by the caller).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from .combine import combine
from .ops import channel_quantile_filter
from .parser import parse_root
from .settings import GuidanceSettings
from .state import GuidanceState
from .step import GuidanceStep
from .tree import flatten_leaves

SD15_LATENT = (4, 64, 64)
DEFAULT_PROMPT = "a photo of a castle AND_TOPK snowy :0.5"


def _median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def reference_quantile_filter(psi: torch.Tensor, q: float) -> torch.Tensor:
    """SEGA's reference threshold: torch.quantile over H·W per sample and channel (float32 only, < 2^24 values)."""
    tau = torch.quantile(psi.abs().flatten(start_dim=2).float(), q, dim=2).to(psi.dtype)
    return torch.where(psi.abs() >= tau[:, :, None, None], psi, torch.zeros_like(psi))


def quantile_vs_kthvalue(
    batch: int = 2, q: float = 0.9, repeats: int = 20, latent: tuple[int, int, int] = SD15_LATENT, seed: int = 0
) -> dict[str, float | bool]:
    psi = torch.randn((batch, *latent), generator=torch.Generator().manual_seed(seed))
    same = bool(torch.equal(reference_quantile_filter(psi, q), channel_quantile_filter(psi, q)))
    t_quantile = _median_seconds(lambda: reference_quantile_filter(psi, q), repeats)
    t_kth = _median_seconds(lambda: channel_quantile_filter(psi, q), repeats)
    return {
        "quantile_ms": t_quantile * 1e3,
        "kthvalue_ms": t_kth * 1e3,
        "quantile_vs_kthvalue_ratio": t_quantile / t_kth,
        "same_entries_kept": same,
    }


def sd15_step(
    prompts: list[str], prediction: str = "x0", seed: int = 0, step: int = 5, total_steps: int = 20
) -> tuple[GuidanceStep, list]:
    """A host-shaped step: one cond row per leaf of each image, then one uncond row per image, random outputs."""
    trees = [parse_root(p) for p in prompts]
    conds_list, n = [], 0
    for tree in trees:
        leaves = flatten_leaves(tree)
        conds_list.append([(n + j, leaf.weight) for j, leaf in enumerate(leaves)])
        n += len(leaves)
    g = torch.Generator().manual_seed(seed)
    rows = n + len(trees)
    x_out = torch.randn((rows, *SD15_LATENT), generator=g)
    x_in = torch.randn((rows, *SD15_LATENT), generator=g) * 5
    sigma = torch.full((len(trees),), 5.0)
    return GuidanceStep(x_out, x_in, sigma, conds_list, 7.0, step, total_steps, prediction), trees  # type: ignore[arg-type]


def time_combine(
    batch: int = 1, prompt: str = DEFAULT_PROMPT, mode: str = "sega", repeats: int = 20, cfg_rescale: float = 0.0
) -> float:
    """Median seconds of one combine call for `batch` images of `prompt` (SD1.5 latents)."""
    step, trees = sd15_step([prompt] * batch)
    settings = GuidanceSettings(mode=mode, cfg_rescale=cfg_rescale)  # type: ignore[arg-type]
    state = GuidanceState()
    return _median_seconds(lambda: combine(step, trees, settings, state), repeats)


def combine_overhead_ratio(unet_forward_seconds: float, batch: int = 1, prompt: str = DEFAULT_PROMPT,
                           mode: str = "sega", repeats: int = 20) -> float:  # fmt: skip
    """Our combine step's time over one UNet forward of the same batch (the caller times the UNet)."""
    return time_combine(batch, prompt, mode, repeats) / unet_forward_seconds
