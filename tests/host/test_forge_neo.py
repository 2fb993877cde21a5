"""promptscope_forge in a Forge Neo double (fake_neo backend + the A1111 double's models and prompt parser)."""

from __future__ import annotations

import neo_double
import pytest
import torch


@pytest.fixture
def neo(fake_webui):
    neo_double.mount()
    import promptscope_a1111  # noqa: F401  (mounts lib_ext as promptscope_lib_ext, as inside the WebUI)

    try:
        yield fake_webui
    finally:
        neo_double.unmount()


def _model(m, kind="sd1"):
    return neo_double.NeoModel(m.sd_models.load_model(kind))


def _calls():
    from backend.sampling.sampling_function import UNET_CALLS

    return UNET_CALLS


def _clean(model, own_unet=True):
    """Nothing of ours is left: no open session, hooks removed, the pass's UnetPatcher back (or, when another
    script put its clone there, that clone without our patches)."""
    from promptscope_lib_ext.session import SamplingSession

    unet = model.inner.model.diffusion_model
    assert SamplingSession.open_sessions() == []
    for module in unet.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks, module
    if own_unet:
        assert model.forge_objects.unet is model.forge_objects_after_applying_lora.unet
    options = model.forge_objects.unet.model_options
    assert "model_function_wrapper" not in options and not options.get("sampler_post_cfg_function")
    assert not options.get("conditioning_modifiers")


def test_host_detected_from_forge_version_module(neo):
    import promptscope_adapter

    assert promptscope_adapter.detect_host() == "forge"
    assert promptscope_adapter.forge_version() == ("neo", "2.26")
    neo_double.unmount()
    assert promptscope_adapter.detect_host() == "a1111"


def test_entry_points_pick_the_forge_adapter(neo):
    from promptscope_adapter import load

    script = load("base_script", "PromptScopeScript")
    assert script.__module__ == "promptscope_forge.base_script"
    assert load("guidance_script", "SemanticGuidanceScript").__name__ == "SemanticGuidanceScript"


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_features_off_or_not_combining_leave_the_image_bit_identical(neo, kind):
    from promptscope_lib_ext.guidance.feature import GuidanceFeature
    from promptscope_lib_ext.heatmaps.feature import HeatmapFeature

    model = _model(neo, kind)
    prompts = ["a cat AND a dog :0.5", "a red fox AND a dog :0.5"]
    base, _ = neo_double.generate(neo, model, prompts)
    heat = HeatmapFeature()
    off = GuidanceFeature(enabled=False)
    with_features, p = neo_double.generate(neo, model, prompts, (off, heat))
    assert torch.equal(base, with_features)
    assert heat.take_results(), "the heatmap capture saw no rows"
    _clean(model)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
@pytest.mark.parametrize("n_concepts", [0, 1, 2])
def test_one_unet_call_per_step_with_one_row_per_concept(neo, kind, n_concepts):
    from promptscope_lib_ext.guidance.feature import GuidanceFeature

    model = _model(neo, kind)
    prompt = "a cat" + "".join([" AND_PERP a dog :0.8", " AND_SALT a hat :0.5"][:n_concepts])
    calls = _calls()
    calls.clear()
    feature = GuidanceFeature()
    out, p = neo_double.generate(neo, model, [prompt, prompt.replace("cat", "fox")], (feature,), steps=3)
    assert len(calls) == 3
    assert all(rows == 2 * (2 + n_concepts) for _kinds, rows in calls)
    assert all(kinds == [1, 0] + [0] * n_concepts for kinds, _rows in calls)  # Neo's rows first, ours after
    assert not feature.messages
    _clean(model)


def test_guided_step_equals_lib_combine_from_separately_computed_rows(neo):
    model = _model(neo)
    prompts = ["a cat AND_PERP a dog :0.8 AND_SALT a hat :0.5"]
    guided, expected, rows = neo_double.guided_and_recomputed(neo, model, prompts)
    assert torch.allclose(guided, expected, atol=1e-4, rtol=1e-4)
    plain = rows[-1:] + 7.0 * (rows[0:1] - rows[-1:])
    assert not torch.allclose(guided, plain, atol=1e-3)


@pytest.mark.parametrize("failure", ["exception", "interrupt"])
def test_an_error_mid_sampling_leaves_nothing_behind(neo, failure):
    from promptscope_lib_ext.guidance.feature import GuidanceFeature
    from promptscope_lib_ext.heatmaps.feature import HeatmapFeature

    model = _model(neo)
    features = (GuidanceFeature(), HeatmapFeature())
    if failure == "exception":
        with pytest.raises(RuntimeError):
            neo_double.generate(neo, model, ["a cat AND_PERP a dog"], features, steps=3, fail_at_step=1)
    else:
        original = neo_double.Denoiser.forward

        def interrupted(self, *args):
            if self.step == 1:
                raise KeyboardInterrupt
            return original(self, *args)

        neo_double.Denoiser.forward = interrupted
        try:
            with pytest.raises(KeyboardInterrupt):
                neo_double.generate(neo, model, ["a cat AND_PERP a dog"], features, steps=3)
        finally:
            neo_double.Denoiser.forward = original
    _clean(model)
    calls = _calls()
    calls.clear()
    neo_double.generate(neo, model, ["a cat"], steps=2)  # the host samples as without us
    assert [rows for _k, rows in calls] == [2, 2]


