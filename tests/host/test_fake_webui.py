"""The fake WebUI behaves like A1111 v1.10.1 where PromptScope depends on it."""

from __future__ import annotations

import os
import sys
import textwrap

import numpy as np
import pytest
import torch


def txt2img(m, **kw):
    args = dict(
        prompt="a cat",
        negative_prompt="ugly",
        steps=3,
        width=64,
        height=64,
        sampler_name="Euler",
        seed=7,
        do_not_save_samples=True,
        do_not_save_grid=True,
    )
    args.update(kw)
    return m.processing.StableDiffusionProcessingTxt2Img(**args)


# ---------------------------------------------------------------- prompt_parser


def test_multicond_prompt_list_weights_and_dedup(fake_webui):
    pp = fake_webui.prompt_parser
    res, flat, index = pp.get_multicond_prompt_list(["a AND b :0.5", "b:0.5 AND a", "c AND c"])
    # whitespace before a sub-prompt is part of its text, so " b" and "b" are different sub-prompts
    assert list(flat) == ["a", " b", "b", " a", "c", " c"]
    assert res == [[(0, 1.0), (1, 0.5)], [(2, 0.5), (3, 1.0)], [(4, 1.0), (5, 1.0)]]
    assert index["b"] == 2
    res, flat, _ = pp.get_multicond_prompt_list(["x AND y", "x AND y"])
    assert list(flat) == ["x", " y"] and res[0] == res[1]
    assert pp.re_AND.split("SAND AND x") == ["SAND ", " x"]


def test_reconstruct_multicond_batch_layout(sd_model, fake_webui):
    pp = fake_webui.prompt_parser
    c = pp.get_multicond_learned_conditioning(sd_model, ["cat AND dog :-0.5", "fox"], steps=10)
    conds_list, tensor = pp.reconstruct_multicond_batch(c, 0)
    assert conds_list == [[(0, 1.0), (1, -0.5)], [(2, 1.0)]]
    assert tensor.shape == (3, 77, 32)
    single = {t: sd_model.get_learned_conditioning([t])[0] for t in ("cat", " dog", "fox")}
    for row, text in enumerate(("cat", " dog", "fox")):
        assert torch.allclose(tensor[row], single[text], atol=1e-5)
    uc = pp.get_learned_conditioning(sd_model, ["", ""], steps=10)
    assert pp.reconstruct_cond_batch(uc, 3).shape == (2, 77, 32)


def test_reconstruct_pads_longer_prompts_by_repeating_last_vector(sd_model, fake_webui):
    pp = fake_webui.prompt_parser
    long = " ".join(["word"] * 80)
    c = pp.get_multicond_learned_conditioning(sd_model, [f"short AND {long}"], steps=5)
    _, tensor = pp.reconstruct_multicond_batch(c, 0)
    assert tensor.shape == (2, 154, 32)
    assert torch.equal(tensor[0, 77:], tensor[0, 76:77].expand(77, -1))


def test_sdxl_conds_are_dicts_with_shape(sdxl_model, fake_webui):
    pp = fake_webui.prompt_parser
    c = pp.get_multicond_learned_conditioning(sdxl_model, pp.SdConditioning(["a AND b", "c"], width=64, height=64), 5)
    conds_list, tensor = pp.reconstruct_multicond_batch(c, 0)
    assert isinstance(tensor, pp.DictWithShape) and set(tensor) == {"crossattn", "vector"}
    assert tensor.shape == tensor["crossattn"].shape == (3, 77, 48)
    assert tensor["vector"].shape == (3, 48)
    uc = pp.get_learned_conditioning(sdxl_model, pp.SdConditioning(["", ""], is_negative_prompt=True), 5)
    uncond = pp.reconstruct_cond_batch(uc, 0)
    assert isinstance(uncond, pp.DictWithShape) and uncond.shape == (2, 77, 48)
    assert torch.count_nonzero(uncond["crossattn"]) == 0  # empty negative prompt is zeroed on SDXL


def test_prompt_editing_schedules(fake_webui):
    g = fake_webui.prompt_parser.get_learned_conditioning_prompt_schedules
    assert g(["a [b:c:3] d"], 10) == [[[3, "a b d"], [10, "a c d"]]]
    assert g(["a [b:0.5]"], 10) == [[[5, "a "], [10, "a b"]]]
    assert g(["a [b::2]"], 10) == [[[2, "a b"], [10, "a "]]]
    assert g(["[x|y]"], 3) == [[[1, "x"], [2, "y"], [3, "x"]]]
    assert g(["a [b:c:1.5]"], 10, 10) == [[[5, "a b"], [10, "a c"]]]  # hires: fractions count from 1.0
    assert g(["a [unbalanced", "a | b [c:d:2]"], 10) == [[[10, "a [unbalanced"]], [[10, "a | b [c:d:2]"]]]


