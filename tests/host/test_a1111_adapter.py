"""The A1111 adapter against the v1.10.1 test double: sessions, layouts, and fault injection.

Every fault test takes a snapshot of what PromptScope could have touched (the UNet's modules and hooks, the
CrossAttention class, callbacks, sys.modules, the sampler and denoiser instances) and asserts it is exactly as
before once the generation ended — successfully, by exception, by interrupt, across a model reload, or after a
script reload.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import torch
from promptscope_webui import REPO
from promptscope_webui import txt2img as make_txt2img

# -- helpers ------------------------------------------------------------------------------------------------


class Probe:
    """A feature that records what the seam gives it and can misbehave on request."""

    name = "probe"

    def __init__(self, *, replace_with: float | None = None, raise_at_step: int | None = None) -> None:
        self.replace_with = replace_with
        self.raise_at_step = raise_at_step
        self.steps: list[Any] = []
        self.rows: list[Any] = []
        self.jobs: list[Any] = []
        self.ended: list[bool] = []
        self.sites = 0

    def begin_sampling(self, ctx) -> None:
        from promptscope_lib_ext.attention_sites import find_cross_attention

        self.jobs.append(ctx.job)
        sites = find_cross_attention(ctx.unet)
        self.sites = len(sites)
        for site in sites:
            handle = site.module.register_forward_hook(lambda m, a, o: self.rows.append(ctx.current_rows()))
            ctx.patches.add_handle(handle, key=("probe", site.name))
        ctx.step_hooks.append(self.on_step)

    def on_step(self, step) -> torch.Tensor | None:
        self.steps.append(step)
        if self.raise_at_step is not None and step.step >= self.raise_at_step:
            raise RuntimeError("probe: failure injected during sampling")
        if self.replace_with is not None:
            return step.default_combine()
        return None

    def end_sampling(self, ctx, ok: bool) -> None:
        self.ended.append(ok)


def adapter():
    import promptscope_a1111.sampling as sampling

    return sampling


def txt2img(m, **kw):
    return make_txt2img(m, **kw)


def snapshot(m, sd_model) -> dict[str, Any]:
    unet = sd_model.model.diffusion_model
    attn_classes = {type(s) for s in unet.modules() if hasattr(s, "to_q")}
    return {
        "module_attrs": [(n, sorted(vars(mod))) for n, mod in unet.named_modules()],
        "hooks": [
            (n, len(mod._forward_hooks), len(mod._forward_pre_hooks), len(mod._backward_hooks))
            for n, mod in unet.named_modules()
        ],
        "class_forward": {c: c.__dict__.get("forward") for c in attn_classes},
        "callbacks": {k: [c.callback for c in v] for k, v in m.script_callbacks.callback_map.items()},
        "create_sampler": m.sd_samplers.create_sampler,
        "combine": m.sd_samplers_cfg_denoiser.CFGDenoiser.combine_denoised,
        "forward": m.sd_samplers_cfg_denoiser.CFGDenoiser.forward,
    }


def assert_sampler_clean(p) -> None:
    sampler = getattr(p, "sampler", None)
    if sampler is None:
        return
    assert "sample" not in vars(sampler) and "sample_img2img" not in vars(sampler)
    den = sampler.model_wrap_cfg
    assert "forward" not in vars(den) and "combine_denoised" not in vars(den)


def pixels(processed) -> np.ndarray:
    return np.asarray(processed.images[0])


def run(m, p, probe: Probe | None = None):
    if probe is not None:
        adapter().activate(p, probe)
    return m.processing.process_images(p)


# -- loading ------------------------------------------------------------------------------------------------


def test_scripts_load_as_a1111_loads_them_and_register_callbacks(webui):
    titles = [s.title() for s in webui.scripts.scripts_txt2img.alwayson_scripts]
    assert "PromptScope" in titles
    names = [c.name for c in webui.script_callbacks.callback_map["callbacks_script_unloaded"]]
    assert any("promptscope" in n for n in names)
    assert sys.modules["promptscope_a1111"].lib is sys.modules["promptscope_lib_ext"]
    assert not getattr(webui.errors, "reported", [])


def test_features_off_leave_the_generation_untouched(webui, sd_model):
    torch.manual_seed(0)
    before = snapshot(webui, sd_model)
    with_ext = run(webui, txt2img(webui))
    webui.script_callbacks.script_unloaded_callback()
    webui.scripts.scripts_txt2img.alwayson_scripts.clear()
    without = run(webui, txt2img(webui))
    assert np.array_equal(pixels(with_ext), pixels(without))
    assert snapshot(webui, sd_model)["hooks"] == before["hooks"]


# -- the seam's content -------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_cond_uncond", [True, False])
def test_rows_and_layout_with_sub_prompts_and_batches(webui, sd_model, batch_cond_uncond):
    webui.shared.opts.batch_cond_uncond = batch_cond_uncond
    probe = Probe()
    p = txt2img(webui, prompt="a cat AND a hat :0.5", batch_size=2)
    p.all_prompts = None
    run(webui, p, probe)
    step = probe.steps[0]
    assert step.layout.conds == (((0, 1.0), (1, 0.5)), ((2, 1.0), (3, 0.5)))
    assert step.x_out.shape[0] == 6 and step.prediction == "x0"
    assert step.cond_scale == p.cfg_scale
    calls_per_step = 1 if batch_cond_uncond else 3  # A1111 slices by batch size when the option is off
    seen = [r for r in probe.rows if r is not None][: probe.sites * calls_per_step]
    assert all(len(rows) == (6 if batch_cond_uncond else 2) for rows in seen)
    roles = [role for rows in seen for role in rows]
    assert {(r.image, r.subprompt, r.is_uncond) for r in roles} == {
        (0, 0, False),
        (0, 1, False),
        (1, 0, False),
        (1, 1, False),
        (0, -1, True),
        (1, -1, True),
    }
    assert probe.ended == [True]
    assert probe.jobs[0].prompts == ["a cat AND a hat :0.5"] * 2


def test_step_hook_result_replaces_the_combination(webui, sd_model):
    plain = run(webui, txt2img(webui))
    replaced = run(webui, txt2img(webui), Probe(replace_with=0.0))
    assert np.array_equal(pixels(plain), pixels(replaced))


def test_timestep_sampler_reports_eps(webui, sd_model):
    probe = Probe()
    run(webui, txt2img(webui, sampler_name="DDIM"), probe)
    assert probe.steps and probe.steps[0].prediction == "eps"


def test_hires_pass_is_its_own_session(webui, sd_model):
    probe = Probe()
    p = txt2img(webui, enable_hr=True, hr_scale=2, hr_second_pass_steps=2, denoising_strength=0.5, hr_prompt="a dog")
    run(webui, p, probe)
    assert [j.pass_name for j in probe.jobs] == ["first", "hires"]
    assert probe.jobs[1].prompts == ["a dog"]
    assert probe.ended == [True, True]


def test_sdxl_dict_conds(webui, sdxl_model):
    probe = Probe()
    run(webui, txt2img(webui, prompt="a AND b"), probe)
    assert probe.steps[0].layout.conds == (((0, 1.0), (1, 1.0)),)
    assert probe.jobs[0].model_kind == "sdxl"


def test_img2img(webui, sd_model):
    from PIL import Image

    probe = Probe()
    p = webui.processing.StableDiffusionProcessingImg2Img(
        init_images=[Image.new("RGB", (64, 64), (120, 30, 200))],
        prompt="a cat",
        steps=4,
        denoising_strength=0.5,
        width=64,
        height=64,
        sampler_name="Euler",
        seed=3,
        do_not_save_samples=True,
        do_not_save_grid=True,
    )
    p.scripts = webui.scripts.scripts_img2img
    p.script_args = [0] * max(1, max((s.args_to for s in webui.scripts.scripts_img2img.scripts), default=1))
    run(webui, p, probe)
    assert probe.steps and probe.jobs[0].is_img2img and probe.ended == [True]


def test_tokenize_gives_chunks_words_and_emphasis(webui, sd_model):
    from promptscope_a1111.host import tokenizer_for

    tokens = tokenizer_for(sd_model)("a (red:1.5) cat BREAK hat")
    assert len(tokens.chunks) == 2
    assert tokens.context_length == 154
    flat = [pc for pc in tokens.chunks[0] if pc.word_index is not None]
    words = [tokens.words[pc.word_index] for pc in flat]
    assert words[:3] == ["a", "red", "cat"]
    assert [pc.multiplier for pc in flat][:3] == [1.0, 1.5, 1.0]
    assert tokens.words[tokens.chunks[1][0].word_index] == "hat"


# -- fault injection ----------------------------------------------------------------------------------------


def test_success_restores_everything(webui, sd_model):
    before = snapshot(webui, sd_model)
    p = txt2img(webui)
    run(webui, p, Probe())
    assert snapshot(webui, sd_model) == before


def test_exception_during_sampling_restores_everything(webui, sd_model):
    """An error inside the model call (OOM, a broken host module) aborts A1111's generation and skips
    `postprocess`; everything of ours must be gone all the same."""
    before = snapshot(webui, sd_model)
    probe = Probe()
    unet = sd_model.model.diffusion_model
    calls = []

    def fail_on_second_call(module, args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("failure injected inside the UNet")

    handle = unet.register_forward_pre_hook(fail_on_second_call)
    p = txt2img(webui)
    try:
        with pytest.raises(RuntimeError, match="failure injected"):
            run(webui, p, probe)
    finally:
        handle.remove()
    assert probe.ended == [False]
    assert snapshot(webui, sd_model) == before
    assert_sampler_clean(p)


def test_a_failing_feature_costs_a_message_not_the_image(webui, sd_model):
    before = snapshot(webui, sd_model)
    probe = Probe(raise_at_step=1)
    p = txt2img(webui, steps=4)
    processed = run(webui, p, probe)
    assert processed.images and probe.ended == [True]
    assert "failure injected" in processed.comments
    assert len(probe.steps) == 2  # dropped after it raised
    assert snapshot(webui, sd_model) == before


def test_interrupt_restores_everything(webui, sd_model):
    before = snapshot(webui, sd_model)
    probe = Probe()
    original = probe.on_step

    def interrupt_after_first(step):
        webui.shared.state.interrupted = True
        return original(step)

    probe.on_step = interrupt_after_first
    p = txt2img(webui, steps=6)
    run(webui, p, probe)
    assert len(probe.steps) < 6
    assert probe.ended == [True]
    assert snapshot(webui, sd_model) == before
    webui.shared.state.interrupted = False


@pytest.mark.parametrize("switch", [False, True], ids=["reload-in-place", "switch-model"])
def test_model_reload_mid_sampling_restores_both_models(webui, sd_model, switch):
    first = sd_model
    before_first = snapshot(webui, first)
    probe = Probe()
    original = probe.on_step
    loaded: list[Any] = []

    def reload_once(step):
        if not loaded:
            if switch:  # as the SDXL refiner does: another model object mid-call
                loaded.append(webui.sd_models.load_model("sd1"))
            else:  # same object, weights reloaded, hijack and optimisations re-applied
                loaded.append(webui.sd_models.reload_model_weights(forced_reload=True))
        return original(step)

    probe.on_step = reload_once
    p = txt2img(webui, steps=4)
    run(webui, p, probe)
    assert probe.ended == [True]
    second = webui.shared.sd_model
    assert (second is not first) == switch
    assert snapshot(webui, first)["hooks"] == before_first["hooks"]
    assert snapshot(webui, first)["module_attrs"] == before_first["module_attrs"]
    unet2 = second.model.diffusion_model
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in unet2.modules())
    assert_sampler_clean(p)


def test_optimisation_reapplied_on_load_does_not_disturb_capture(webui, sd_model):
    probe = Probe()
    webui.sd_hijack.model_hijack.apply_optimizations()
    run(webui, txt2img(webui), probe)
    assert any(r is not None for r in probe.rows)


def test_script_unload_mid_sampling_restores_and_unregisters(webui, sd_model):
    before = snapshot(webui, sd_model)
    probe = Probe()
    original = probe.on_step

    def unload(step):
        webui.script_callbacks.script_unloaded_callback()
        return original(step)

    probe.on_step = unload
    p = txt2img(webui)
    run(webui, p, probe)
    after = snapshot(webui, sd_model)
    assert after["hooks"] == before["hooks"] and after["module_attrs"] == before["module_attrs"]
    assert_sampler_clean(p)
    names = [c.name for cbs in webui.script_callbacks.callback_map.values() for c in cbs]
    assert not any("promptscope" in n for n in names)
    assert "promptscope_a1111" not in sys.modules and "promptscope_lib_ext" not in sys.modules


def test_reload_scripts_twice_registers_once(webui, sd_model):
    webui.script_callbacks.script_unloaded_callback()
    webui.scripts.load_scripts(str(REPO))
    webui.scripts.load_scripts(str(REPO))
    names = [c.name for c in webui.script_callbacks.callback_map["callbacks_model_loaded"]]
    assert sum("promptscope" in n for n in names) == 1
    probe = Probe()
    run(webui, txt2img(webui), probe)
    assert probe.ended == [True]


# -- jobs and results ---------------------------------------------------------------------------------------


def test_run_jobs_generates_in_order_with_progress_and_infotext(webui, sd_model):
    from promptscope_lib_ext.seam import GenerationRequest

    from promptscope_a1111.host import run_jobs

    events: list[tuple[int, int, str]] = []
    requests = [
        GenerationRequest("a cat", "ugly", seed=11, settings={"steps": 2, "width": 64, "height": 64}),
        GenerationRequest(
            "a dog", "", seed=12, settings={"steps": 2, "width": 64, "height": 64}, infotext={"PromptScope arm": "2"}
        ),
    ]
    results = run_jobs(requests, progress=lambda d, t, msg: events.append((d, t, msg)))
    assert [r.seed for r in results] == [11, 12]
    assert "a dog" in results[1].infotext and "PromptScope arm: 2" in results[1].infotext
    assert "Seed: 11" in results[0].infotext
    assert [e[:2] for e in events] == [(0, 2), (1, 2), (2, 2)]


def test_run_jobs_stops_when_interrupted(webui, sd_model):
    from promptscope_lib_ext.seam import GenerationRequest

    from promptscope_a1111.host import run_jobs

    requests = [GenerationRequest(f"p{i}", seed=i, settings={"steps": 1}) for i in range(3)]

    def interrupt(done, total, msg):
        if done == 1:
            webui.shared.state.interrupted = True

    try:
        results = run_jobs(requests, progress=interrupt)
    finally:
        webui.shared.state.interrupted = False
    assert len(results) == 1


def test_attach_images_and_infotext_keys(webui, sd_model):
    from PIL import Image

    from promptscope_a1111.host import add_infotext, attach_images

    p = txt2img(webui)
    add_infotext(p, "PromptScope test", "a, b: c")
    processed = run(webui, p)
    assert 'PromptScope test: "a, b: c"' in processed.infotexts[0]
    params = webui.infotext_utils.parse_generation_parameters(processed.infotexts[0])
    assert params["PromptScope test"] == "a, b: c"
    n = len(processed.images)
    attach_images(processed, [Image.new("RGB", (8, 8))], ["heatmap: cat"])
    assert len(processed.images) == n + 1 and processed.infotexts[-1] == "heatmap: cat"


def test_rewritten_prompts_give_rows_while_features_and_infotext_keep_the_users(webui, sd_model):
    from promptscope_a1111.host import rewrite_batch_prompts

    class Rewriter(webui.scripts.Script):
        def title(self):
            return "rewriter"

        def show(self, is_img2img):
            return webui.scripts.AlwaysVisible

        def process_batch(self, p, *args, **kwargs):
            rewrite_batch_prompts(p, lambda ps, _tagged: [x.replace(" AND_TOPK ", " AND ") for x in ps])

    runner = webui.scripts.scripts_txt2img
    rewriter = Rewriter()
    rewriter.args_from = rewriter.args_to = 0
    runner.alwayson_scripts.insert(0, rewriter)
    runner.scripts.insert(0, rewriter)
    probe = Probe()
    p = make_txt2img(
        webui,
        {"PromptScope: Semantic guidance": ["off"]},  # the keyword would switch our guidance on by itself
        prompt="a cat AND_TOPK red :0.5",
        enable_hr=True,
        hr_scale=2,
        hr_second_pass_steps=1,
        denoising_strength=0.5,
    )
    processed = run(webui, p, probe)
    first, hires = probe.jobs
    assert first.prompts == ["a cat AND_TOPK red :0.5"] and first.host_prompts == ["a cat AND red :0.5"]
    assert first.subprompts(0) == ["a cat", " red"]
    assert hires.prompts == ["a cat AND_TOPK red :0.5"] and hires.pass_name == "hires"
    assert probe.steps[0].layout.conds == (((0, 1.0), (1, 0.5)),)
    assert processed.infotexts[0].startswith("a cat AND_TOPK red :0.5")
