"""SEGA mode against a transcription of the reference algorithm (diffusers' SemanticStableDiffusionPipeline, with
torch.quantile), over whole sampling runs, in eps and in x0 (k-diffusion) form; thresholds; per-generation state."""

from __future__ import annotations

import pytest
import torch

from lib_ext.guidance.combine import combine
from lib_ext.guidance.ops import channel_quantile_filter, quantile_rank
from lib_ext.guidance.parser import parse_root
from lib_ext.guidance.settings import GuidanceSettings
from lib_ext.guidance.state import GuidanceState
from lib_ext.guidance.step import GuidanceStep
from lib_ext.guidance.tree import SegaParams, StepCount

SHAPE = (4, 8, 8)

# -- the reference --------------------------------------------------------------------------------------------


def reference_sega_step(i, eps_u, eps_t, eps_edits, *, s_g, scales, reverse, thresholds, warmups, cooldowns, s_m,
                        beta, momentum):  # fmt: skip
    """One step of the reference: returns (guided eps, new momentum). Tensors are (B, C, H, W)."""
    guidance = s_g * (eps_t - eps_u)
    if momentum is None:
        momentum = torch.zeros_like(guidance)
    n = len(eps_edits)
    weights = torch.zeros((n, eps_u.shape[0]), dtype=eps_u.dtype)
    edits = torch.zeros((n, *guidance.shape), dtype=eps_u.dtype)
    warm = []
    for c in range(n):
        cooldown = cooldowns[c] if cooldowns[c] is not None else i + 1
        if i >= warmups[c]:
            warm.append(c)
        if i >= cooldown:
            continue
        tmp = eps_edits[c] - eps_u
        if reverse[c]:
            tmp = -tmp
        weights[c, :] = 1.0
        tmp = tmp * scales[c]
        tau = torch.quantile(tmp.abs().flatten(start_dim=2), thresholds[c], dim=2)
        edits[c] = torch.where(tmp.abs() >= tau[:, :, None, None], tmp, torch.zeros_like(tmp))
    if n > len(warm) > 0:
        w = weights[warm].clamp(min=0)
        w = w / w.sum(dim=0)
        guidance = guidance + torch.einsum("cb,cbijk->bijk", w, edits[warm])
    edit = torch.einsum("cb,cbijk->bijk", weights.clamp(min=0).nan_to_num(), edits)
    edit = edit + s_m * momentum
    momentum = beta * momentum + (1 - beta) * edit
    if len(warm) == n:
        guidance = guidance + edit
    return eps_u + guidance, momentum


CONCEPTS = [  # (text, weight, threshold, warmup, cooldown)
    ("glasses", 0.6, 0.9, 2, None),
    ("smile", -0.4, 0.75, 4, 9),
    ("hat", 0.8, 0.5, 0, None),
]


def prompt_for(concepts):
    parts = ["a photo of a face"]
    for text, w, q, warm, cool in concepts:
        tag = f"threshold={q},warmup={warm}" + (f",cooldown={cool}" if cool is not None else "")
        parts.append(f"AND_TOPK {text} <sega:{tag}> :{w}")
    return " ".join(parts)