def test_conds_switch_at_the_scheduled_step(sd_model, fake_webui):
    pp = fake_webui.prompt_parser
    c = pp.get_multicond_learned_conditioning(sd_model, ["[cat:dog:2] AND fox"], steps=4)
    at = {step: pp.reconstruct_multicond_batch(c, step)[1] for step in (0, 2, 3)}
    cat, dog, fox = (sd_model.get_learned_conditioning([t])[0] for t in ("cat", "dog", "fox"))
    assert torch.allclose(at[0][0], cat, atol=1e-5) and torch.allclose(at[2][0], cat, atol=1e-5)
    assert torch.allclose(at[3][0], dog, atol=1e-5) and torch.allclose(at[3][1], fox, atol=1e-5)


def test_parse_prompt_attention_semantics(fake_webui):
    parse = fake_webui.prompt_parser.parse_prompt_attention
    assert parse("normal text") == [["normal text", 1.0]]
    assert parse("an (important) word") == [["an ", 1.0], ["important", 1.1], [" word", 1.0]]
    assert parse("(unbalanced") == [["unbalanced", 1.1]]
    assert parse(r"\(literal\]") == [["(literal]", 1.0]]
    assert parse("(unnecessary)(parens)") == [["unnecessaryparens", 1.1]]
    got = parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    want = [
        ["a ", 1.0],
        ["house", 1.1 * 1.1 * 1.3],
        [" ", 1.1],
        ["on", 1.0],
        [" a ", 1.1],
        ["hill", 0.55],
        [", sun, ", 1.1],
        ["sky", 1.1**4],
        [".", 1.1],
    ]
    assert [t for t, _ in got] == [t for t, _ in want]
    assert [w for _, w in got] == pytest.approx([w for _, w in want])
    assert parse("a BREAK b") == [["a", 1.0], ["BREAK", -1], ["b", 1.0]]
    assert parse("") == [["", 1.0]]


# ---------------------------------------------------------------- text encoder chunks


def test_tokenize_line_chunks_break_and_emphasis(sd_model, fake_webui):
    clip = sd_model.cond_stage_model
    chunks, count = clip.tokenize_line("a (cat:1.5) on a mat")
    assert count == 5 and len(chunks) == 1
    ch = chunks[0]
    assert len(ch.tokens) == len(ch.multipliers) == 77
    assert ch.tokens[0] == 49406 and ch.tokens[6:] == [49407] * 71
    assert ch.multipliers[:7] == pytest.approx([1.0, 1.0, 1.5, 1.0, 1.0, 1.0, 1.0])

    chunks, count = clip.tokenize_line("one BREAK two")
    assert len(chunks) == 2 and count == 75 + 1
    assert chunks[1].tokens[1] == clip.tokenize(["two"])[0][0]

    words = " ".join(f"w{i}" for i in range(40))  # 80 tokens: "w" and a digit... each word = letters + digits
    chunks, count = clip.tokenize_line(words)
    assert len(chunks) == 2 and all(len(c.tokens) == 77 for c in chunks)


def test_comma_backtrack_moves_tail_to_next_chunk(sd_model):
    clip = sd_model.cond_stage_model
    prompt = " ".join(["w"] * 70) + " , " + " ".join(["x"] * 10)
    chunks, _ = clip.tokenize_line(prompt)
    # the comma is token 71; the 4 "x" tokens after it that did not fit are moved with the rest of the clause
    assert chunks[0].tokens[72] == 49407 and chunks[1].tokens[1:11] == [clip.tokenize(["x"])[0][0]] * 10


def test_cond_shape_grows_by_77_per_chunk(sd_model):
    assert sd_model.get_learned_conditioning(["a BREAK b BREAK c"]).shape == (1, 231, 32)


# ---------------------------------------------------------------- CFGDenoiser


def test_combine_denoised_numbers(fake_webui):
    denoiser = fake_webui.sd_samplers_cfg_denoiser.CFGDenoiser(sampler=None)
    # rows: image0 sub-prompts (0, 1), image1 sub-prompt (2), uncond image0 (3), uncond image1 (4)
    x_out = torch.tensor([[1.0], [2.0], [3.0], [10.0], [20.0]]).reshape(5, 1, 1, 1)
    conds_list = [[(0, 1.0), (1, 0.5)], [(2, 2.0)]]
    uncond = torch.zeros(2, 77, 8)
    out = denoiser.combine_denoised(x_out, conds_list, uncond, cond_scale=3.0)
    assert out.flatten().tolist() == pytest.approx([10 + (1 - 10) * 3 + (2 - 10) * 1.5, 20 + (3 - 20) * 6])