def _rescale_hook(calls):
    """Neo's built-in Rescale CFG pattern: clone, set a sampler_cfg_function, put the clone back."""

    def rescale_cfg(args):
        calls.append(args)
        cond, uncond, scale = args["cond"], args["uncond"], args["cond_scale"]
        x_cfg = uncond + scale * (cond - uncond)
        ro_pos = torch.std(cond, dim=(1, 2, 3), keepdim=True)
        ro_cfg = torch.std(x_cfg, dim=(1, 2, 3), keepdim=True)
        return 0.7 * x_cfg * (ro_pos / ro_cfg) + 0.3 * x_cfg

    def hook(p):
        unet = p.sd_model.forge_objects.unet.clone()
        unet.set_model_sampler_cfg_function(rescale_cfg)
        p.sd_model.forge_objects.unet = unet

    return hook


def test_another_cfg_function_keeps_working_beside_guidance(neo):
    from promptscope_lib_ext.guidance.feature import GuidanceFeature

    model = _model(neo)
    prompts = ["a cat AND_PERP a dog :0.8"]
    calls: list = []
    rescale_only, _ = neo_double.generate(neo, model, ["a cat"], before_sampling=(_rescale_hook(calls),), steps=2)
    assert len(calls) == 2
    calls.clear()
    guided, _ = neo_double.generate(neo, model, prompts, (GuidanceFeature(),), steps=2)
    both, _ = neo_double.generate(
        neo, model, prompts, (GuidanceFeature(),), before_sampling=(_rescale_hook(calls),), steps=2
    )
    assert len(calls) == 4  # Neo's own call and ours on the guided result, each step
    assert not torch.allclose(both, guided, atol=1e-4)
    # with guidance on but the prompt plain, the rescaled image is Neo's own
    plain_calls: list = []
    same, _ = neo_double.generate(
        neo, model, ["a cat"], (GuidanceFeature(),), before_sampling=(_rescale_hook(plain_calls),), steps=2
    )
    assert torch.equal(same, rescale_only)
    _clean(model, own_unet=False)


def test_hires_pass_gets_its_own_session_and_rows(neo):
    from promptscope_lib_ext.guidance.feature import GuidanceFeature

    model = _model(neo)
    calls = _calls()
    calls.clear()
    feature = GuidanceFeature()
    _out, p = neo_double.generate(neo, model, ["a cat AND_PERP a dog"], (feature,), steps=2, hires=True)
    assert calls == [([1, 0, 0], 3), ([1, 0, 0], 3)]  # Neo's uncond and cond chunks, then our concept chunk
    assert not feature.messages
    _clean(model)


def test_heatmap_rows_follow_cond_or_uncond_with_concept_rows_and_the_hires_pass(neo):
    from promptscope_lib_ext.guidance.feature import GuidanceFeature
    from promptscope_lib_ext.heatmaps.feature import HeatmapFeature
    from promptscope_lib_ext.seam import RowRole

    from promptscope_forge import sampling

    model = _model(neo)
    seen: list = []
    original = sampling.NeoHooks.unet_wrapper

    def spy(self, apply_model, args):
        def recording(*a, **kw):
            seen.append(self.current_rows())
            return apply_model(*a, **kw)

        return original(self, recording, args)

    sampling.NeoHooks.unet_wrapper = spy
    try:
        heat = HeatmapFeature()
        prompts = ["a cat AND_PERP a dog :0.8", "a fox AND_PERP a hat :0.8"]
        neo_double.generate(neo, model, prompts, (GuidanceFeature(), heat), steps=2, hires=True)
    finally:
        sampling.NeoHooks.unet_wrapper = original
    expected = [RowRole(0, -1, True), RowRole(1, -1, True), RowRole(0, 0, False), RowRole(1, 0, False)]
    expected += [RowRole(0, 1, False), RowRole(1, 1, False)]
    assert seen == [expected, expected]
    results = heat.take_results()
    assert sorted((r.image, r.pass_name) for r in results) == [(0, "hires"), (1, "hires")]
    _clean(model)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_a_batch_with_different_sub_prompt_counts_guides_each_image_as_alone(neo, kind):
    """Neo pairs sub-prompts by position and drops those past the shortest image (zip); we build the concept
    chunks ourselves, so each image of the batch is guided as it is in a batch of its own."""
    from promptscope_lib_ext.guidance.feature import GuidanceFeature
    from promptscope_lib_ext.heatmaps.feature import HeatmapFeature

    model = _model(neo, kind)
    prompts = ["a cat AND_PERP a dog :0.8 AND_SALT a hat :0.5", "a fox", "a red fox AND_PERP a hat :0.6"]
    latent = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    calls = _calls()
    calls.clear()
    heat = HeatmapFeature()
    batch, p = neo_double.generate(neo, model, prompts, (GuidanceFeature(), heat), steps=2, latent=latent)
    assert not p.comments, p.comments
    assert [rows for _k, rows in calls] == [3 * 4, 3 * 4]  # uncond, cond, two concept chunks: one call per step
    maps = {(r.image, s) for r in heat.take_results() for s in r.maps.positive}
    assert maps == {(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1)}  # no map of a filler row
    for i, prompt in enumerate(prompts):
        alone, q = neo_double.generate(neo, model, [prompt], (GuidanceFeature(),), steps=2, latent=latent[i : i + 1])
        assert not q.comments
        assert torch.allclose(batch[i : i + 1], alone, atol=1e-3, rtol=1e-4), (i, (batch[i] - alone[0]).abs().max())
    plain, _ = neo_double.generate(neo, model, prompts, (GuidanceFeature(enabled=False),), steps=2, latent=latent)
    assert (plain[0] - batch[0]).abs().max() > 0.1  # guidance acted on the image with concepts
    _clean(model)


