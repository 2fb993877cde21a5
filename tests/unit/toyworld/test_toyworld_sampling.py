"""Sampler semantics against numbers computed here by hand from the update formulas (A1111 / k-diffusion)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from lib_ext.toyworld import sampling as S
from lib_ext.toyworld.cfg import CFGDenoiser, cfg_denoise, combine_denoised
from lib_ext.toyworld.schedule import alphas_cumprod

AC = alphas_cumprod()
SIG = [math.sqrt((1 - a) / a) for a in AC.double().tolist()]  # float64 reference from the float32 ᾱ


def _gauss_eps(denoiser: S.DiscreteEpsDenoiser):
    """ε-model that is exact for data x0 ~ N(0, 1): ε(x_in, t) = x_in·σ/sqrt(1 + σ²), so D(x, σ) = x/(1 + σ²)."""

    def eps(x_in, t, **_):
        sigma = denoiser.t_to_sigma(t).to(x_in.dtype)
        return x_in * (sigma / (1 + sigma**2) ** 0.5).view(-1, *([1] * (x_in.dim() - 1)))

    return eps


def _gauss_denoiser(ac: torch.Tensor = AC) -> S.DiscreteEpsDenoiser:
    den = S.DiscreteEpsDenoiser(None, ac)
    den.model_fn = _gauss_eps(den)
    return den


class _X0Model:
    """An x0-model D(x, σ) = a·x + b that records its calls."""

    def __init__(self, a: float = 0.5, b: float = 0.0):
        self.a, self.b, self.calls = a, b, []

    def __call__(self, x, sigma, **kw):
        self.calls.append((x.clone(), sigma.clone(), kw))
        return self.a * x + self.b


# ------------------------------------------------------------------------------------------ schedule


def test_sigmas_from_alphas_cumprod_and_the_default_schedule_endpoints():
    den = S.DiscreteEpsDenoiser(lambda x, t: x, AC)
    assert den.sigma_min.item() == pytest.approx(SIG[0], rel=1e-5)
    assert den.sigma_max.item() == pytest.approx(SIG[999], rel=1e-5)
    sig = den.get_sigmas(20)
    assert sig.shape == (21,)
    assert sig[0].item() == pytest.approx(SIG[999], rel=1e-5)
    assert sig[-2].item() == pytest.approx(SIG[0], rel=1e-5)
    assert sig[-1].item() == 0.0
    assert bool((sig[:-1][1:] < sig[:-1][:-1]).all())
    # n = 3: t = 999, 499.5, 0; the middle sigma interpolates log σ halfway between t = 499 and t = 500.
    mid = den.get_sigmas(3)[1].item()
    assert mid == pytest.approx(math.exp(0.5 * (math.log(SIG[499]) + math.log(SIG[500]))), rel=1e-5)
    # n = None: every discrete level, descending, then 0.
    full = den.get_sigmas()
    assert full.shape == (1001,) and full[0] == den.sigmas[-1] and full[-2] == den.sigmas[0]


def test_sigma_to_t_interpolates_log_sigma_and_clamps():
    den = S.DiscreteEpsDenoiser(lambda x, t: x, AC)
    levels = torch.tensor([0, 1, 250, 998, 999])
    assert torch.allclose(den.sigma_to_t(den.sigmas[levels]), levels.float(), atol=1e-3)
    geo = math.exp(0.25 * math.log(SIG[100]) + 0.75 * math.log(SIG[101]))
    assert den.sigma_to_t(torch.tensor(geo)).item() == pytest.approx(100.75, abs=1e-3)
    assert den.sigma_to_t(torch.tensor(SIG[999] * 3)).item() == pytest.approx(999.0)
    assert den.sigma_to_t(torch.tensor(SIG[0] / 3)).item() == pytest.approx(0.0)
    assert den.sigma_to_t(torch.tensor(geo), quantize=True).item() == 101
    t = torch.tensor([3.0, 10.5, 999.0])
    assert torch.allclose(den.sigma_to_t(den.t_to_sigma(t)), t, atol=1e-3)


def test_denoiser_scales_input_and_converts_eps_to_x0():
    seen = {}

    def model_fn(x_in, t, context=None):
        seen.update(x_in=x_in.clone(), t=t.clone(), context=context)
        return torch.full_like(x_in, 0.25)

    den = S.DiscreteEpsDenoiser(model_fn, AC)
    x = torch.arange(8.0).view(2, 1, 2, 2)
    sigma = torch.tensor([SIG[999], SIG[10]])
    out = den(x, sigma, context="ctx")
    assert seen["context"] == "ctx"
    assert torch.allclose(seen["t"], torch.tensor([999.0, 10.0]), atol=1e-3)
    for i in range(2):
        s = sigma[i].item()
        assert torch.allclose(seen["x_in"][i], x[i] / math.sqrt(s * s + 1))
        assert torch.allclose(out[i], x[i] - s * 0.25)


def test_karras_schedule_by_hand():
    sig = S.get_sigmas_karras(4, 0.1, 10.0, rho=7.0)
    lo, hi = 0.1 ** (1 / 7), 10.0 ** (1 / 7)
    expected = [(hi + r * (lo - hi)) ** 7 for r in (0, 1 / 3, 2 / 3, 1)] + [0.0]
    assert sig.tolist() == pytest.approx(expected, rel=1e-5)


def test_automatic_schedules_per_sampler():
    den = S.DiscreteEpsDenoiser(lambda x, t: x, AC)
    assert torch.equal(S.sigmas_for("Euler", den, 10), den.get_sigmas(10))
    assert torch.equal(S.sigmas_for("Euler a", den, 10), den.get_sigmas(10))
    karras = S.sigmas_for("DPM++ 2M", den, 10)
    assert torch.allclose(karras, S.get_sigmas_karras(10, den.sigma_min.item(), den.sigma_max.item()))
    with pytest.raises(ValueError):
        S.sigmas_for("Euler", den, 10, scheduler="nope")


def test_ddim_timesteps_as_a1111():
    assert S.ddim_timesteps(20).tolist() == [1 + 50 * k for k in range(20)]
    # 1000 // 3 = 333 leaves room for a 4th entry, 999 + 1 clipped to 999: A1111 then makes 3 model calls.
    assert S.ddim_timesteps(3).tolist() == [1, 334, 667, 999]
    assert S.ddim_timesteps(1000).tolist()[-1] == 999  # 999 + 1 clipped


# ------------------------------------------------------------------------------------------ samplers


def test_euler_steps_by_hand_on_a_linear_x0_model():
    model = _X0Model(a=0.5, b=0.1)
    sigmas = torch.tensor([4.0, 2.0, 0.5, 0.0])
    x0 = torch.tensor([[1.0, -2.0]])
    out = S.sample_euler(model, x0.clone(), sigmas, noise_sampler=lambda s, sn: torch.zeros(1, 2))
    x = [1.0, -2.0]
    for s, s_next in ((4.0, 2.0), (2.0, 0.5), (0.5, 0.0)):
        x = [xi + (xi - (0.5 * xi + 0.1)) / s * (s_next - s) for xi in x]
    assert out.tolist()[0] == pytest.approx(x, rel=1e-6)
    assert [c[1].tolist() for c in model.calls] == [[4.0], [2.0], [0.5]]


def test_euler_with_zero_eps_keeps_x_and_with_zero_x0_scales_by_sigma_ratio():
    sigmas = torch.tensor([8.0, 4.0, 1.0])
    x = torch.randn(2, 3)
    zeros = lambda s, sn: torch.zeros(2, 3)  # noqa: E731
    # eps = 0 ⇔ D(x) = x: nothing moves.
    assert torch.equal(S.sample_euler(_X0Model(1.0), x.clone(), sigmas, noise_sampler=zeros), x)
    # D(x) = 0: each step multiplies by σ_next/σ, so the result is x·σ_end/σ_start.
    out = S.sample_euler(_X0Model(0.0), x.clone(), sigmas, noise_sampler=zeros)
    assert torch.allclose(out, x * (1.0 / 8.0))


def test_euler_churn_adds_noise_by_hand_and_draws_every_step():
    draws = []

    def noise(s, sn):
        draws.append((float(s), float(sn)))
        return torch.ones(1, 1)

    sigmas = torch.tensor([2.0, 1.0, 0.0])
    S.sample_euler(_X0Model(0.0), torch.ones(1, 1), sigmas, noise_sampler=noise)
    assert draws == [(2.0, 1.0), (1.0, 0.0)]  # drawn even with churn off, as A1111's hijacked randn_like is
    model = _X0Model(0.0)
    out = S.sample_euler(model, torch.ones(1, 1), sigmas, s_churn=0.4, s_noise=0.5, noise_sampler=noise)
    gamma = min(0.4 / 2, 2**0.5 - 1)
    x = 1.0
    for s, s_next in ((2.0, 1.0), (1.0, 0.0)):
        s_hat = s * (gamma + 1)
        x = x + 0.5 * math.sqrt(s_hat**2 - s**2)
        x = x + (x - 0.0) / s_hat * (s_next - s_hat)
    assert out.item() == pytest.approx(x, rel=1e-6)
    assert [c[1].item() for c in model.calls] == pytest.approx([2.0 * (1 + gamma), 1.0 * (1 + gamma)])


def test_ancestral_step_split():
    down, up = S.get_ancestral_step(2.0, 1.0, eta=1.0)
    assert up == pytest.approx(math.sqrt(1.0 * (4.0 - 1.0) / 4.0))
    assert down**2 + up**2 == pytest.approx(1.0)
    assert S.get_ancestral_step(2.0, 1.0, eta=0.0) == (1.0, 0.0)
    assert S.get_ancestral_step(2.0, 0.0) == (0.0, 0.0)
    # eta large: σ_up is capped at σ_to, so σ_down = 0.
    assert S.get_ancestral_step(2.0, 1.0, eta=10.0) == (0.0, 1.0)


def test_euler_ancestral_by_hand_with_known_noise():
    noises = [torch.tensor([[0.3]]), torch.tensor([[-1.2]])]
    calls = []

    def noise(s, sn):
        calls.append((float(s), float(sn)))
        return noises[len(calls) - 1]

    sigmas = torch.tensor([3.0, 1.5, 0.4, 0.0])
    out = S.sample_euler_ancestral(_X0Model(0.5, 0.2), torch.tensor([[2.0]]), sigmas, noise_sampler=noise, s_noise=0.9)
    x, k = 2.0, 0
    for s, s_next in ((3.0, 1.5), (1.5, 0.4), (0.4, 0.0)):
        up = min(s_next, math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
        down = math.sqrt(s_next**2 - up**2)
        x = x + (x - (0.5 * x + 0.2)) / s * (down - s)
        if s_next > 0:
            x = x + noises[k].item() * 0.9 * up
            k += 1
    assert out.item() == pytest.approx(x, rel=1e-6)
    assert calls == [(3.0, 1.5), (1.5, pytest.approx(0.4))]  # no noise after the last step


def test_euler_ancestral_with_eta_zero_is_euler():
    sigmas = torch.tensor([3.0, 1.5, 0.4, 0.0])
    x = torch.randn(2, 4)
    big = lambda s, sn: torch.full_like(x, 1e6)  # noqa: E731  (scaled by σ_up = 0)
    a = S.sample_euler_ancestral(_X0Model(0.3), x.clone(), sigmas, eta=0.0, noise_sampler=big)
    b = S.sample_euler(_X0Model(0.3), x.clone(), sigmas, noise_sampler=big)
    assert torch.allclose(a, b)


def test_dpmpp_2m_by_hand():
    model = _X0Model(0.5, 0.1)
    sigmas = torch.tensor([5.0, 2.0, 0.7, 0.2, 0.0])
    out = S.sample_dpmpp_2m(model, torch.tensor([[1.5]]), sigmas)
    sig = sigmas.tolist()
    x, old = 1.5, None
    for i in range(4):
        den = 0.5 * x + 0.1
        t, t_next = -math.log(sig[i]), (-math.log(sig[i + 1]) if sig[i + 1] > 0 else math.inf)
        h = t_next - t
        ratio = sig[i + 1] / sig[i]
        if old is None or sig[i + 1] == 0:
            x = ratio * x - math.expm1(-h) * den
        else:
            r = (t - (-math.log(sig[i - 1]))) / h
            x = ratio * x - math.expm1(-h) * ((1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old)
        old = den
    assert out.item() == pytest.approx(x, rel=1e-5)


def test_euler_is_first_order_and_dpmpp_2m_second_order_on_the_exact_ode():
    """For x0 ~ N(0,1) the probability-flow ODE is x(σ) ∝ sqrt(1 + σ²): x(0) = x_T / sqrt(1 + σ_T²).

    Quadrupling the steps divides Euler's error by about 4 and DPM++ 2M's by about 16 or more. A fixed schedule
    (DDPM's linear β) keeps this about the samplers, not about the toy model's schedule of the day.
    """
    linear_ac = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()
    den = _gauss_denoiser(linear_ac)
    noise = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    zeros = lambda s, sn: torch.zeros_like(noise)  # noqa: E731

    def errors(n):
        sig = S.get_sigmas_karras(n, den.sigma_min.item(), den.sigma_max.item())
        x_t = noise * sig[0]
        exact = x_t / math.sqrt(1 + sig[0].item() ** 2)
        e1 = (S.sample_euler(den, x_t.clone(), sig, noise_sampler=zeros) - exact).abs().max().item()
        e2 = (S.sample_dpmpp_2m(den, x_t.clone(), sig) - exact).abs().max().item()
        return e1, e2

    (euler_a, dpm_a), (euler_b, dpm_b) = errors(12), errors(48)
    assert 3.0 < euler_a / euler_b < 5.0
    assert dpm_a / dpm_b > 12.0
    assert dpm_b < euler_b / 5


def test_ddim_by_hand_on_the_gaussian_eps_model():
    # ε(x_t, t) = x_t·sqrt(1 − ᾱ_t) is exact for x0 ~ N(0, 1) with x_t = sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε.
    seen = []

    def model(x, t, **_):
        seen.append(t.tolist())
        a = AC[t.long()].view(-1, 1)
        return x * (1 - a).sqrt()

    ts = S.ddim_timesteps(5)
    x = torch.tensor([[0.7], [-1.1]])
    out = S.sample_ddim(model, x.clone(), ts, alphas_cumprod=AC, noise_sampler=lambda s, sn: torch.ones(2, 1))
    assert seen == [[801.0, 801.0], [601.0, 601.0], [401.0, 401.0], [201.0, 201.0]]
    ac = AC.double().tolist()
    v = x.double().clone()
    for index in (4, 3, 2, 1):
        a, a_prev = float(AC[ts[index]]), ac[ts[index - 1]]
        eps = v * math.sqrt(1 - a)
        pred_x0 = (v - math.sqrt(1 - a) * eps) / math.sqrt(a)
        v = math.sqrt(a_prev) * pred_x0 + math.sqrt(1 - a_prev) * eps
    assert torch.allclose(out.double(), v, rtol=1e-5)


def test_ddim_with_eta_adds_the_drawn_noise():
    ts = S.ddim_timesteps(4)
    x = torch.zeros(1, 1)
    draws = []

    def noise(s, sn):
        draws.append(1)
        return torch.ones(1, 1)

    out0 = S.sample_ddim(lambda x, t: torch.zeros_like(x), x.clone(), ts, alphas_cumprod=AC, noise_sampler=noise)
    assert len(draws) == 3 and out0.item() == 0.0  # drawn but scaled by 0 at eta 0
    out1 = S.sample_ddim(
        lambda x, t: torch.zeros_like(x), x.clone(), ts, alphas_cumprod=AC, eta=1.0, noise_sampler=noise
    )
    ac = AC.double().tolist()
    v = 0.0
    for index in (3, 2, 1):
        a, a_prev = float(AC[ts[index]]), ac[ts[index - 1]]
        sigma_t = math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        v = math.sqrt(a_prev) * (v / math.sqrt(a)) + sigma_t * 1.0
    assert out1.item() == pytest.approx(v, rel=1e-5)


# ------------------------------------------------------------------------------------------ seeds


def test_fix_seed_semantics(monkeypatch):
    assert S.fix_seed(0) == 0 and S.fix_seed(2**32 - 1) == 2**32 - 1 and S.fix_seed("12") == 12
    for bad in (2**32, -2, -100):
        with pytest.raises(ValueError):
            S.fix_seed(bad)
    random.seed(1)
    drawn = {S.fix_seed(-1) for _ in range(20)} | {S.fix_seed(None), S.fix_seed("")}
    assert all(0 <= s < 2**32 for s in drawn) and len(drawn) > 15
    monkeypatch.setattr(random, "randrange", lambda n: n - 1)
    assert S.fix_seed(-1) == 4294967293  # A1111: random.randrange(4294967294)
    assert S.batch_seeds(41, 3) == [41, 42, 43]


def test_image_rng_is_torch_cpu_generator_per_image_and_continues():
    shape = (3, 4, 4)
    rng = S.ImageRNG(shape, [5, 6])
    first, second = rng.next(), rng.next()
    g5, g6 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)
    assert torch.equal(first[0], torch.randn(shape, generator=g5))
    assert torch.equal(first[1], torch.randn(shape, generator=g6))
    assert torch.equal(second[0], torch.randn(shape, generator=g5))  # the same generator continues
    solo = S.ImageRNG(shape, [6])
    assert torch.equal(solo.next()[0], first[1])  # an image does not depend on its batch neighbours
    assert first.dtype == torch.float32


def test_image_rng_eta_noise_seed_delta_reseeds_after_the_initial_noise():
    rng = S.ImageRNG((2, 2), [10], eta_noise_seed_delta=31337)
    first, second = rng.next(), rng.next()
    assert torch.equal(first[0], torch.randn((2, 2), generator=torch.Generator().manual_seed(10)))
    assert torch.equal(second[0], torch.randn((2, 2), generator=torch.Generator().manual_seed(10 + 31337)))


@pytest.mark.parametrize("name", ["Euler", "Euler a", "DPM++ 2M", "DDIM"])
def test_sample_is_deterministic_per_seed_and_batch_independent(name):
    info = S.SAMPLERS[name]
    den = _gauss_denoiser()
    if info.timesteps:
        ts_den = S.TimestepsEpsDenoiser(lambda x, t, **_: x * (1 - AC[t.long()]).sqrt().view(-1, 1, 1, 1), AC)
        model, kw = ts_den, {"alphas_cumprod": AC}
    else:
        model, kw = den, {"sigma_denoiser": den}

    def run(seeds):
        return S.sample(name, model, S.ImageRNG((1, 4, 4), seeds), steps=8, **kw)

    a, b = run([100, 101]), run([100, 101])
    assert torch.equal(a, b)
    assert torch.allclose(run([101])[0], a[1], atol=1e-6)
    assert not torch.allclose(run([102])[0], a[1])


def test_sample_starts_from_noise_times_sigma_max_and_uses_the_sampler_schedule():
    den = _gauss_denoiser()
    seen = []
    S.sample("DPM++ 2M", den, S.ImageRNG((1, 2, 2), [9]), steps=6, sigma_denoiser=den, callback=seen.append)
    karras = S.get_sigmas_karras(6, den.sigma_min.item(), den.sigma_max.item())
    noise = torch.randn((1, 2, 2), generator=torch.Generator().manual_seed(9))
    assert torch.allclose(seen[0]["x"][0], noise * karras[0])
    assert [float(d["sigma"]) for d in seen] == pytest.approx(karras[:-1].tolist())


def test_euler_a_noise_comes_from_the_image_generators():
    den = _gauss_denoiser()
    a = S.sample("Euler a", den, S.ImageRNG((1, 2, 2), [3]), steps=5, sigma_denoiser=den)
    torch.manual_seed(0)  # the global RNG is not used
    b = S.sample("Euler a", den, S.ImageRNG((1, 2, 2), [3]), steps=5, sigma_denoiser=den)
    torch.manual_seed(1)
    c = S.sample("Euler a", den, S.ImageRNG((1, 2, 2), [3]), steps=5, sigma_denoiser=den)
    assert torch.equal(a, b) and torch.equal(b, c)
    euler = S.sample("Euler", den, S.ImageRNG((1, 2, 2), [3]), steps=5, sigma_denoiser=den)
    assert not torch.allclose(a, euler)


# ------------------------------------------------------------------------------------------ CFG


class _RecordingDenoiser:
    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, context):
        self.calls.append((x.clone(), sigma.clone(), context.clone()))
        # Row r's output is its context's first value: lets the test tell rows apart.
        return context[:, :1, :1].view(-1, 1, 1, 1).expand_as(x) + 0 * x


def test_cfg_batches_cond_rows_then_uncond_and_combines_as_a1111():
    den = _RecordingDenoiser()
    x = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 2.0)])
    sigma = torch.tensor([7.0, 7.0])
    cond = torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1).expand(3, 4, 5)
    uncond = torch.tensor([1.0, 2.0]).view(2, 1, 1).expand(2, 4, 5)
    conds = [[(0, 1.0), (1, 0.5)], [(2, 1.0)]]  # image 0: "A AND B :0.5", image 1: one prompt
    out = cfg_denoise(den, x, sigma, cond, uncond, 3.0, conds)
    x_in, sigma_in, ctx = den.calls[0]
    assert [row[0, 0, 0].item() for row in x_in] == [1.0, 1.0, 2.0, 1.0, 2.0]
    assert sigma_in.tolist() == [7.0] * 5
    assert ctx[:, 0, 0].tolist() == [10.0, 20.0, 30.0, 1.0, 2.0]
    assert out[0, 0, 0, 0].item() == pytest.approx(1.0 + 3.0 * (1.0 * (10 - 1) + 0.5 * (20 - 1)))
    assert out[1, 0, 0, 0].item() == pytest.approx(2.0 + 3.0 * (30 - 2))


def test_cfg_scale_one_is_the_cond_prediction_and_wrapper_passes_extra_args():
    den = _RecordingDenoiser()
    x = torch.zeros(2, 1, 2, 2)
    cond = torch.tensor([5.0, 6.0]).view(2, 1, 1).expand(2, 3, 3)
    uncond = torch.zeros(2, 3, 3)
    wrapper = CFGDenoiser(den)
    out = wrapper(x, torch.tensor(2.0), cond=cond, uncond=uncond, cond_scale=1.0)
    assert out[:, 0, 0, 0].tolist() == [5.0, 6.0]
    assert den.calls[0][1].tolist() == [2.0] * 4  # scalar sigma expanded per row
    with pytest.raises(ValueError):
        cfg_denoise(den, x, torch.tensor([1.0, 1.0]), cond[:1], uncond, 7.0)
    out0 = combine_denoised(torch.tensor([[4.0], [1.0]]), [[(0, 1.0)]], 1, 0.0)
    assert out0.tolist() == [[1.0]]


def test_real_toy_unet_through_cfg_and_samplers_is_seed_deterministic(one_thread):
    from lib_ext.toyworld.model import ToyConfig, ToyTextEncoder, ToyUNet
    from lib_ext.toyworld.tokenizer import ToyTokenizer

    torch.manual_seed(0)
    tok = ToyTokenizer()
    cfg = ToyConfig(
        vocab_size=tok.vocab_size,
        text_dim=16,
        channels=(8, 16, 16),
        attn_heads=(1, 2, 2),
        time_dim=32,
        groups=4,
        image_size=16,
    )
    te, unet = ToyTextEncoder(cfg).eval(), ToyUNet(cfg).eval()
    with torch.no_grad():
        cond = te(torch.tensor([tok("a red circle"), tok("a blue square")]))
        uncond = te(torch.tensor([tok("")] * 2))
    den = S.DiscreteEpsDenoiser(unet, AC)
    model = CFGDenoiser(den)
    extra = {"cond": cond, "uncond": uncond, "cond_scale": 5.0}
    for name in ("Euler", "Euler a", "DPM++ 2M"):
        a = S.sample(name, model, S.ImageRNG((3, 16, 16), [7, 8]), 4, extra_args=extra, sigma_denoiser=den)
        b = S.sample(name, model, S.ImageRNG((3, 16, 16), [7, 8]), 4, extra_args=extra, sigma_denoiser=den)
        assert torch.equal(a, b) and torch.isfinite(a).all()
        solo_extra = {"cond": cond[1:], "uncond": uncond[1:], "cond_scale": 5.0}
        solo = S.sample(name, model, S.ImageRNG((3, 16, 16), [8]), 4, extra_args=solo_extra, sigma_denoiser=den)
        assert torch.allclose(solo[0], a[1], atol=1e-4)
    ts_model = CFGDenoiser(S.TimestepsEpsDenoiser(unet, AC))
    d = S.sample(
        "DDIM",
        ts_model,
        S.ImageRNG((3, 16, 16), [7]),
        4,
        extra_args=dict(extra, cond=cond[:1], uncond=uncond[:1]),
        alphas_cumprod=AC,
    )
    assert d.shape == (1, 3, 16, 16) and torch.isfinite(d).all()


@pytest.mark.parametrize("name", ["Euler", "Euler a", "DPM++ 2M", "DDIM"])
def test_an_oracle_eps_model_is_sampled_back_to_its_image(name):
    """ε-model that knows the clean image x0: ε = (x_t − sqrt(ᾱ)·x0)/sqrt(1 − ᾱ) at (fractional) t. Every sampler
    must land on x0 (DDIM on timestep 1, as A1111's, so within sqrt(1 − ᾱ_1) of it)."""
    x0 = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    den = S.DiscreteEpsDenoiser(None, AC)

    def oracle(x_t, t, **_):
        sigma = den.t_to_sigma(t).view(-1, 1, 1, 1)
        a = 1 / (1 + sigma**2)  # ᾱ at fractional t, consistent with log-σ interpolation
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    den.model_fn = oracle
    rng = S.ImageRNG((3, 8, 8), [1, 2])
    if name == "DDIM":
        noise = S.ImageRNG((3, 8, 8), [1, 2]).next()
        out = S.sample(name, S.TimestepsEpsDenoiser(oracle, AC), rng, 10, alphas_cumprod=AC)
        # Deterministic DDIM keeps the ε implied by the start: x = sqrt(ᾱ_1)·x0 + sqrt(1 − ᾱ_1)·ε_T.
        a_start, a_end = AC[901].double(), AC[1].double()
        eps_start = (noise.double() - a_start.sqrt() * x0) / (1 - a_start).sqrt()
        expected = a_end.sqrt() * x0 + (1 - a_end).sqrt() * eps_start
        assert torch.allclose(out.double(), expected, atol=1e-4)
    else:
        out = S.sample(name, den, rng, 10, sigma_denoiser=den)
        assert torch.allclose(out, x0, atol=1e-4)
