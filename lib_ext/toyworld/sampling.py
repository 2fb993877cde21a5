"""A1111's sampling semantics for any ε-model with DDPM's discrete timesteps (the toy model, or an SD UNet).

What A1111 v1.10.1 does, restated for a host without k-diffusion:
- k-diffusion samplers run on a denoiser D(x, σ) = x0 that wraps the ε-model like k-diffusion's `CompVisDenoiser`
  (`DiscreteEpsDDPMDenoiser`): σ_t = sqrt((1 − ᾱ_t)/ᾱ_t), the model sees x·c_in with c_in = 1/sqrt(σ² + 1) at the
  (fractional) timestep found by interpolating log σ, and x0 = x − σ·ε.
- sigma schedules: k-diffusion's own (`get_sigmas(n)`: timesteps evenly from 999 to 0, then a final 0) for Euler
  and Euler a; Karras (ρ = 7 between the model's σ_min and σ_max) for DPM++ 2M, which is that sampler's
  "Automatic" schedule in A1111.
- the initial noise per image comes from `torch.Generator().manual_seed(seed)` on the CPU (A1111's "CPU" RNG
  source), is scaled by σ_max, and every later random draw of a sampler (ancestral noise, Euler's churn noise)
  continues each image's own generator, so an image does not depend on its batch neighbours.
- DDIM (a timestep sampler) runs on the ε-model directly over the timesteps `range(0, 1000, 1000 // steps) + 1`,
  as A1111's `sd_samplers_timesteps_impl.ddim` does (including its use of the float64 ᾱ_prev and its last step
  landing on timestep 1, not 0).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

SEED_LIMIT = 2**32  # A1111 seeds: 0 <= seed < 2**32


# --------------------------------------------------------------------------------------------- seeds and noise
def fix_seed(seed: int | str | None) -> int:
    """A1111's seed field: −1, None or "" draw a random seed; anything else must be an integer in [0, 2**32)."""
    if seed is None or seed == "":
        seed = -1
    seed = int(seed)
    if seed == -1:
        # A1111 draws from random.randrange(4294967294) (Python's RNG, not torch's).
        return random.randrange(SEED_LIMIT - 2)
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be -1 or in [0, 2**32), got {seed}")
    return seed


def batch_seeds(seed: int, n: int) -> list[int]:
    """Seeds of a batch: seed, seed + 1, ... (A1111's all_seeds without subseeds)."""
    return [seed + i for i in range(n)]


class ImageRNG:
    """Per-image CPU generators, as A1111's `rng.ImageRNG` with the CPU source and no subseed/resize.

    The first `next()` is the initial noise (one draw per image from its freshly seeded generator); later calls
    continue the same generators, which is where A1111's hijacked `randn_like` takes sampler noise from. A non-zero
    `eta_noise_seed_delta` (A1111's ENSD setting) reseeds them with seed + delta after the initial noise.
    """

    def __init__(
        self,
        shape: Sequence[int],
        seeds: Sequence[int],
        device: torch.device | str = "cpu",
        eta_noise_seed_delta: int = 0,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)  # per image, e.g. (3, 32, 32)
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self.eta_noise_seed_delta = int(eta_noise_seed_delta)
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]
        self.is_first = True

    def next(self) -> torch.Tensor:
        xs = [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self.generators]
        if self.is_first:
            self.is_first = False
            if self.eta_noise_seed_delta:
                self.generators = [
                    torch.Generator("cpu").manual_seed(s + self.eta_noise_seed_delta) for s in self.seeds
                ]
        return torch.stack(xs).to(self.device)

    def noise_sampler(self) -> Callable[[Any, Any], torch.Tensor]:
        """A k-diffusion noise sampler `(sigma, sigma_next) -> noise` drawing from the image generators."""
        return lambda sigma, sigma_next: self.next()


def _global_noise_sampler(x: torch.Tensor) -> Callable[[Any, Any], torch.Tensor]:
    # k-diffusion's default: torch's global RNG. A host passes ImageRNG.noise_sampler() instead.
    return lambda sigma, sigma_next: torch.randn_like(x)


# ------------------------------------------------------------------------------------------ the σ-denoiser
def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def _append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape(v.shape + (1,) * (ndim - v.dim()))