def run_both(prediction, *, concepts=CONCEPTS, steps=12, s_g=7.0, s_m=0.3, beta=0.6, batch=2, seed=0, state=None):
    """Drive our combine and the reference with the same eps predictions; return per-step guided eps of both."""
    g = torch.Generator().manual_seed(seed)
    tree = parse_root(prompt_for(concepts))
    n_leaves = 1 + len(concepts)
    settings = GuidanceSettings(mode="sega", sega=SegaParams(threshold=0.9, warmup=StepCount(0), momentum=s_m,
                                                               beta=beta))  # fmt: skip
    state = GuidanceState() if state is None else state
    momentum = None
    sigmas = torch.logspace(1.2, -1.5, steps, dtype=torch.float64)  # 15.8 .. 0.03, as a Karras-like schedule
    conds_list = [[(b * n_leaves + j, leaf_w) for j, leaf_w in enumerate([1.0] + [c[1] for c in concepts])]
                  for b in range(batch)]  # fmt: skip
    ours, ref = [], []
    for i in range(steps):
        eps = torch.randn((batch * n_leaves + batch, *SHAPE), generator=g, dtype=torch.float64)
        eps_u = eps[-batch:]
        eps_t = eps[[b * n_leaves for b in range(batch)]]
        eps_edits = [eps[[b * n_leaves + 1 + c for b in range(batch)]] for c in range(len(concepts))]
        guided, momentum = reference_sega_step(
            i, eps_u, eps_t, eps_edits, s_g=s_g, scales=[abs(c[1]) * s_g for c in concepts],
            reverse=[c[1] < 0 for c in concepts], thresholds=[c[2] for c in concepts],
            warmups=[c[3] for c in concepts], cooldowns=[c[4] for c in concepts], s_m=s_m, beta=beta,
            momentum=momentum,
        )  # fmt: skip
        ref.append(guided)

        sigma = sigmas[i].repeat(batch)
        x = torch.randn((batch, *SHAPE), generator=g, dtype=torch.float64)
        x_rows = torch.cat([x.repeat_interleave(n_leaves, dim=0), x])
        if prediction == "eps":
            step = GuidanceStep(eps, x_rows, sigma, conds_list, s_g, i, steps, "eps")
            ours.append(combine(step, [tree] * batch, settings, state))
        else:
            row_sigma = torch.cat([sigma.repeat_interleave(n_leaves), sigma]).view(-1, 1, 1, 1)
            x0 = x_rows - row_sigma * eps  # what a k-diffusion denoiser returns
            step = GuidanceStep(x0, x_rows, sigma, conds_list, s_g, i, steps, "x0")
            denoised = combine(step, [tree] * batch, settings, state)
            ours.append((x - denoised) / sigma.view(-1, 1, 1, 1))  # back to eps
    return ours, ref, state


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_sega_matches_reference_over_a_run(prediction):
    ours, ref, _ = run_both(prediction)
    for i, (a, b) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=f"step {i}")


def test_reference_run_exercises_every_phase():
    # steps 0-1: only "hat" warm (normalised, no momentum); 2-3: two warm; 4-8: all warm (momentum); 9+: cooldown
    ours, _, _ = run_both("eps", s_m=0.0)
    plain, _, _ = run_both("eps", concepts=[], s_m=0.0)
    assert all(not torch.allclose(a, b) for a, b in zip(ours, plain))
    with_momentum, _, _ = run_both("eps")
    same = [torch.allclose(a, b) for a, b in zip(with_momentum, ours)]
    assert same == [True] * 4 + [False] * 8  # momentum builds from step 0 but is only added once all are warm


def test_momentum_is_kept_in_eps_space():
    _, _, state_eps = run_both("eps")
    _, _, state_x0 = run_both("x0")
    assert state_eps.momentum.keys() == state_x0.momentum.keys()
    assert len(state_eps.momentum) == 2 * len(CONCEPTS)  # per image, per concept
    for key, nu in state_eps.momentum.items():
        torch.testing.assert_close(state_x0.momentum[key], nu, rtol=1e-9, atol=1e-9)


def test_x0_space_momentum_would_fail_the_reference(monkeypatch):
    # the x0 comparison can fail: keep everything on x0 differences (no 1/σ) and momentum no longer matches
    monkeypatch.setattr(GuidanceStep, "eps_factor", lambda self, image: -1.0)
    ours, ref, _ = run_both("x0")
    assert all(torch.allclose(a, b) for a, b in zip(ours[:4], ref[:4]))  # no momentum used yet: still equal
    assert not any(torch.allclose(a, b) for a, b in zip(ours[4:], ref[4:]))


def test_batch_images_are_independent():
    tree_a = parse_root("a cat AND_TOPK hat <sega:warmup=1> :0.7")
    tree_b = parse_root("a dog AND_TOPK red <sega:warmup=0> :-0.5 AND_TOPK snow :0.3")
    settings = GuidanceSettings(mode="sega", sega=SegaParams(threshold=0.8, warmup=StepCount(0), momentum=0.5,
                                                               beta=0.5))  # fmt: skip
    g = torch.Generator().manual_seed(7)
    both, only_b = GuidanceState(), GuidanceState()
    for i in range(5):
        x_out = torch.randn((2 + 3 + 2, *SHAPE), generator=g, dtype=torch.float64)
        x_in = torch.randn_like(x_out)
        sigma = torch.tensor([2.0, 3.0], dtype=torch.float64)
        step = GuidanceStep(x_out, x_in, sigma, [[(0, 1.0), (1, 0.7)], [(2, 1.0), (3, -0.5), (4, 0.3)]], 6.0, i, 5,
                            "x0")  # fmt: skip
        got = combine(step, [tree_a, tree_b], settings, both)
        solo_rows = torch.cat([x_out[2:5], x_out[6:7]])
        solo = GuidanceStep(solo_rows, torch.cat([x_in[2:5], x_in[6:7]]), sigma[1:], [[(0, 1.0), (1, -0.5), (2, 0.3)]],
                            6.0, i, 5, "x0")  # fmt: skip
        torch.testing.assert_close(got[1], combine(solo, [tree_b], settings, only_b)[0])
    assert {k[0] for k in both.momentum} == {0, 1}


