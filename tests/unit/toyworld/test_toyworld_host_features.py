"""The real features on the standalone host (the small real toy architecture, random weights): they run through
the seam, see the layouts they expect, and leave the UNet as it was."""

from __future__ import annotations

import pytest
import torch

from lib_ext.toyworld.host import ToyHost
from lib_ext.toyworld.model import ToyConfig, ToyTextEncoder, ToyUNet
from lib_ext.toyworld.tokenizer import ToyTokenizer

TOK = ToyTokenizer()


@pytest.fixture
def host() -> ToyHost:
    cfg = ToyConfig(
        vocab_size=TOK.vocab_size, text_dim=16, channels=(8, 16, 16), attn_heads=(1, 2, 2), time_dim=32, groups=4
    )
    torch.manual_seed(0)
    return ToyHost(ToyTextEncoder(cfg), ToyUNet(cfg), TOK)


def _hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_semantic_guidance_rewrites_rows_and_replaces_the_combination(host):
    guidance = pytest.importorskip("lib_ext.guidance.feature")
    feature = guidance.GuidanceFeature()
    prompt = "a red circle AND_TOPK blue :0.4"
    kw = {"seed": 3, "steps": 4, "cfg_scale": 5.0, "sampler_name": "Euler"}
    guided = host.txt2img(prompt, features=[feature], **kw)
    plain = host.txt2img(prompt, **kw)
    assert not [m for m in guided.messages if "off" in m], guided.messages
    assert not torch.allclose(guided.samples, plain.samples)
    assert guided.prompts == [prompt]  # the job keeps what the user typed; only the rows were rewritten
    assert _hooks(host.unet) == 0


def test_heatmaps_capture_words_of_the_toy_prompt(host):
    heatmaps = pytest.importorskip("lib_ext.heatmaps.feature")
    feature = heatmaps.HeatmapFeature()
    host.txt2img("a red circle", "blue", seed=1, steps=3, sampler_name="Euler", batch_size=2, features=[feature])
    results = feature.take_results()
    assert [r.image for r in results] == [0, 1]
    words = {w.word: w for w in results[0].words}
    assert {"red", "circle"} <= set(words)
    assert words["red"].heat is not None and words["red"].heat.shape[-2:] == (32, 32)
    assert _hooks(host.unet) == 0


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DDIM"])
def test_plain_prompt_matches_the_bare_sampling_pipeline(host, sampler):
    """For a prompt without AND, BREAK or emphasis the host adds nothing to `sampling.py` + `cfg.py` + the encoder."""
    from lib_ext.toyworld import sampling as S
    from lib_ext.toyworld.cfg import CFGDenoiser

    out = host.txt2img("a red circle", "blue", seed=9, steps=5, cfg_scale=6.0, sampler_name=sampler, batch_size=2)
    with torch.no_grad():
        cond = host.text_encoder(torch.tensor([TOK("a red circle")] * 2))
        uncond = host.text_encoder(torch.tensor([TOK("blue")] * 2))

        def model_fn(x, t, context):
            return host.unet(x, t, context)

        info = S.SAMPLERS[sampler]
        inner = (S.TimestepsEpsDenoiser if info.timesteps else S.DiscreteEpsDenoiser)(model_fn, host.alphas_cumprod)
        bare = S.sample(
            sampler,
            CFGDenoiser(inner),
            S.ImageRNG((3, 32, 32), [9, 10]),
            5,
            extra_args={"cond": cond, "uncond": uncond, "cond_scale": 6.0},
            alphas_cumprod=host.alphas_cumprod,
            sigma_denoiser=S.DiscreteEpsDenoiser(model_fn, host.alphas_cumprod),
        )
    assert torch.allclose(out.samples, bare, atol=1e-5)


def test_sega_warmup_and_cooldown_count_sampler_steps_with_heun(host, monkeypatch):
    """Heun calls the model 2N − 1 times for N steps; SEGA's warm-up/cooldown count the N steps (paper, diffusers)."""
    import importlib

    from lib_ext.guidance.feature import GuidanceFeature
    from lib_ext.guidance.settings import GuidanceSettings
    from lib_ext.guidance.tree import SegaParams, StepCount

    combine_module = importlib.import_module("lib_ext.guidance.combine")
    original = combine_module._GroupCombination._sega_edit
    seen: list[tuple[int, bool]] = []

    def probe(self, concepts, path):
        edit = original(self, concepts, path)
        seen.append((self.step.step, bool(edit.abs().max() > 0)))
        return edit

    monkeypatch.setattr(combine_module._GroupCombination, "_sega_edit", probe)
    sega = SegaParams(threshold=0.0, warmup=StepCount(2), cooldown=StepCount(4), momentum=0.0, beta=0.4)
    feature = GuidanceFeature(GuidanceSettings(mode="sega", sega=sega))
    calls = []
    host.txt2img("a red circle AND_TOPK blue :2", features=[feature], seed=3, steps=5, cfg_scale=5.0,
                 sampler_name="Heun", progress=lambda done, total, _text: calls.append((done, total)))  # fmt: skip
    assert len(seen) == 9 and calls[-1] == (9, 10)  # 2 × 5 − 1 model calls; A1111's total_steps is 10
    assert seen == [(0, False), (0, False), (1, False), (1, False), (2, True), (2, True), (3, True), (3, True),
                    (4, False)]  # fmt: skip


def test_heun_on_the_toy_host_is_second_order(host):
    """With the same steps, Heun lands nearer a fine Euler solution of the same ODE than Euler does."""
    from lib_ext.toyworld import sampling as S

    assert S.SAMPLERS["Heun"].model_calls(5) == 10 and S.SAMPLERS["Euler"].model_calls(5) == 5
    kw = {"seed": 3, "cfg_scale": 5.0}
    fine = host.txt2img("a red circle", sampler_name="Euler", steps=120, **kw).samples
    heun = host.txt2img("a red circle", sampler_name="Heun", steps=8, **kw).samples
    euler = host.txt2img("a red circle", sampler_name="Euler", steps=8, **kw).samples
    assert (heun - fine).abs().mean() < 0.5 * (euler - fine).abs().mean()