class DiscreteEpsDenoiser(torch.nn.Module):
    """x0-denoiser D(x, σ) around an ε-model `model_fn(x, t, **cond)` trained on discrete timesteps 0..n−1.

    Equivalent to k-diffusion's `CompVisDenoiser` (a `DiscreteSchedule` + `DiscreteEpsDDPMDenoiser`) with
    `quantize=False`, A1111's default: the model gets fractional timesteps.
    """

    def __init__(self, model_fn: Callable[..., torch.Tensor], alphas_cumprod: torch.Tensor, quantize: bool = False):
        super().__init__()
        self.model_fn = model_fn
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float32)
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        sigmas = ((1 - ac) / ac) ** 0.5
        self.register_buffer("sigmas", sigmas, persistent=False)  # ascending in t
        self.register_buffer("log_sigmas", sigmas.log(), persistent=False)
        self.quantize = quantize
        self.sigma_data = 1.0

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def get_sigmas(self, n: int | None = None) -> torch.Tensor:
        """n sigmas from σ_max down, evenly spaced in timestep (fractional t, log-σ interpolated), then 0."""
        if n is None:
            return append_zero(self.sigmas.flip(0))
        t_max = len(self.sigmas) - 1
        t = torch.linspace(t_max, 0, n, device=self.sigmas.device)
        return append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma: torch.Tensor, quantize: bool | None = None) -> torch.Tensor:
        """Fractional timestep: linear interpolation in log σ between the two neighbouring discrete levels."""
        quantize = self.quantize if quantize is None else quantize
        sigma = torch.as_tensor(sigma, dtype=self.log_sigmas.dtype, device=self.log_sigmas.device)
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]  # (n_levels, numel)
        if quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape)
        # The last level at or below log σ (clamped so that a high neighbour exists).
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma.reshape(-1)) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.log_sigmas.device).float()
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp()

    def get_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c_out = -sigma
        c_in = 1 / (sigma**2 + self.sigma_data**2) ** 0.5
        return c_out, c_in

    def get_eps(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        return self.model_fn(x, t, **cond)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        """x0 = x − σ·ε(x·c_in, t(σ)); sigma has one entry per row of x."""
        c_out, c_in = (_append_dims(s, x.dim()) for s in self.get_scalings(sigma))
        eps = self.get_eps(x * c_in, self.sigma_to_t(sigma), **cond)
        return x + eps * c_out


class DiscreteVDenoiser(DiscreteEpsDenoiser):
    """x0-denoiser around a v-model (ldm's parameterization "v"): k-diffusion's `CompVisVDenoiser`, as A1111 wraps
    such checkpoints. x0 = c_skip·x + c_out·v(x·c_in, t)."""

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        s = _append_dims(sigma, x.dim())
        d2 = self.sigma_data**2
        c_skip = d2 / (s**2 + d2)
        c_out = -s * self.sigma_data / (s**2 + d2) ** 0.5
        c_in = 1 / (s**2 + d2) ** 0.5
        return self.get_eps(x * c_in, self.sigma_to_t(sigma), **cond) * c_out + x * c_skip


class TimestepsEpsDenoiser(torch.nn.Module):
    """The ε-model called on integer timesteps, as A1111's `CompVisTimestepsDenoiser` for DDIM/PLMS/UniPC; a v-model
    (`prediction="v"`) gets A1111's `CompVisTimestepsVDenoiser` conversion ε = √ᾱ·v + √(1−ᾱ)·x."""

    def __init__(self, model_fn: Callable[..., torch.Tensor], alphas_cumprod: torch.Tensor, prediction: str = "eps"):
        super().__init__()
        self.model_fn = model_fn
        self.prediction = prediction
        self.register_buffer("alphas_cumprod", torch.as_tensor(alphas_cumprod, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, **cond: Any) -> torch.Tensor:
        out = self.model_fn(x, timesteps, **cond)
        if self.prediction != "v":
            return out
        ac = _append_dims(self.alphas_cumprod[timesteps.long()].to(x.dtype), x.dim())
        return ac.sqrt() * out + (1 - ac).sqrt() * x


# ------------------------------------------------------------------------------------------- schedules
def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: Any = "cpu"):
    """Karras et al. (2022): n sigmas evenly spaced in σ^(1/ρ) from σ_max to σ_min, then 0."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return append_zero(sigmas).to(device)


def ddim_timesteps(steps: int, n_timesteps: int = 1000) -> torch.Tensor:
    """A1111's timestep-sampler schedule: 0, k, 2k, ... (k = n // steps), each + 1, clipped to [0, n − 1]."""
    return torch.clip(torch.arange(0, n_timesteps, n_timesteps // steps) + 1, 0, n_timesteps - 1)


# --------------------------------------------------------------------------------------------- samplers
def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE's derivative dx/dσ = (x − x0)/σ."""
    return (x - denoised) / _append_dims(torch.as_tensor(sigma, dtype=x.dtype, device=x.device), x.dim())


def get_ancestral_step(sigma_from, sigma_to, eta: float = 1.0):
    """(σ_down, σ_up) of an ancestral step: go deterministically to σ_down, then add σ_up of fresh noise, so that
    σ_down² + σ_up² = σ_to². eta = 0 is the deterministic step; σ_up never exceeds σ_to."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _steps(n: int, disable: bool | None) -> range:
    del disable  # k-diffusion's progress-bar switch; progress here goes through `callback`
    return range(n)


@torch.no_grad()
def sample_euler(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    s_churn=0.0,
    s_tmin=0.0,
    s_tmax=float("inf"),
    s_noise=1.0,
    noise_sampler=None,
):
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2; churn 0 = plain Euler).

    Like k-diffusion under A1111, one noise tensor is drawn per step even when churn is off, so that the image
    generators advance identically whatever the churn.
    """
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _global_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in _steps(len(sigmas) - 1, disable):
        churn_ok = s_tmin <= sigmas[i] <= s_tmax
        gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if churn_ok else 0.0
        eps = noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0, noise_sampler=None
):
    """Euler a: an Euler step down to σ_down, then fresh noise of size σ_up (none after the last step)."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = _global_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in _steps(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        d = to_d(x, sigmas[i], denoised)
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Heun's method (Karras et al. 2022, Algorithm 1 without churn): an Euler step, then the model again at the
    step's end and the average of the two slopes; the step to σ = 0 is a plain Euler step (one model call).
    So N steps call the model 2N − 1 times, as k-diffusion's sample_heun under A1111."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in _steps(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
            d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M): a second-order multistep solver in t = −log σ on the data prediction.

    The first step and a step to σ = 0 are first order (x ← (σ'/σ)·x − expm1(−h)·x0); the others replace x0 by
    the extrapolation (1 + 1/2r)·x0_i − (1/2r)·x0_{i−1}, with r the ratio of the previous to the current step in t.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])

    def sigma_fn(t):
        return t.neg().exp()

    def t_fn(sigma):
        return sigma.log().neg()

    old_denoised = None
    for i in _steps(len(sigmas) - 1, disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_ddim(
    model,
    x,
    timesteps,
    extra_args=None,
    callback=None,
    disable=None,
    eta=0.0,
    alphas_cumprod=None,
    noise_sampler=None,
):
    """DDIM over A1111's timesteps on an ε-returning model `model(x, t_vector, **extra_args)`.

    Runs len(timesteps) − 1 model calls from the last timestep down; step `index` goes from ᾱ[timesteps[index]]
    to ᾱ[timesteps[index − 1]] (so the result sits at timestep timesteps[0] = 1, as in A1111). x starts as plain
    unit noise (not scaled by σ). A noise tensor is drawn every step (scaled by 0 when eta = 0), as in A1111.
    """
    if alphas_cumprod is None:
        alphas_cumprod = model.alphas_cumprod
    alphas_cumprod = torch.as_tensor(alphas_cumprod)
    timesteps = torch.as_tensor(timesteps, dtype=torch.long)
    noise_sampler = _global_noise_sampler(x) if noise_sampler is None else noise_sampler
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    a_cpu, ap_cpu = alphas.double().cpu(), alphas_prev.cpu()
    sigmas = eta * torch.sqrt((1 - ap_cpu) / (1 - a_cpu) * (1 - a_cpu / ap_cpu))

    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones(x.shape[0])
    s_x = x.new_ones((x.shape[0], 1, 1, 1))
    for i in _steps(len(timesteps) - 1, disable):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        a_t = alphas[index].item() * s_x
        a_prev = alphas_prev[index].item() * s_x
        sigma_t = sigmas[index].item() * s_x
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
        noise = sigma_t * noise_sampler(None, None)
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


# ------------------------------------------------------------------------------------ the sampler table
@dataclass(frozen=True)
class SamplerInfo:
    name: str  # A1111's label
    func: Callable[..., torch.Tensor]
    scheduler: str | None  # A1111's "Automatic" schedule: None = the denoiser's own get_sigmas, or "karras"
    timesteps: bool = False  # a timestep sampler (model returns ε on integer timesteps)
    ancestral: bool = False  # takes eta/s_noise/noise_sampler
    second_order: bool = False  # two model calls per step (A1111's SamplerData option: total_steps = 2 × steps)

    def model_calls(self, steps: int) -> int:
        """A1111's `SamplerData.total_steps`: the expected model calls (the denoiser's `total_steps`)."""
        return steps * 2 if self.second_order else steps


SAMPLERS: dict[str, SamplerInfo] = {
    "Euler": SamplerInfo("Euler", sample_euler, None),
    "Euler a": SamplerInfo("Euler a", sample_euler_ancestral, None, ancestral=True),
    "DPM++ 2M": SamplerInfo("DPM++ 2M", sample_dpmpp_2m, "karras"),
    "Heun": SamplerInfo("Heun", sample_heun, None, second_order=True),
    "DDIM": SamplerInfo("DDIM", sample_ddim, None, timesteps=True),
}


def sigmas_for(sampler: str, denoiser: DiscreteEpsDenoiser, steps: int, scheduler: str | None = None):
    """The sigmas A1111 uses for this sampler's "Automatic" schedule (or the named scheduler)."""
    info = SAMPLERS[sampler]
    scheduler = info.scheduler if scheduler is None else scheduler
    if scheduler in (None, "uniform", "automatic"):
        return denoiser.get_sigmas(steps).cpu()
    if scheduler == "karras":
        return get_sigmas_karras(steps, denoiser.sigma_min.item(), denoiser.sigma_max.item())
    raise ValueError(f"unknown scheduler {scheduler!r}")


def sample(
    sampler: str,
    cfg_model: Callable[..., torch.Tensor],
    rng: ImageRNG,
    steps: int,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    alphas_cumprod: torch.Tensor | None = None,
    sigma_denoiser: DiscreteEpsDenoiser | None = None,
    eta: float | None = None,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """One txt2img sampling run as A1111's KDiffusionSampler / CompVisSampler `.sample` performs it.

    `cfg_model` is the CFG-wrapped model the sampler calls: for k-diffusion samplers `(x, sigma, **extra_args)`
    returning x0 (built on `sigma_denoiser`, whose schedule is used), for DDIM `(x, t, **extra_args)` returning ε
    (with `alphas_cumprod`). `rng` holds the batch's seeds; its first draw is the initial noise.
    """
    info = SAMPLERS[sampler]
    noise = rng.next()
    if info.timesteps:
        if alphas_cumprod is None:
            raise ValueError("a timestep sampler needs alphas_cumprod")
        return info.func(
            cfg_model,
            noise,
            ddim_timesteps(steps, len(alphas_cumprod)),
            extra_args=extra_args,
            callback=callback,
            eta=0.0 if eta is None else eta,
            alphas_cumprod=alphas_cumprod,
            noise_sampler=rng.noise_sampler(),
        )
    if sigma_denoiser is None:
        raise ValueError("a k-diffusion sampler needs the sigma denoiser for its schedule")
    sigmas = sigmas_for(sampler, sigma_denoiser, steps).to(noise.device)
    x = noise * sigmas[0]
    kwargs: dict[str, Any] = {}
    if info.ancestral:
        kwargs = {"eta": 1.0 if eta is None else eta, "s_noise": s_noise, "noise_sampler": rng.noise_sampler()}
    elif info.func is sample_euler:
        kwargs = {"noise_sampler": rng.noise_sampler()}
    return info.func(cfg_model, x, sigmas, extra_args=extra_args, callback=callback, **kwargs)


def sample_img2img(
    sampler: str,
    cfg_model: Callable[..., torch.Tensor],
    rng: ImageRNG,
    steps: int,
    init: torch.Tensor,
    denoising_strength: float,
    sigma_denoiser: DiscreteEpsDenoiser,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> torch.Tensor:
    """A1111's `KDiffusionSampler.sample_img2img` with a step count given (the hires pass): the schedule of
    int(steps / strength) steps, its last `steps` (`setup_img2img_steps`), started from init + noise·σ."""
    info = SAMPLERS[sampler]
    if info.timesteps:
        raise ValueError(f"the toy host has no img2img path for {sampler}; use a k-diffusion sampler")
    total = int(steps / min(denoising_strength, 0.999)) if denoising_strength > 0 else 0
    t_enc = steps - 1
    sigmas = sigmas_for(sampler, sigma_denoiser, total).to(init.device)
    schedule = sigmas[total - t_enc - 1 :]
    x = init + rng.next() * schedule[0]
    kwargs: dict[str, Any] = {}
    if info.ancestral:
        kwargs = {"eta": 1.0, "s_noise": 1.0, "noise_sampler": rng.noise_sampler()}
    elif info.func is sample_euler:
        kwargs = {"noise_sampler": rng.noise_sampler()}
    return info.func(cfg_model, x, schedule, extra_args=extra_args, callback=callback, **kwargs)