def test_state_resets_for_a_new_pass():
    state = GuidanceState()
    first, _, _ = run_both("x0", steps=6, state=state)
    assert state.momentum
    # the same object used again from step 0 (a hires pass, say) starts from zero momentum
    second, _, _ = run_both("x0", steps=6, state=state)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)
    # while a state that kept its momentum would not
    stale = GuidanceState()
    run_both("x0", steps=6, state=stale)
    stale.begin_step = lambda step: None  # type: ignore[method-assign]
    third, _, _ = run_both("x0", steps=6, state=stale)
    assert not torch.allclose(third[-1], first[-1])


def test_uncond_skipped_steps_leave_momentum_alone():
    tree = parse_root("a AND_TOPK b :0.5")
    settings = GuidanceSettings(mode="sega", sega=SegaParams(threshold=0.5, warmup=StepCount(0), momentum=0.5,
                                                               beta=0.5))  # fmt: skip
    state = GuidanceState()
    x_out = torch.randn((3, *SHAPE), dtype=torch.float64)
    step = GuidanceStep(x_out, torch.zeros_like(x_out), torch.tensor([1.0]), [[(0, 1.0), (1, 0.5)]], 7.0, 0, 10, "eps")
    combine(step, [tree], settings, state)
    before = {k: v.clone() for k, v in state.momentum.items()}
    step.step, step.uncond_skipped, step.cond_scale = 1, True, 1.0
    combine(step, [tree], settings, state)
    assert all(torch.equal(before[k], state.momentum[k]) for k in before)


def test_momentum_is_updated_once_per_sampler_step():
    """A second model call of the same sampler step (Heun) sees the momentum the step began with and leaves the
    momentum of the next step as a one-call sampler would."""
    tree = parse_root("a AND_TOPK b :0.5")
    settings = GuidanceSettings(mode="sega", sega=SegaParams(threshold=0.5, warmup=StepCount(0), momentum=0.5,
                                                               beta=0.5))  # fmt: skip
    outs = [torch.randn((3, *SHAPE), dtype=torch.float64) for _ in range(3)]

    def step(x_out, i):
        return GuidanceStep(x_out, torch.zeros_like(x_out), torch.tensor([1.0]), [[(0, 1.0), (1, 0.5)]], 7.0, i, 10,
                            "eps")  # fmt: skip

    one_call, two_calls = GuidanceState(), GuidanceState()
    first = combine(step(outs[0], 0), [tree], settings, one_call)
    last = combine(step(outs[2], 1), [tree], settings, one_call)
    assert torch.equal(combine(step(outs[0], 0), [tree], settings, two_calls), first)
    second_call = combine(step(outs[1], 0), [tree], settings, two_calls)  # Heun's second call of step 0
    fresh = combine(step(outs[1], 0), [tree], settings, GuidanceState())  # what it gets with zero momentum
    torch.testing.assert_close(second_call, fresh)
    torch.testing.assert_close(combine(step(outs[2], 1), [tree], settings, two_calls), last)
    # while updating on every call would have changed step 1
    per_call = GuidanceState()
    for i, x in ((0, outs[0]), (1, outs[1])):
        combine(step(x, i), [tree], settings, per_call)
    assert not torch.allclose(combine(step(outs[2], 2), [tree], settings, per_call), last)