def _record_denoiser(m):
    seen = []

    def on_denoiser(params):
        seen.append(
            dict(
                x=params.x.shape,
                sigma=params.sigma.clone(),
                cond=params.text_cond.shape,
                uncond=params.text_uncond.shape,
                step=params.sampling_step,
                total=params.total_sampling_steps,
                denoiser=params.denoiser,
                dstep=params.denoiser.step,
            )
        )

    m.script_callbacks.on_cfg_denoiser(on_denoiser)
    return seen


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
def test_forward_batch_layout_and_step_bookkeeping(sd_model, fake_webui, sampler):
    m = fake_webui
    seen = _record_denoiser(m)
    p = txt2img(m, prompt="a cat AND a dog :0.3", batch_size=2, steps=4, sampler_name=sampler)
    m.processing.process_images(p)
    calls = 4 if sampler == "Euler" else 3  # the WebUI's DDIM loop makes steps - 1 model calls
    assert len(seen) == calls
    for i, s in enumerate(seen):
        assert s["x"] == (2 * 2 + 2, 4, 8, 8)  # 2 sub-prompts per image, then one uncond row per image
        assert s["cond"] == (4, 77, 32) and s["uncond"] == (2, 77, 32)
        assert s["denoiser"].p is p and s["dstep"] == i and s["total"] == 4
    # state.sampling_step is set by the sampler callback AFTER each model call: it lags one step behind
    assert [s["step"] for s in seen] == [0, *range(calls - 1)]
    if sampler == "DDIM":
        assert type(seen[0]["denoiser"]).__name__ == "CFGDenoiserTimesteps"
        assert seen[0]["sigma"].dtype == torch.float32 and seen[0]["sigma"][0] > 100  # timesteps, not sigmas
    else:
        assert type(seen[0]["denoiser"]).__name__ == "CFGDenoiserKDiffusion"
        assert seen[0]["sigma"][0] == pytest.approx(14.61, abs=0.01)


@pytest.mark.parametrize("sampler", ["Euler", "DDIM"])
def test_batch_cond_uncond_off_gives_same_result(sd_model, fake_webui, sampler):
    m = fake_webui
    prompts = dict(prompt="a cat AND a dog :0.3", negative_prompt="blurry", batch_size=2, sampler_name=sampler)
    on = m.processing.process_images(txt2img(m, **prompts)).images
    m.shared.opts.batch_cond_uncond = False
    calls = []
    sd_model_apply = sd_model.apply_model
    sd_model.apply_model = lambda x, t, cond: calls.append(x.shape[0]) or sd_model_apply(x, t, cond)
    off = m.processing.process_images(txt2img(m, **prompts)).images
    assert set(calls) == {2}  # chunks of batch_size rows
    for a, b in zip(on, off):  # equal up to float rounding of different batch shapes
        diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
        assert diff.max() <= 2 and diff.mean() < 0.05


def test_different_token_lengths_run_cond_and_uncond_separately(sd_model, fake_webui):
    m = fake_webui
    calls = []
    sd_model_apply = sd_model.apply_model
    sd_model.apply_model = lambda x, t, cond: calls.append(cond["c_crossattn"][0].shape) or sd_model_apply(x, t, cond)
    m.processing.process_images(txt2img(m, prompt="a BREAK b", steps=1))
    assert calls == [(1, 154, 32), (1, 77, 32)]
    calls.clear()
    m.shared.opts.pad_cond_uncond = True
    p = txt2img(m, prompt="a BREAK b", steps=1)
    m.processing.process_images(p)
    assert calls == [(2, 154, 32)] and p.extra_generation_params["Pad conds"] is True


def test_skip_early_cond_uses_first_subprompt_as_fake_uncond(sd_model, fake_webui):
    m = fake_webui
    m.shared.opts.skip_early_cond = 0.5
    seen = []
    m.script_callbacks.on_cfg_denoised(lambda params: seen.append(params.x.clone()))
    rows = []
    sd_model_apply = sd_model.apply_model
    sd_model.apply_model = lambda x, t, cond: rows.append(x.shape[0]) or sd_model_apply(x, t, cond)
    p = txt2img(m, prompt="a AND b", steps=4)
    m.processing.process_images(p)
    assert rows == [2, 2, 2, 3]  # steps 0..2 satisfy step/total <= 0.5 (0, .25, .5): uncond skipped
    assert torch.equal(seen[0][-1], seen[0][0]) and p.extra_generation_params["Skip Early CFG"] == 0.5


def test_callback_fields_are_read_back(sd_model, fake_webui):
    m = fake_webui
    p1 = m.processing.process_images(txt2img(m, prompt="a cat", negative_prompt="ugly"))

    def swap(params):  # replace the text cond with the uncond: the result must equal prompt == negative
        params.text_cond = params.text_uncond.clone()

    m.script_callbacks.on_cfg_denoiser(swap)
    p2 = m.processing.process_images(txt2img(m, prompt="a cat", negative_prompt="ugly"))
    m.script_callbacks.remove_callbacks_for_function(swap)
    p3 = m.processing.process_images(txt2img(m, prompt="ugly", negative_prompt="ugly"))
    assert list(p2.images[0].getdata()) == list(p3.images[0].getdata())
    assert list(p1.images[0].getdata()) != list(p2.images[0].getdata())


# ---------------------------------------------------------------- processing and scripts