def test_a_model_switch_sd1_to_sdxl_and_back_mid_session(neo):
    """Neo builds a new `forge_objects` per model; nothing of ours may stay on either model across the switch."""
    from promptscope_lib_ext.guidance.feature import GuidanceFeature
    from promptscope_lib_ext.heatmaps.feature import HeatmapFeature

    sd1 = _model(neo, "sd1")
    prompts = ["a cat AND_PERP a dog :0.8"]
    plain_sd1, _ = neo_double.generate(neo, sd1, ["a cat"], steps=2)
    first, _ = neo_double.generate(neo, sd1, prompts, (GuidanceFeature(), HeatmapFeature()), steps=2)
    _clean(sd1)
    sdxl = _model(neo, "sdxl")  # loading a model unloads the one before, as in the WebUI
    heat = HeatmapFeature()
    _xl, p = neo_double.generate(neo, sdxl, prompts, (GuidanceFeature(), heat), steps=2)
    assert not p.comments and heat.take_results()
    _clean(sdxl)
    sd1 = _model(neo, "sd1")
    again, _ = neo_double.generate(neo, sd1, prompts, (GuidanceFeature(), HeatmapFeature()), steps=2)
    assert torch.equal(first, again)
    assert torch.equal(plain_sd1, neo_double.generate(neo, sd1, ["a cat"], steps=2)[0])
    _clean(sd1)


def test_the_same_scripts_load_the_forge_glue_and_unload_completely(neo):
    import sys

    from promptscope_webui import load_promptscope

    for name in [n for n in sys.modules if n.startswith("promptscope_")]:  # as in a fresh WebUI process
        del sys.modules[name]
    load_promptscope(neo)
    try:
        runner = neo.scripts.scripts_txt2img
        by_title = {s.title(): s for s in runner.alwayson_scripts}
        assert {"PromptScope", "PromptScope: Semantic guidance", "PromptScope: Attention heatmaps"} <= set(by_title)
        assert type(by_title["PromptScope"]).__module__ == "promptscope_forge.base_script"
        names = [c.name for c in neo.script_callbacks.callback_map["callbacks_script_unloaded"]]
        assert any("promptscope" in n for n in names)
        assert not getattr(neo.errors, "reported", [])
    finally:
        neo.script_callbacks.script_unloaded_callback()
    left = [n for n in sys.modules if n.split(".")[0] in ("promptscope_forge", "promptscope_adapter")]
    assert left == []
    names = [c.name for c in neo.script_callbacks.callback_map["callbacks_script_unloaded"]]
    assert not any("promptscope" in n for n in names)


def test_a_failure_of_our_rows_is_a_message_not_a_lost_image(neo, monkeypatch):
    from promptscope_lib_ext.guidance.feature import GuidanceFeature

    from promptscope_forge import sampling

    def broken(_tensors):
        raise TypeError("no padding today")

    monkeypatch.setattr(sampling, "_lcm_pad", broken)
    model = _model(neo)
    out, p = neo_double.generate(neo, model, ["a cat AND_PERP a dog :0.8"], (GuidanceFeature(),), steps=2)
    assert torch.isfinite(out).all()
    assert any("no padding today" in c for c in p.comments), p.comments
    _clean(model)
