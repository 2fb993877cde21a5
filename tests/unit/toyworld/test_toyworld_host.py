"""The standalone host against hand-computed cases: AND rows and weights, CFG, step hooks, sessions, seeds, chunks.

Most tests run the host on two stubs so that every number is known:
- `IdTextEncoder`: token t's output vector is (id(t), 1, 0, 0), so a row's context names its words;
- `OracleUNet`: returns the ε under which the model's x0 prediction is exactly c = (first word id) / 100, a constant
  image. Every deterministic sampler then ends on the guided x0, uncond + Σ w·s·(cond − uncond), which this file
  computes by hand from token ids.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib_ext.seam import DenoiseStep, GenerationRequest
from lib_ext.toyworld import sampling as S
from lib_ext.toyworld.host import ToyHost
from lib_ext.toyworld.schedule import alphas_cumprod
from lib_ext.toyworld.tokenizer import ToyTokenizer

TOK = ToyTokenizer()
ID = TOK.word_to_id


class IdTextEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.calls += ids.shape[0]
        z = torch.zeros(ids.shape[0], ids.shape[1], 4)
        z[..., 0] = ids.float()
        z[..., 1] = 1.0
        return z


class OracleUNet(nn.Module):
    """ε that makes x0 = c(row) exactly, for whatever x and (fractional) timestep the sampler gives."""

    def __init__(self) -> None:
        super().__init__()
        self.sched = S.DiscreteEpsDenoiser(None, alphas_cumprod())
        self.contexts: list[torch.Tensor] = []
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        self.contexts.append(context.clone())
        self.batch_sizes.append(x.shape[0])
        sigma = self.sched.t_to_sigma(t.reshape(-1)).to(x.dtype).view(-1, 1, 1, 1)
        a = 1.0 / (1.0 + sigma**2)  # ᾱ at that σ
        c = (context[:, 1, 0] / 100.0).view(-1, 1, 1, 1)
        return (x - a.sqrt() * c) / (1.0 - a).sqrt()


def stub_host() -> ToyHost:
    return ToyHost(IdTextEncoder(), OracleUNet(), TOK, model_name="toyworld")


def c(word: str) -> float:
    return ID[word] / 100.0


C_EMPTY = TOK.eos_id / 100.0  # the empty prompt's first word position holds the end token


class Recorder:
    """A feature that records every DenoiseStep and optionally replaces the combination."""

    name = "recorder"

    def __init__(self, replace=None) -> None:
        self.steps: list[DenoiseStep] = []
        self.replace = replace
        self.ended: list[bool] = []

    def begin_sampling(self, ctx) -> None:
        def hook(step: DenoiseStep):
            self.steps.append(step)
            return None if self.replace is None else self.replace(step)

        ctx.step_hooks.append(hook)

    def end_sampling(self, ctx, ok: bool) -> None:
        self.ended.append(ok)


# ------------------------------------------------------------------------------------------ layout and CFG


def test_and_subprompts_weights_and_row_layout():
    host = stub_host()
    rec = Recorder()
    prompts = ["red AND blue:0.5", "green", "red AND blue :-0.25"]
    host.txt2img(prompts, "yellow", seed=3, steps=2, sampler_name="Euler", cfg_scale=5, features=[rec])
    step = rec.steps[0]
    # Rows: image 0's two sub-prompts, image 1's one, image 2's two, then one uncond row per image.
    assert step.layout.conds == (((0, 1.0), (1, 0.5)), ((2, 1.0),), ((3, 1.0), (4, -0.25)))
    assert step.layout.n_rows == 8
    ctx = host.unet.contexts[0]
    assert ctx[:, 1, 0].tolist() == [ID[w] for w in ("red", "blue", "green", "red", "blue")] + [ID["yellow"]] * 3
    # One UNet forward per step holding every row.
    assert host.unet.batch_sizes == [8, 8]
    # x_in repeats image i's latent once per sub-prompt, then the images again for the uncond rows.
    assert torch.equal(step.x_in[0], step.x_in[1]) and torch.equal(step.x_in[3], step.x_in[4])
    assert torch.equal(step.x_in[5], step.x_in[0]) and torch.equal(step.x_in[6], step.x_in[2])
    assert step.cond_scale == 5 and step.prediction == "x0" and step.total_steps == 2
    # Sub-prompt texts "red" and " blue" appear twice in the batch but are encoded once, "yellow" once for 3
    # images: 4 texts, plus the empty prompt's chunk kept for padding.
    assert host.text_encoder.calls == 5


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM++ 2M", "DDIM"])
def test_final_image_is_the_hand_computed_guided_prediction(sampler):
    host = stub_host()
    scale = 3.0
    out = host.txt2img("red AND blue:0.5", "green", seed=7, steps=6, cfg_scale=scale, sampler_name=sampler)
    u = c("green")
    expected = u + scale * (1.0 * (c("red") - u) + 0.5 * (c("blue") - u))
    assert out.samples.shape == (1, 3, 32, 32)
    if sampler == "DDIM":
        # DDIM stops at timestep 1, not 0: noise of std sqrt(1 − ᾱ_1) remains around the guided x0 (0.03 for the
        # scaled-linear schedule), so 3072 pixels stay within ~5 of those std of it.
        from lib_ext.toyworld.schedule import alphas_cumprod

        residual = float((1 - alphas_cumprod()[1]).sqrt())
        assert abs(out.samples.mean().item() - expected) < 2e-3
        assert (out.samples - expected).abs().max().item() < 6 * residual
    else:
        assert torch.allclose(out.samples, torch.full_like(out.samples, expected), atol=1e-4)


def test_combination_equals_host_formula_each_step():
    host = stub_host()
    rec = Recorder()
    host.txt2img(["red AND blue:0.5", "green"], "", seed=1, steps=3, cfg_scale=7, sampler_name="Euler", features=[rec])
    for step in rec.steps:
        x = step.x_out
        u0, u1 = x[3], x[4]
        by_hand = torch.stack([u0 + 7 * ((x[0] - u0) + 0.5 * (x[1] - u0)), u1 + 7 * (x[2] - u1)])
        assert torch.allclose(step.default_combine(), by_hand, atol=1e-6)
        # x0 of each row is its constant c (the oracle), uncond rows the empty prompt's.
        assert torch.allclose(x[0], torch.full_like(x[0], c("red")), atol=1e-4)
        assert torch.allclose(x[3], torch.full_like(x[3], C_EMPTY), atol=1e-4)


def test_step_hook_replaces_the_combination():
    host = stub_host()
    # Replace CFG by "uncond only": the image must end on the negative prompt's prediction.
    rec = Recorder(replace=lambda step: step.uncond().clone())
    out = host.txt2img("red", "blue", seed=2, steps=4, sampler_name="Euler", cfg_scale=7, features=[rec])
    assert len(rec.steps) == 4
    assert torch.allclose(out.samples, torch.full_like(out.samples, c("blue")), atol=1e-4)
    assert rec.ended == [True]


def test_ddim_steps_are_eps_predictions_on_timesteps():
    host = stub_host()
    rec = Recorder()
    host.txt2img("red", "", seed=2, steps=5, sampler_name="DDIM", features=[rec])
    assert [s.prediction for s in rec.steps] == ["eps"] * 4  # A1111's DDIM makes steps − 1 model calls
    assert [int(s.sigma[0]) for s in rec.steps] == [801, 601, 401, 201]
    assert [s.step for s in rec.steps] == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------- sessions and faults


class HookingFeature:
    """Installs a forward hook and an instance attribute through ctx.patches; fails on request."""

    name = "hooking"

    def __init__(
        self,
        fail_at: int | None = None,
        interrupt_at: int | None = None,
        host: ToyHost | None = None,
        unet_fail_at: int | None = None,
    ):
        self.fail_at, self.interrupt_at, self.host = fail_at, interrupt_at, host
        self.unet_fail_at = unet_fail_at
        self.ended: list[bool] = []
        self.hook_calls = 0

    def begin_sampling(self, ctx) -> None:
        def count(*_args):
            self.hook_calls += 1
            if self.hook_calls == self.unet_fail_at:
                raise RuntimeError("UNet failed")

        ctx.patches.add_handle(ctx.unet.register_forward_hook(count), key=("count",), what="test hook")
        ctx.patches.set_attr(ctx.unet, "promptscope_marker", 1)

        def step_hook(step: DenoiseStep):
            if step.step == self.fail_at:
                raise RuntimeError("feature failed")
            if step.step == self.interrupt_at:
                self.host.interrupt()
            return None

        ctx.step_hooks.append(step_hook)

    def end_sampling(self, ctx, ok: bool) -> None:
        self.ended.append(ok)


def _clean(unet: nn.Module) -> bool:
    return not unet._forward_hooks and not unet._forward_pre_hooks and "promptscope_marker" not in vars(unet)


def test_session_restores_hooks_on_exception():
    host = stub_host()
    feature = HookingFeature(unet_fail_at=3)  # an error inside the model call aborts, as in A1111
    with pytest.raises(RuntimeError, match="UNet failed"):
        host.txt2img("red", seed=1, steps=5, sampler_name="Euler", features=[feature])
    assert feature.ended == [False]
    assert feature.hook_calls == 3
    assert _clean(host.unet)
    # The host still works afterwards, without the feature.
    out = host.txt2img("red", seed=1, steps=2, sampler_name="Euler")
    assert not out.interrupted and feature.hook_calls == 3


def test_a_failing_step_hook_is_dropped_and_the_image_kept():
    host = stub_host()
    feature = HookingFeature(fail_at=2)
    out = host.txt2img("red", seed=1, steps=5, sampler_name="Euler", features=[feature])
    assert out.images and feature.ended == [True]
    assert any("feature failed" in m for m in out.messages)
    assert _clean(host.unet)


def test_interrupt_stops_between_steps_and_restores_hooks():
    host = stub_host()
    feature = HookingFeature(interrupt_at=1)
    feature.host = host
    out = host.txt2img("red", "blue", seed=1, steps=10, sampler_name="Euler", features=[feature])
    assert out.interrupted and "Interrupted" in out.messages
    assert host.unet.batch_sizes == [2, 2]  # steps 0 and 1 ran, step 2 never reached the UNet
    assert feature.ended == [True]  # like A1111, an interrupt is caught inside the sampler
    assert _clean(host.unet)
    # The result is the last x0 prediction of the image's first sub-prompt (A1111's last_latent).
    assert torch.allclose(out.samples, torch.full_like(out.samples, c("red")), atol=1e-4)
    # The next call starts afresh.
    assert not host.txt2img("red", seed=1, steps=2, sampler_name="Euler").interrupted


def test_run_jobs_reports_progress_and_stops_after_interrupt():
    host = stub_host()
    seen: list[tuple[int, int, str]] = []

    def progress(done, total, msg):
        seen.append((done, total, msg))
        if done == 1:
            host.interrupt()

    reqs = [GenerationRequest("red", seed=5, settings={"steps": 2, "sampler_name": "Euler"}) for _ in range(3)]
    reqs[0].infotext = {"Bandit arm": "3"}
    results = host.run_jobs(reqs, progress=progress)
    # Job 0 finished; interrupted as job 1 starts, job 1 makes no image (A1111 skips the batch) and job 2 never runs.
    assert len(results) == 1 and results[0].seed == 5
    assert host.unet.batch_sizes == [2, 2]
    assert results[0].infotext.endswith("Model: toyworld, Bandit arm: 3")
    assert seen[0] == (0, 3, "Generating 1/3") and seen[-1][2] == "Done"
    assert results[0].image.size == (32, 32)


# ------------------------------------------------------------------------------------------ seeds


def test_run_jobs_returns_the_image_interrupted_mid_sampling_and_stops():
    host = stub_host()
    reqs = [GenerationRequest("red", seed=5, settings={"steps": 6, "sampler_name": "Euler"}) for _ in range(3)]
    feature = HookingFeature(interrupt_at=2, host=host)
    results = host.run_jobs(reqs, features=[feature])
    # As A1111's process_images: the interrupted image is kept (its last x0 prediction), nothing runs after it.
    assert len(results) == 1 and len(host.unet.batch_sizes) == 3
    assert results[0].image.getpixel((0, 0)) == (int(255 * (1 + c("red")) / 2),) * 3
    assert feature.ended == [True] and _clean(host.unet)


def test_seeds_random_range_and_batch_offsets():
    host = stub_host()
    out = host.txt2img("red", seed=-1, steps=1, sampler_name="Euler", batch_size=3)
    assert 0 <= out.seeds[0] < 2**32 and out.seeds == [out.seeds[0] + i for i in range(3)]
    with pytest.raises(ValueError):
        host.txt2img("red", seed=2**32, steps=1)
    with pytest.raises(ValueError):
        host.txt2img("red", seed=-2, steps=1)
    assert host.txt2img("red", seed=2**32 - 1, steps=1, sampler_name="Euler").seeds == [2**32 - 1]


def small_toy_host() -> ToyHost:
    """The real toy architecture (text encoder, cross-attention UNet), narrow so that it runs fast, random init."""
    from lib_ext.toyworld.model import ToyConfig, ToyTextEncoder, ToyUNet

    cfg = ToyConfig(
        vocab_size=TOK.vocab_size, text_dim=16, channels=(8, 16, 16), attn_heads=(1, 2, 2), time_dim=32, groups=4
    )
    torch.manual_seed(0)
    return ToyHost(ToyTextEncoder(cfg), ToyUNet(cfg), TOK)


def test_seed_determinism_and_batch_independence_on_the_toy_model():
    host = small_toy_host()
    kw = {"steps": 3, "cfg_scale": 5.0, "sampler_name": "Euler a"}
    a = host.txt2img("a red circle", "blue", seed=11, batch_size=2, **kw)
    b = host.txt2img("a red circle", "blue", seed=11, batch_size=2, **kw)
    assert torch.equal(a.samples, b.samples)
    assert a.seeds == [11, 12]
    # Image 1 of the batch is the image of seed 12 alone: per-image generators, no batch coupling.
    alone = host.txt2img("a red circle", "blue", seed=12, batch_size=1, **kw)
    assert torch.allclose(a.samples[1], alone.samples[0], atol=1e-3)
    other = host.txt2img("a red circle", "blue", seed=13, batch_size=1, **kw)
    assert not torch.allclose(alone.samples, other.samples, atol=1e-2)


# --------------------------------------------------------------------------------- chunks and padding


def test_prompts_longer_than_75_tokens_and_break_make_chunks():
    host = stub_host()
    long = " ".join(["red"] * 80)
    tokens = host.tokenize(long)
    assert [sum(p.word_index is not None for p in ch) for ch in tokens.chunks] == [75, 5]
    assert all(len(ch) == 75 for ch in tokens.chunks) and tokens.context_length == 154
    assert tokens.chunks[1][0].word_index == 75 and len(tokens.words) == 80
    brk = host.tokenize("red circle BREAK blue square")
    assert [[p.text for p in ch if p.word_index is not None] for ch in brk.chunks] == [
        ["red", "circle"],
        ["blue", "square"],
    ]
    assert brk.position(1, 0) == 78  # chunk 1's first token, after its start token
    assert host.encode("red circle BREAK blue square").shape == (154, 4)
    assert host.tokenize("").chunks[0][0].word_index is None and len(host.tokenize("").chunks) == 1


def test_cond_and_uncond_of_different_lengths_are_padded_with_the_empty_chunk():
    host = stub_host()
    host.txt2img("red BREAK blue", "green", seed=1, steps=1, sampler_name="Euler")
    ctx = host.unet.contexts[0]
    assert ctx.shape == (2, 154, 4) and host.unet.batch_sizes == [2]
    empty = host.conditioner.empty_prompt()[0]
    assert torch.equal(ctx[1, 77:], empty)  # the negative prompt gained the empty prompt's chunk
    assert ctx[0, 78, 0] == ID["blue"]  # the prompt's second chunk starts with "blue"


def test_subprompts_of_different_lengths_repeat_their_last_vector():
    host = stub_host()
    rec = Recorder()
    host.txt2img("red AND blue BREAK green", "", seed=1, steps=1, sampler_name="Euler", features=[rec])
    ctx = host.unet.contexts[0]
    assert ctx.shape == (3, 154, 4)
    assert torch.equal(ctx[0, 77:], ctx[0, 76:77].expand(77, 4))  # A1111's stack_conds


def test_emphasis_scales_tokens_and_restores_the_mean():
    host = stub_host()
    tokens = host.tokenize("a (red:1.5) [circle]")
    assert [round(p.multiplier, 6) for p in tokens.chunks[0][:3]] == [1.0, 1.5, round(1 / 1.1, 6)]
    z0 = IdTextEncoder()(torch.tensor([TOK.context(TOK.encode_words("a red circle"))]))[0]
    mult = torch.ones(77)
    mult[2], mult[3] = 1.5, 1 / 1.1
    z = z0 * mult[:, None]
    z = z * (z0.mean() / z.mean())
    assert torch.allclose(host.encode("a (red:1.5) [circle]"), z, atol=1e-6)


# -------------------------------------------------------------------------------------------- infotext


def test_infotext_format():
    host = stub_host()
    out = host.txt2img(
        "red, circle",
        "blue",
        seed=42,
        steps=3,
        cfg_scale=7,
        sampler_name="Euler",
        batch_size=2,
        extra_generation_params={"Guidance": "AND_TOPK red :0.4", "Empty": None},
    )
    assert out.infotexts[0] == (
        "red, circle\nNegative prompt: blue\n"
        'Steps: 3, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 32x32, Model: toyworld, Guidance: "AND_TOPK red :0.4"'
    )
    assert "Seed: 43," in out.infotexts[1]
    host.add_infotext(out, "Extra", 1.5)
    assert out.info.endswith("Extra: 1.5")
    assert "Negative prompt" not in host.txt2img("red", seed=1, steps=1, sampler_name="Euler").info
    host.attach_images(out, [out.images[0]])
    assert len(out.images) == 3 and out.n_generated == 2


def test_settings_the_toy_model_cannot_honour_are_rejected():
    host = stub_host()
    with pytest.raises(ValueError, match="32x32"):
        host.txt2img("red", width=64, steps=1)
    with pytest.raises(ValueError, match="unknown sampler"):
        host.txt2img("red", sampler_name="LMS", steps=1)


def test_load_uses_weights_when_present_and_an_untrained_model_otherwise(tmp_path):
    from lib_ext.toyworld.model import ToyConfig, ToyTextEncoder, ToyUNet
    from lib_ext.toyworld.train import export_safetensors, joint_state

    cfg = ToyConfig(
        vocab_size=TOK.vocab_size, text_dim=16, channels=(8, 16, 16), attn_heads=(1, 2, 2), time_dim=32, groups=4
    )
    torch.manual_seed(1)
    te, unet = ToyTextEncoder(cfg), ToyUNet(cfg)
    path = tmp_path / "toy.safetensors"
    export_safetensors(path, joint_state(te, unet), cfg, {"minutes": 0})
    host = ToyHost.load(path)
    assert host.model_name == "toyworld"
    assert host.unet.cfg.channels == (8, 16, 16)
    out = host.txt2img("a red circle", seed=1, steps=2, sampler_name="Euler")
    assert "Model: toyworld," in out.info + "," and out.images[0].size == (32, 32)
    fallback = ToyHost.load(tmp_path / "absent.safetensors")
    assert fallback.model_name == "toyworld-untrained"
    with pytest.raises(FileNotFoundError):
        ToyHost.load(tmp_path / "absent.safetensors", allow_random=False)