def write_extension(root, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
    return str(root)


RECORDER = """
    from modules import scripts

    log = []

    class Recorder(scripts.Script):
        def title(self):
            return "Recorder"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            import gradio as gr
            return [gr.Checkbox(value=True, label="on"), gr.Slider(value=0.5, label="w")]

        def _rec(name):
            def hook(self, p, *args, **kwargs):
                log.append((name, args[-2:] if name not in ("post_sample", "postprocess_image",
                            "postprocess_batch_list", "postprocess") else args[1:], sorted(kwargs)))
            return hook

        for _n in ("setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate",
                   "process_batch", "process_before_every_sampling", "before_hr", "post_sample", "postprocess_batch",
                   "postprocess_batch_list", "postprocess_image", "postprocess"):
            locals()[_n] = _rec(_n)
"""


@pytest.fixture
def recorder(fake_webui, sd_model, tmp_path):
    ext = write_extension(tmp_path / "ext-recorder", {"scripts/recorder.py": RECORDER})
    fake_webui.scripts.load_scripts(ext)
    runner = fake_webui.scripts.scripts_txt2img
    script = runner.alwayson_scripts[0]
    return runner, script


def run_with_scripts(m, runner, args, **kw):
    p = txt2img(m, **kw)
    p.scripts = runner
    p.script_args = args
    return p, m.processing.process_images(p)


@pytest.mark.slow
def test_hook_order_args_and_kwargs(fake_webui, recorder):
    m = fake_webui
    runner, script = recorder
    assert (script.args_from, script.args_to) == (1, 3) and script.alwayson and script.name == "recorder"
    log = m.script_loading.loaded_scripts[script.filename].log
    p, res = run_with_scripts(
        m,
        runner,
        (0, False, 0.25),
        n_iter=2,
        batch_size=2,
        enable_hr=True,
        hr_scale=1.5,
        denoising_strength=0.5,
        steps=2,
    )
    names = [n for n, _, _ in log]
    batch = [
        "before_process_batch",
        "after_extra_networks_activate",
        "process_batch",
        "process_before_every_sampling",
        "after_extra_networks_activate",
        "before_hr",
        "process_before_every_sampling",
        "post_sample",
        "postprocess_batch",
        "postprocess_batch_list",
        "postprocess_image",
        "postprocess_image",
    ]
    assert names == ["setup", "before_process", "process", *batch, *batch, "postprocess"]
    by_name = {n: (a, k) for n, a, k in log}
    assert by_name["process"][0] == (False, 0.25)
    assert by_name["before_process_batch"][1] == ["batch_number", "prompts", "seeds", "subseeds"]
    assert by_name["process_before_every_sampling"][1] == ["c", "noise", "uc", "x"]
    assert by_name["postprocess_batch"][1] == ["batch_number", "images"]
    assert by_name["postprocess"][0] == (False, 0.25)
    assert len(res.images) == 4 and res.index_of_first_image == 0  # do_not_save_grid: no grid
    assert res.images[0].size == (96, 96)


def test_postprocess_skipped_when_sampling_raises_but_not_on_interrupt(fake_webui, recorder, sd_model):
    m = fake_webui
    runner, script = recorder
    log = m.script_loading.loaded_scripts[script.filename].log
    original = sd_model.apply_model

    def broken(*a, **k):
        raise RuntimeError("boom")

    sd_model.apply_model = broken
    with pytest.raises(RuntimeError):
        run_with_scripts(m, runner, (0, True, 0.5))
    names = [n for n, _, _ in log]
    assert "process_before_every_sampling" in names and "postprocess" not in names and "post_sample" not in names

    log.clear()
    sd_model.apply_model = original
    steps = []

    def interrupt_after_first(params):
        steps.append(params.sampling_step)
        m.shared.state.interrupt()

    m.script_callbacks.on_cfg_denoiser(interrupt_after_first)
    m.shared.state.begin()
    p, res = run_with_scripts(m, runner, (0, True, 0.5), n_iter=3, steps=5)
    assert steps == [0]  # the next denoiser call raised InterruptedException, sampling returned the last latent
    names = [n for n, _, _ in log]
    assert names.count("post_sample") == 1 and names[-1] == "postprocess"
    assert len(res.images) == 1


def test_setup_runs_once_when_scripts_and_args_are_both_set(fake_webui, recorder):
    m = fake_webui
    runner, script = recorder
    log = m.script_loading.loaded_scripts[script.filename].log
    p = txt2img(m)
    p.script_args = (0, True, 0.5)
    assert log == []
    p.scripts = runner
    assert [n for n, _, _ in log] == ["setup"]
    p.script_args = (0, True, 0.5)
    assert [n for n, _, _ in log] == ["setup"]


# ---------------------------------------------------------------- loading


def test_load_scripts_runs_each_file_as_its_own_module(fake_webui, tmp_path):
    m = fake_webui
    ext = write_extension(
        tmp_path / "my-ext",
        {
            "lib_probe/__init__.py": "VALUE = 42\n",
            "scripts/a.py": """
                import sys
                from modules import script_callbacks, scripts
                import lib_probe

                NAME = __name__
                BASEDIR = scripts.basedir()
                ON_PATH = sys.path[0]
                IN_SYS_MODULES = __name__ in sys.modules

                def cb(params):
                    pass

                script_callbacks.on_cfg_denoiser(cb)
                script_callbacks.on_script_unloaded(lambda: None)

                def drop_mine():
                    script_callbacks.remove_current_script_callbacks()
            """,
            "scripts/b.py": """
                from modules import script_callbacks

                def cb(params):
                    pass

                script_callbacks.on_cfg_denoiser(cb)
            """,
            "scripts/notes.txt": "not python\n",
        },
    )
    try:
        m.scripts.load_scripts(ext, initialize=False)
        mods = m.script_loading.loaded_scripts
        a = mods[os.path.join(ext, "scripts", "a.py")]
        assert a.NAME == "a.py" and not a.IN_SYS_MODULES and "a.py" not in sys.modules
        assert ext == a.BASEDIR and ext == a.ON_PATH
        assert ext not in sys.path and m.scripts.basedir() != ext
        assert sys.modules["lib_probe"].VALUE == 42  # packages imported by scripts stay cached BY NAME
        cbs = m.script_callbacks.callback_map["callbacks_cfg_denoiser"]
        assert [os.path.basename(c.script) for c in cbs] == ["a.py", "b.py"]
        assert cbs[0].name == "my-ext/a.py/cfg_denoiser"
        m.script_callbacks.ordered_callbacks("cfg_denoiser")  # fill the ordering cache too
        a.drop_mine()
        assert [os.path.basename(c.script) for c in cbs] == ["b.py"]
        assert [os.path.basename(c.script) for c in m.script_callbacks.ordered_callbacks("cfg_denoiser")] == ["b.py"]
        assert m.script_callbacks.callback_map["callbacks_script_unloaded"] == []
        # reloading clears every callback first, then registers again
        m.scripts.load_scripts(ext, initialize=False)
        assert len(m.script_callbacks.callback_map["callbacks_cfg_denoiser"]) == 2
    finally:
        sys.modules.pop("lib_probe", None)


def test_script_unloaded_callbacks_run_in_reverse_order(fake_webui):
    sc = fake_webui.script_callbacks
    order = []
    sc.on_script_unloaded(lambda: order.append(1))
    sc.on_script_unloaded(lambda: order.append(2))
    sc.script_unloaded_callback()
    assert order == [2, 1]


def test_callback_errors_are_reported_not_raised(fake_webui, sd_model):
    m = fake_webui

    def bad(params):
        raise ValueError("nope")

    m.script_callbacks.on_cfg_after_cfg(bad)
    m.processing.process_images(txt2img(m, steps=2))
    assert sum(isinstance(e, ValueError) for _, e in m.errors.reported) == 2


# ---------------------------------------------------------------- attention optimisation


def test_optimisation_reapplied_on_model_load_overwrites_class_patch(fake_webui, sd_model):
    import ldm.modules.attention as ldm_attention
    import sgm.modules.attention as sgm_attention

    m = fake_webui
    opt = (
        m.sd_hijack_optimizations
        if hasattr(m, "sd_hijack_optimizations")
        else sys.modules["modules.sd_hijack_optimizations"]
    )
    assert ldm_attention.CrossAttention.forward is opt.scaled_dot_product_no_mem_attention_forward  # "Automatic"
    assert ldm_attention.CrossAttention is not sgm_attention.CrossAttention

    def patched(self, x, context=None, mask=None, **kwargs):
        raise AssertionError

    ldm_attention.CrossAttention.forward = patched
    m.sd_models.reload_model_weights()  # same checkpoint: nothing happens
    assert ldm_attention.CrossAttention.forward is patched
    m.sd_models.reload_model_weights(forced_reload=True)
    assert ldm_attention.CrossAttention.forward is opt.scaled_dot_product_no_mem_attention_forward

    import modules.sd_vae

    ldm_attention.CrossAttention.forward = patched
    loaded = []
    m.script_callbacks.on_model_loaded(loaded.append)
    modules.sd_vae.reload_vae_weights(vae_file="other.vae.pt")  # a VAE change also re-hijacks and fires the callback
    assert ldm_attention.CrossAttention.forward is opt.scaled_dot_product_no_mem_attention_forward
    assert loaded == [sd_model]

    ldm_attention.CrossAttention.forward = patched
    m.shared.opts.set("cross_attention_optimization", "None")  # the settings change re-hijacks the model
    assert ldm_attention.CrossAttention.forward is opt.attention_CrossAttention_forward
    assert sgm_attention.CrossAttention.forward is opt.attention_CrossAttention_forward


def test_attention_modules_and_forwards_agree(fake_webui, sd_model):
    import ldm.modules.attention as ldm_attention

    opt = sys.modules["modules.sd_hijack_optimizations"]
    names = [n for n, mod in sd_model.model.diffusion_model.named_modules() if n.endswith("attn2")]
    assert "input_blocks.1.1.transformer_blocks.0.attn2" in names and len(names) == 7
    attn = sd_model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn2
    assert isinstance(attn, ldm_attention.CrossAttention) and attn.heads == 4
    x, ctx = torch.randn(2, 64, 32), torch.randn(2, 77, 32)
    a = opt.scaled_dot_product_attention_forward(attn, x, ctx)
    b = opt.attention_CrossAttention_forward(attn, x, ctx)
    assert torch.allclose(a, b, atol=1e-5)


def test_model_loaded_callback_fires_on_load(fake_webui):
    m = fake_webui
    loaded = []
    m.script_callbacks.on_model_loaded(loaded.append)
    model = m.sd_models.load_model("sdxl")
    assert loaded == [model] and m.shared.sd_model is model
    assert type(model.cond_stage_model).__name__ == "GeneralConditioner"
    assert hasattr(model.conditioner.embedders[0], "tokenize_line")
    names = [n for n, _ in model.model.diffusion_model.named_modules() if n.endswith("attn2")]
    assert len(names) == 8 and not any(
        n.startswith(("input_blocks.1.", "output_blocks.2.", "output_blocks.3.")) for n in names
    )
    assert "input_blocks.3.1.transformer_blocks.1.attn2" in names


# ---------------------------------------------------------------- infotext


def test_infotext_extra_params_string_list_callable_and_parse(fake_webui, sd_model):
    m = fake_webui
    p = txt2img(m, batch_size=2, negative_prompt="bad, worse")
    p.extra_generation_params["PS mode"] = "topk: 0.4"
    p.extra_generation_params["PS per image"] = ["first", "second"]
    p.extra_generation_params["PS call"] = lambda p, index, **kw: f"i{index}"
    res = m.processing.process_images(p)
    info = res.infotexts[1]
    assert 'PS mode: "topk: 0.4"' in info and "PS per image: second" in info and "PS call: i1" in info
    parsed = m.infotext_utils.parse_generation_parameters(info)
    assert parsed["PS mode"] == "topk: 0.4" and parsed["Negative prompt"] == "bad, worse"
    assert parsed["Size-1"] == "64" and parsed["Prompt"] == "a cat"
    assert m.processing.last_params_txt.startswith("a cat\nNegative prompt: bad, worse\n")
    js = res.js()
    assert '"PS call": null' in js


# ---------------------------------------------------------------- API, X/Y/Z, img2img, hires, queue

WEIGHTED = """
    from modules import scripts

    calls = []

    class Weighted(scripts.Script):
        def title(self):
            return "Weighted"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            import gradio as gr
            enabled = gr.Checkbox(value=False, label="enabled")
            weight = gr.Slider(value=0.4, label="weight")
            mode = gr.Textbox(value="sum", label="mode")
            self.infotext_fields = [(weight, "PS weight"), (mode, "PS mode")]
            return [enabled, weight, mode]

        def process(self, p, enabled, weight, mode):
            calls.append((p.is_api, enabled, weight, mode))
"""


def test_api_alwayson_args_defaults_and_infotext(fake_webui, sd_model, tmp_path):
    m = fake_webui
    ext = write_extension(tmp_path / "ext-w", {"scripts/w.py": WEIGHTED})
    m.scripts.load_scripts(ext)
    calls = m.script_loading.loaded_scripts[os.path.join(ext, "scripts", "w.py")].calls
    from modules.api import api

    base = dict(prompt="a cat", steps=2, width=64, height=64, seed=3)
    res = api.text2imgapi({**base, "alwayson_scripts": {"weighted": {"args": [True]}}})
    assert calls[-1] == (True, True, 0.4, "sum")  # args given in ui() order; missing ones are the ui() defaults
    assert len(res["images"]) == 1 and '"seed": 3' in res["info"]
    api.text2imgapi({**base, "infotext": "x\nSteps: 2, Sampler: Euler, PS weight: 0.9, PS mode: top"})
    assert calls[-1] == (True, False, 0.9, "top")
    with pytest.raises(api.HTTPException):
        api.text2imgapi({**base, "alwayson_scripts": {"nope": {"args": []}}})
    with pytest.raises(api.HTTPException):
        api.text2imgapi({**base, "alwayson_scripts": {"X/Y/Z plot": {"args": []}}})


def test_xyz_grid_axis_options_can_be_extended(fake_webui, sd_model, tmp_path):
    m = fake_webui
    m.scripts.load_scripts()
    xyz = next(x.module for x in m.scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py")
    applied = []
    xyz.axis_options.append(xyz.AxisOption("[PS] Strength", float, lambda p, x, xs: applied.append(x)))
    runner = m.scripts.scripts_txt2img
    runner.initialize_scripts(False)
    runner.setup_ui()
    script = runner.selectable_scripts[0]
    assert script.title() == "X/Y/Z plot" and (script.args_from, script.args_to) == (1, 19)
    labels = [o.label for o in script.current_axis_options]
    args = [
        1,
        0,
        "",
        [],
        labels.index("[PS] Strength"),
        "0.2, 0.8",
        [],
        0,
        "",
        [],
        False,
        True,
        False,
        False,
        False,
        False,
        False,
        0,
        False,
    ]
    p = txt2img(m, steps=1)
    p.scripts, p.script_args = runner, args
    res = runner.run(p, *p.script_args)
    assert applied == [0.2, 0.8] and len(res.images) == 3 and res.images[0].size == (64, 128)


def test_img2img_runs_t_enc_plus_one_steps(fake_webui, sd_model):
    import numpy as np
    from PIL import Image

    m = fake_webui
    seen = _record_denoiser(m)
    init = Image.fromarray((np.indices((64, 64)).sum(0) % 64 * 4).astype(np.uint8)).convert("RGB")
    p = m.processing.StableDiffusionProcessingImg2Img(
        init_images=[init],
        prompt="a cat",
        steps=10,
        width=64,
        height=64,
        denoising_strength=0.3,
        sampler_name="Euler",
        seed=1,
        do_not_save_samples=True,
    )
    res = m.processing.process_images(p)
    assert len(seen) == 4 and seen[0]["sigma"][0] < 2  # t_enc = int(0.3 * 10); t_enc + 1 calls from a lower sigma
    assert "Denoising strength: 0.3" in res.info


def test_hires_pass_uses_hr_prompt_conds_and_new_sampler(fake_webui, sd_model):
    m = fake_webui
    seen = _record_denoiser(m)
    p = txt2img(
        m,
        prompt="a cat",
        hr_prompt="a cat AND a hat",
        enable_hr=True,
        hr_scale=2,
        denoising_strength=0.5,
        steps=4,
        hr_sampler_name="DDIM",
    )
    res = m.processing.process_images(p)
    first = [s for s in seen if s["x"][2] == 8]
    second = [s for s in seen if s["x"][2] == 16]
    assert (
        len(first) == 4 and first[0]["cond"][0] == 1 and type(first[0]["denoiser"]).__name__ == "CFGDenoiserKDiffusion"
    )
    assert second and second[0]["cond"][0] == 2 and type(second[0]["denoiser"]).__name__ == "CFGDenoiserTimesteps"
    assert second[0]["denoiser"] is not first[0]["denoiser"] and p.is_hr_pass is False
    assert "Hires prompt: a cat AND a hat" in res.info and res.images[0].size == (128, 128)


def test_sdxl_txt2img_end_to_end(fake_webui, sdxl_model):
    m = fake_webui
    seen = []
    m.script_callbacks.on_cfg_denoiser(lambda params: seen.append((type(params.text_cond), params.text_cond.shape)))
    res = m.processing.process_images(txt2img(m, prompt="a AND b", negative_prompt="", batch_size=2))
    assert seen[0] == (m.prompt_parser.DictWithShape, (4, 77, 48)) and len(res.images) == 2


def test_wrap_gradio_gpu_call_begins_and_ends_job(fake_webui):
    m = fake_webui
    state = m.shared.state
    inside = []

    def work(id_task, x):
        inside.append((state.job, state.job_count))
        state.interrupt()
        return [x, "html"]

    out = m.call_queue.wrap_gradio_gpu_call(work)("task(abc)", 5)
    assert inside == [("task(abc)", -1)] and out[0] == 5 and not state.interrupted
    failing = m.call_queue.wrap_gradio_gpu_call(lambda: 1 / 0, extra_outputs=[None])
    assert "ZeroDivisionError" in failing()[-1]


def test_token_counter_counts_the_longest_sub_prompt(fake_webui, sd_model):
    m = fake_webui
    import modules.ui

    long = " ".join(["w"] * 80)
    assert modules.ui.update_token_counter(f"a b AND {long}", 20, []).endswith(">80/150</span>")
    seen = []
    m.script_callbacks.on_before_token_counter(lambda params: seen.append(params.is_positive))
    assert modules.ui.update_negative_prompt_token_counter("a, b", 20, []).endswith(">3/75</span>")
    assert seen == [False]


LIFECYCLE = """
    from modules import script_callbacks, shared

    events = []
    script_callbacks.on_model_loaded(lambda m: events.append("model_loaded"))
    script_callbacks.on_before_ui(lambda: events.append("before_ui"))
    script_callbacks.on_ui_settings(lambda: events.append("ui_settings"))
    script_callbacks.on_ui_tabs(lambda: events.append("ui_tabs") or [])
    script_callbacks.on_app_started(lambda demo, app: events.append(("app_started", type(app).__name__)))
    script_callbacks.on_before_reload(lambda: events.append("before_reload"))
    script_callbacks.on_script_unloaded(lambda: events.append("script_unloaded"))
"""


def test_boot_and_reload_fire_callbacks_in_webui_order(fake_webui, tmp_path):
    m = fake_webui
    import modules.initialize

    ext = write_extension(tmp_path / "ext-life", {"scripts/life.py": LIFECYCLE})
    modules.initialize.boot(ext, with_ui=False)
    path = os.path.join(ext, "scripts", "life.py")
    first = m.script_loading.loaded_scripts[path]
    assert first.events == ["model_loaded", "before_ui", ("app_started", "FastAPI")]
    modules.initialize.restart_ui(with_ui=False)
    second = m.script_loading.loaded_scripts[path]
    assert second is not first  # the script file ran again as a new module
    assert first.events[3:] == ["before_reload", "script_unloaded"]
    assert second.events == ["before_ui", ("app_started", "FastAPI")]  # the model is not loaded again


@pytest.mark.slow
def test_boot_with_ui_builds_script_uis_settings_and_tabs(fake_webui, tmp_path):
    m = fake_webui
    import modules.initialize

    ext = write_extension(tmp_path / "ext-life", {"scripts/life.py": LIFECYCLE, "scripts/w.py": WEIGHTED})
    demo, app = modules.initialize.boot(ext)
    events = m.script_loading.loaded_scripts[os.path.join(ext, "scripts", "life.py")].events
    assert events == ["model_loaded", "before_ui", "ui_settings", "ui_tabs", ("app_started", "FastAPI")]
    weighted = m.scripts.scripts_img2img.script("weighted")
    assert weighted.is_img2img and weighted.args_to - weighted.args_from == 3


def test_override_settings_apply_for_one_job_and_vae_override_reloads(fake_webui, sd_model):
    m = fake_webui
    loaded = []
    m.script_callbacks.on_model_loaded(loaded.append)
    seen = []
    m.script_callbacks.on_cfg_denoiser(lambda params: seen.append(m.shared.opts.batch_cond_uncond))
    p = txt2img(m, steps=1, override_settings={"batch_cond_uncond": False, "sd_vae": "x.vae.pt"})
    res = m.processing.process_images(p)
    assert seen == [False] and m.shared.opts.batch_cond_uncond is True and m.shared.opts.sd_vae == "Automatic"
    assert loaded == [sd_model, sd_model]  # VAE switched for the job and back afterwards
    assert "VAE: x.vae.pt" in res.info


def test_sampler_lifetimes_txt2img_per_batch_img2img_per_job(fake_webui, sd_model):
    from PIL import Image

    m = fake_webui
    seen = _record_denoiser(m)
    m.processing.process_images(txt2img(m, n_iter=2, steps=2))
    assert seen[0]["denoiser"] is not seen[2]["denoiser"]  # txt2img creates a sampler in every sample()
    seen.clear()
    p = m.processing.StableDiffusionProcessingImg2Img(
        init_images=[Image.new("RGB", (64, 64), "gray")],
        prompt="a",
        steps=4,
        width=64,
        height=64,
        n_iter=2,
        denoising_strength=0.5,
        sampler_name="Euler",
        seed=1,
        do_not_save_samples=True,
        do_not_save_grid=True,
    )
    m.processing.process_images(p)
    assert seen[0]["denoiser"] is seen[-1]["denoiser"] and [s["dstep"] for s in seen] == [0, 1, 2, 0, 1, 2]


def test_skip_ends_only_the_current_batch(fake_webui, sd_model):
    m = fake_webui
    steps = []

    def skip_first_batch(params):
        steps.append((params.denoiser.p.iteration, params.denoiser.step))
        if params.denoiser.p.iteration == 0:
            m.shared.state.skip()

    m.script_callbacks.on_cfg_denoiser(skip_first_batch)
    m.shared.state.begin()
    res = m.processing.process_images(txt2img(m, n_iter=2, steps=3))
    assert steps == [(0, 0), (1, 0), (1, 1), (1, 2)] and len(res.images) == 2 and not m.shared.state.skipped


def test_outputs_go_under_the_tests_tmp_path(fake_webui, sd_model, tmp_path):
    m = fake_webui
    p = txt2img(m, do_not_save_samples=False, batch_size=2, do_not_save_grid=False)
    p.outpath_samples = m.shared.opts.outdir_txt2img_samples
    p.outpath_grids = m.shared.opts.outdir_txt2img_grids
    saved = []
    m.script_callbacks.on_image_saved(lambda params: saved.append(params.filename))
    m.processing.process_images(p)
    assert len(saved) == 3 and all(f.startswith(str(tmp_path)) and os.path.exists(f) for f in saved)


def test_queue_lock_is_not_reentrant(fake_webui):
    cq = fake_webui.call_queue
    inner = cq.wrap_queued_call(lambda: 1)
    with pytest.raises(RuntimeError, match="deadlock"):
        cq.wrap_queued_call(inner)()
    assert inner() == 1  # released after the failure