def test_relative_warmup_follows_total_steps():
    tree = parse_root("a AND_TOPK b <sega:warmup=50%> :0.5")
    settings = GuidanceSettings(mode="sega", sega=SegaParams(threshold=0.5, warmup=StepCount(0), momentum=0.0,
                                                               beta=0.0))  # fmt: skip
    x_out = torch.randn((3, *SHAPE), dtype=torch.float64)
    u = x_out[-1]
    plain = u + 7.0 * (x_out[0] - u)
    for i, total, active in [(4, 10, False), (5, 10, True), (9, 20, False), (10, 20, True)]:
        step = GuidanceStep(x_out, x_out, torch.tensor([1.0]), [[(0, 1.0), (1, 0.5)]], 7.0, i, total, "eps")
        got = combine(step, [tree], settings, GuidanceState())[0]
        assert torch.allclose(got, plain) != active, (i, total)


# -- thresholds -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.0, 0.05, 0.5, 0.7, 0.9, 0.925, 0.95, 0.975, 0.99, 0.999, 1.0])
@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (1, 4, 64, 64), (3, 2, 5, 7)])
def test_kthvalue_threshold_keeps_what_quantile_keeps(q, shape):
    g = torch.Generator().manual_seed(11)
    psi = torch.randn(shape, generator=g, dtype=torch.float64)
    tau = torch.quantile(psi.abs().flatten(start_dim=2), q, dim=2)
    expected = torch.where(psi.abs() >= tau[:, :, None, None], psi, torch.zeros_like(psi))
    assert torch.equal(channel_quantile_filter(psi, q), expected)


def test_near_ties_are_the_only_difference_from_quantile():
    """The README's one difference of the threshold: neighbouring order statistics one float32 step apart. There
    torch.quantile's interpolated threshold can round onto the lower value and keep it; kthvalue keeps exactly the
    order statistic the exact interpolation would keep. Every differing element sits at the lower neighbour."""
    g = torch.Generator().manual_seed(0)
    differing = 0
    for _ in range(400):
        q = float(torch.rand(1, generator=g))
        psi = 1.0 + torch.randint(0, 3, (1, 1, 8, 8), generator=g).float() * 1.1920929e-07  # one ulp apart
        tau = torch.quantile(psi.abs().flatten(start_dim=2), q, dim=2)
        expected = torch.where(psi.abs() >= tau[:, :, None, None], psi, torch.zeros_like(psi))
        ours = channel_quantile_filter(psi, q)
        extra = (expected != 0) & (ours == 0)
        assert not ((ours != 0) & (expected == 0)).any()  # quantile never keeps less
        if extra.any():
            differing += 1
            kept = psi[ours != 0]
            assert kept.numel() == 0 or float(psi[extra].max()) < float(kept.min())  # only the lower neighbour
    assert 0 < differing < 40  # rare even here; never on the random data of the test above


def test_threshold_is_per_channel():
    psi = torch.ones((1, 2, 4, 4))
    psi[0, 1] *= 100  # a loud channel must not silence the quiet one
    psi[0, 0, 0, 0] = 2
    out = channel_quantile_filter(psi, 0.99)
    assert out[0, 0].count_nonzero() == 1 and out[0, 1].count_nonzero() == 16


def test_quantile_rank_edges():
    assert quantile_rank(10, 0.0) == 1
    assert quantile_rank(10, 1.0) == 10
    assert quantile_rank(11, 0.5) == 6  # whole position: the lower order statistic
    assert quantile_rank(10, 0.5) == 6  # 4.5: the upper one
    assert quantile_rank(11, 0.7) == 8  # 0.7·10 = 7.000000000000001 is a whole position
    assert quantile_rank(1, 0.9) == 1


def test_float16_cpu_threshold():
    psi = torch.randn((1, 4, 8, 8)).half()
    out = channel_quantile_filter(psi, 0.9)
    assert out.dtype == torch.float16
    assert torch.equal(out, channel_quantile_filter(psi.float(), 0.9).half())


def test_bench_parts_run_on_small_latents():
    from lib_ext.guidance.bench_parts import quantile_vs_kthvalue, sd15_step, time_combine

    q = quantile_vs_kthvalue(batch=1, repeats=2, latent=(4, 16, 16))
    assert q["same_entries_kept"] is True and q["kthvalue_ms"] > 0
    step, trees = sd15_step(["a AND_TOPK b :0.5", "c"])
    assert step.x_out.shape == (5, 4, 64, 64) and [len(c) for c in step.conds_list] == [2, 1]
    assert time_combine(batch=1, repeats=2) > 0
