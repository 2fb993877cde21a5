"""Differential checks: the double against the real v1.10.1 source, when a checkout of it is available.

The real source is read with ``git show HEAD:<path>`` from ``PROMPTSCOPE_A1111_GIT`` (a git directory, bare or not,
holding A1111 v1.10.1), else from the live tier's checkout ``PROMPTSCOPE_WEBUI``; skipped, saying so, when neither is
set. The real functions are executed against the fake ``modules`` package, so the same inputs go through both
implementations. The live tier (tools/live.sh) runs this file with its checkout; prompt-editing schedules need
``lark`` (an A1111 pin, in requirements-dev.txt).
"""

from __future__ import annotations

import itertools
import os
import random
import re
import subprocess
import textwrap
import types

import pytest
import torch

SOURCE_ENV = ("PROMPTSCOPE_A1111_GIT", "PROMPTSCOPE_WEBUI")
A1111_GIT = next((os.environ[k].strip() for k in SOURCE_ENV if os.environ.get(k, "").strip()), "")


def real_source(path: str) -> str:
    if not A1111_GIT:
        pytest.skip(
            "differential checks: set PROMPTSCOPE_A1111_GIT to a git directory holding A1111 v1.10.1 "
            "(or PROMPTSCOPE_WEBUI to a WebUI checkout) to compare the double with the real source"
        )
    try:
        out = subprocess.run(
            ["git", "-C", A1111_GIT, "show", f"HEAD:{path}"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is None or out.returncode != 0:
        pytest.fail(f"A1111 source not readable at {A1111_GIT} (git show HEAD:{path})", pytrace=False)
    return out.stdout


def real_prompt_functions() -> dict:
    src = real_source("modules/prompt_parser.py")
    start, end = src.index("re_AND = re.compile"), src.index('if __name__ == "__main__":')
    ns = {"re": re, "torch": torch, "SdConditioning": list, "ScheduledPromptConditioning": None}
    exec(compile(src[start:end], "a1111/prompt_parser.py", "exec"), ns)
    return ns


def random_prompts(n: int, seed: int):
    alphabet = [*"ab ()[]:\\,.15-+", " BREAK ", "AND", " AND ", ":0.5", ":1.2)", "\\(", "(x:", ")]", "BREAK"]
    rnd = random.Random(seed)
    for _ in range(n):
        yield "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 14)))


def outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as e:
        return type(e).__name__


def test_prompt_parsing_matches_a1111(fake_webui):
    real = real_prompt_functions()
    pp = fake_webui.prompt_parser
    for s in random_prompts(20000, seed=0):
        assert outcome(pp.parse_prompt_attention, s) == outcome(real["parse_prompt_attention"], s), s
        mine = pp.get_multicond_prompt_list([s, s + " AND x"])
        theirs = real["get_multicond_prompt_list"]([s, s + " AND x"])
        assert (mine[0], list(mine[1]), mine[2]) == (theirs[0], list(theirs[1]), theirs[2]), s


def well_formed_prompts(n: int, seed: int):
    """Prompts without stray brackets: for those, lark's Earley parser picks a derivation that depends on the
    process's hash seed (the WebUI's own schedules are not deterministic there), so they cannot be compared."""
    rnd = random.Random(seed)

    def words():
        return rnd.choice(["a", "b c", " d ", "", "e,f", "AND g"])

    def number():
        return rnd.choice(["3", "0.5", ".25", "1.5", "12", " 2 ", "-1", "1e1"])

    def gen(depth=0):
        k = rnd.randint(0, 9 if depth < 2 else 1)
        if k <= 1:
            return words()
        inner = [gen(depth + 1) for _ in range(3)]
        return {
            2: f"({inner[0]})",
            3: f"({inner[0]}:1.2)",
            4: f"[{inner[0]}]",
            5: f"[{inner[0]}:{inner[1]}:{number()}]",
            6: f"[{inner[0]}:{number()}]",
            7: f"[{inner[0]}::{number()}]",
            8: "[" + "|".join(inner[: rnd.randint(2, 3)]) + "]",
            9: inner[0] + inner[1],
        }[k]

    for _ in range(n):
        yield "".join(gen() for _ in range(rnd.randint(1, 4)))


@pytest.mark.slow
def test_prompt_editing_schedules_match_a1111(fake_webui):
    lark = pytest.importorskip("lark")
    src = real_source("modules/prompt_parser.py")
    start, end = src.index("schedule_parser = lark.Lark"), src.index("ScheduledPromptConditioning = namedtuple")
    ns = {"lark": lark, "re": re}
    exec(compile(src[start:end], "a1111/prompt_parser.py", "exec"), ns)
    mine = fake_webui.prompt_parser.get_learned_conditioning_prompt_schedules
    for prompt in well_formed_prompts(150, seed=2):
        for args in ((10,), (10, 10), (10, None, True), (7, 5)):
            assert mine([prompt], *args) == ns["get_learned_conditioning_prompt_schedules"]([prompt], *args), prompt


def test_tokenize_line_matches_a1111(fake_webui, sd_model):
    src = real_source("modules/sd_hijack_clip.py")
    i, j = src.index("    def tokenize_line(self, line):"), src.index("    def process_texts(self, texts):")

    class PromptChunk:
        def __init__(self):
            self.tokens, self.multipliers, self.fixes = [], [], []

    ns = {"opts": fake_webui.shared.opts, "prompt_parser": fake_webui.prompt_parser, "PromptChunk": PromptChunk}
    exec(compile(textwrap.dedent(src[i:j]), "a1111/sd_hijack_clip.py", "exec"), ns)
    clip = sd_model.cond_stage_model
    no_embeddings = types.SimpleNamespace(find_embedding_at_position=lambda tokens, offset: (None, None))
    shim = types.SimpleNamespace(
        hijack=types.SimpleNamespace(embedding_db=no_embeddings),
        tokenize=clip.tokenize,
        chunk_length=clip.chunk_length,
        comma_token=clip.comma_token,
        id_start=clip.id_start,
        id_end=clip.id_end,
    )
    real_tokenize_line = types.MethodType(ns["tokenize_line"], shim)
    words = ["a", "cat", ",", "dog", "(red:1.3)", "[blue]", "BREAK", "x y z", ", ,", "((big))", "\\(", "AND"]
    rnd = random.Random(1)
    for _ in range(600):
        s = " ".join(rnd.choice(words) for _ in range(rnd.randint(0, 120)))
        for backtrack in (20, 0, 5):
            fake_webui.shared.opts.comma_padding_backtrack = backtrack
            a, b = real_tokenize_line(s), clip.tokenize_line(s)
            assert [(c.tokens, c.multipliers) for c in a[0]] == [(c.tokens, c.multipliers) for c in b[0]], s
            assert a[1] == b[1], s


@pytest.mark.slow
def test_cfg_denoiser_forward_matches_a1111(fake_webui):
    """The real forward/combine_denoised, run on the double's models, give the double's numbers in every mode."""
    m = fake_webui
    real = types.ModuleType("a1111_cfg_denoiser")
    exec(compile(real_source("modules/sd_samplers_cfg_denoiser.py"), "a1111/cfg_denoiser.py", "exec"), real.__dict__)
    pp = m.prompt_parser

    conds = {}

    def conditioning(model, prompts, negatives):
        key = (model.sd_checkpoint_info.kind, tuple(prompts), tuple(negatives))
        if key not in conds:
            conds[key] = (
                pp.get_multicond_learned_conditioning(model, pp.SdConditioning(prompts, width=64, height=64), 10),
                pp.get_learned_conditioning(model, pp.SdConditioning(negatives, is_negative_prompt=True), 10),
            )
        return conds[key]

    def run(cls, model, prompts, negatives, s_min_uncond, step):
        sampler = m.sd_samplers.create_sampler("Euler", model)

        class Denoiser(cls):
            @property
            def inner_model(self):
                return sampler.model_wrap

        d = Denoiser(sampler)
        d.p = m.processing.StableDiffusionProcessingTxt2Img()
        d.step, d.total_steps = step, 10
        c, uc = conditioning(model, prompts, negatives)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(len(prompts), 4, 8, 8, generator=g)
        out = d(
            x,
            torch.full((len(prompts),), 0.5),
            uncond=uc,
            cond=c,
            cond_scale=7.0,
            s_min_uncond=s_min_uncond,
            image_cond=torch.zeros(len(prompts), 5, 1, 1),
        )
        return (
            out,
            sampler.last_latent,
            dict(d.p.extra_generation_params),
            d.padded_cond_uncond,
            d.padded_cond_uncond_v0,
        )

    prompt_sets = [
        (["a AND b:0.5", "c"], ["", ""]),
        (["a BREAK b", "c AND d AND e:-1"], ["x", "y"]),
        (["a"], ["n BREAK m BREAK o"]),
    ]
    for kind in ("sd1", "sdxl"):
        model = m.sd_models.load_model(kind)
        for bcu, early, (pad, pad_v0), (s_min, step), (prompts, negatives) in itertools.product(
            (True, False), (0.0, 0.5), ((False, False), (True, False), (False, True)), ((0.0, 0), (1.0, 1)), prompt_sets
        ):
            m.shared.opts.data.update(
                batch_cond_uncond=bcu, skip_early_cond=early, pad_cond_uncond=pad, pad_cond_uncond_v0=pad_v0
            )
            ours = run(m.sd_samplers_cfg_denoiser.CFGDenoiser, model, prompts, negatives, s_min, step)
            theirs = run(real.CFGDenoiser, model, prompts, negatives, s_min, step)
            case = (kind, bcu, early, pad, pad_v0, s_min, step, prompts, negatives)
            assert torch.allclose(ours[0], theirs[0], atol=1e-6), case
            assert torch.allclose(ours[1], theirs[1], atol=1e-6), case
            assert ours[2:] == theirs[2:], case


def stub_missing_modules(m):
    """Stand-ins for the WebUI modules the real scripts.py imports and the double does not have."""
    import sys

    def stub(name, **attrs):
        mod = types.ModuleType(f"modules.{name}")
        mod.__dict__.update(attrs)
        sys.modules[mod.__name__] = mod
        setattr(m, name.split(".")[0], sys.modules[f"modules.{name.split('.')[0]}"])
        return mod

    def topological_sort(dependencies):
        return list(dependencies)  # no Before/After anywhere: keep the listed order

    class ScriptArg:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    stub("timer", startup_timer=types.SimpleNamespace(record=lambda *a, **k: None))
    stub("util", topological_sort=topological_sort)
    stub(
        "scripts_postprocessing",
        ScriptPostprocessing=type("ScriptPostprocessing", (), {}),
        ScriptPostprocessingRunner=lambda: None,
    )
    stub("scripts_auto_postprocessing", create_auto_preprocessing_script_data=lambda: [])
    import modules.api

    api_models = types.ModuleType("modules.api.models")
    api_models.ScriptArg, api_models.ScriptInfo = ScriptArg, ScriptArg
    sys.modules["modules.api.models"] = modules.api.models = api_models


def real_scripts_module(m):
    real = types.ModuleType("modules.scripts")
    real.__file__ = os.path.join(os.path.dirname(m.__file__), "scripts.py")
    exec(compile(real_source("modules/scripts.py"), "a1111/scripts.py", "exec"), real.__dict__)
    return real


LOADER_PROBE = """
import sys
from modules import script_callbacks, scripts
import probe_lib

RECORD = (__name__, __name__ in sys.modules, scripts.basedir(), sys.path[0], probe_lib.__name__)


class Probe(scripts.Script):
    def title(self):
        return "Probe " + __name__


def on_denoiser(params):
    pass


script_callbacks.on_cfg_denoiser(on_denoiser)
"""


def test_load_scripts_matches_a1111(fake_webui, tmp_path):
    """The real ``load_scripts`` and the double's, on the same extension: same modules, paths, classes, callbacks."""
    import sys

    m = fake_webui
    ext_dir = tmp_path / "probe-ext"
    (ext_dir / "scripts").mkdir(parents=True)
    (ext_dir / "probe_lib").mkdir()
    (ext_dir / "probe_lib" / "__init__.py").write_text("")
    for name in ("a.py", "b.py"):
        (ext_dir / "scripts" / name).write_text(LOADER_PROBE)
    m.extensions.extensions.append(m.extensions.Extension("probe-ext", str(ext_dir)))

    stub_missing_modules(m)

    def outcome(scripts_module):
        sys.modules.pop("probe_lib", None)
        path_before = list(sys.path)
        fake_scripts = sys.modules["modules.scripts"]
        sys.modules["modules.scripts"], m.scripts = scripts_module, scripts_module
        try:
            scripts_module.load_scripts()
        finally:
            sys.modules["modules.scripts"], m.scripts = fake_scripts, fake_scripts
        assert sys.path == path_before and "probe_lib" in sys.modules
        loaded = m.script_loading.loaded_scripts
        records = sorted(loaded[d.path].RECORD for d in scripts_module.scripts_data if d.path.startswith(str(ext_dir)))
        classes = [(d.script_class.__name__, d.path, d.basedir) for d in scripts_module.scripts_data]
        callbacks = [(c.name, c.script) for c in m.script_callbacks.callback_map["callbacks_cfg_denoiser"]]
        return records, classes, callbacks

    theirs = outcome(real_scripts_module(m))
    ours = outcome(sys.modules["modules.scripts"])
    assert ours == theirs
    assert [r[0] for r in ours[0]] == ["a.py", "b.py"] and not any(r[1] for r in ours[0])
    assert {r[2] for r in ours[0]} == {r[3] for r in ours[0]} == {str(ext_dir)}


HOOK_PROBE = """
from modules import scripts

log = []


def record(name):
    def hook(self, p, *args, **kwargs):
        shown = [type(a).__name__ if hasattr(a, "__dict__") else a for a in args]
        log.append((self.title(), name, shown, sorted(kwargs)))
    return hook


class Probe(scripts.Script):
    def title(self):
        return "Probe " + __name__

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr
        return [gr.Checkbox(value=True, label="on"), gr.Textbox(value=__name__, label="name")]

    for _n in ("setup", "before_process", "process", "before_process_batch", "after_extra_networks_activate",
               "process_batch", "process_before_every_sampling", "before_hr", "post_sample", "postprocess_batch",
               "postprocess_batch_list", "postprocess_image", "postprocess_image_after_composite",
               "postprocess_maskoverlay", "postprocess"):
        locals()[_n] = record(_n)


class NoHooks(scripts.Script):
    def title(self):
        return "Idle " + __name__

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr
        return [gr.Number(value=3, label="n")]
"""


@pytest.mark.slow
def test_script_runner_dispatch_matches_a1111(fake_webui, sd_model, tmp_path):
    """A generation driven by the real ScriptRunner and by the double's: same hooks, args and kwargs."""
    import sys

    import gradio as gr

    m = fake_webui
    ext_dir = tmp_path / "hook-ext"
    (ext_dir / "scripts").mkdir(parents=True)
    for name in ("a.py", "b.py"):
        (ext_dir / "scripts" / name).write_text(HOOK_PROBE)
    m.extensions.extensions.append(m.extensions.Extension("hook-ext", str(ext_dir)))
    stub_missing_modules(m)

    def run(scripts_module):
        fake_scripts = sys.modules["modules.scripts"]
        sys.modules["modules.scripts"], m.scripts = scripts_module, scripts_module
        try:
            scripts_module.load_scripts()
            runner = scripts_module.scripts_txt2img = scripts_module.ScriptRunner()
            runner.initialize_scripts(is_img2img=False)
            with gr.Blocks():
                runner.setup_ui()
            spans = [(s.title(), s.args_from, s.args_to) for s in runner.scripts]
            args = [0] * max(s.args_to for s in runner.scripts)
            for s in runner.alwayson_scripts:
                args[s.args_from : s.args_to] = [c.value for c in s.controls]
            p = m.processing.StableDiffusionProcessingTxt2Img(
                prompt="a",
                steps=2,
                width=64,
                height=64,
                seed=1,
                n_iter=2,
                sampler_name="Euler",
                enable_hr=True,
                hr_scale=1.5,
                denoising_strength=0.5,
                do_not_save_samples=True,
                do_not_save_grid=True,
            )
            p.scripts, p.script_args = runner, tuple(args)
            m.processing.process_images(p)
        finally:
            sys.modules["modules.scripts"], m.scripts = fake_scripts, fake_scripts
        logs = [m.script_loading.loaded_scripts[str(ext_dir / "scripts" / f)].log for f in ("a.py", "b.py")]
        return spans, logs

    theirs = run(real_scripts_module(m))
    ours = run(sys.modules["modules.scripts"])
    assert ours == theirs
    assert len(ours[1][0]) > 20


def install_real_processing(m, monkeypatch):
    """The real processing.py, importable against the double: stand-ins for what the double does not model."""
    import contextlib
    import sys

    class Anything(types.ModuleType):
        def __getattr__(self, name):
            return None

    for name in ("skimage", "einops", "blendmodes", "blendmodes.blend", "ldm.data", "ldm.data.util"):
        monkeypatch.setitem(sys.modules, name, Anything(name))
    for name in ("masking", "sd_vae_approx", "face_restoration", "styles"):
        monkeypatch.setitem(sys.modules, f"modules.{name}", Anything(f"modules.{name}"))
    monkeypatch.setitem(sys.modules, "launch", types.SimpleNamespace(git_tag=lambda: "v1.10.1"))
    monkeypatch.setitem(
        sys.modules, "modules.lowvram", types.SimpleNamespace(is_enabled=lambda model: False, __name__="lowvram")
    )
    monkeypatch.setitem(sys.modules, "modules.sd_unet", types.SimpleNamespace(apply_unet=lambda *a: None))
    monkeypatch.setitem(sys.modules, "modules.profiling", types.SimpleNamespace(Profiler=contextlib.nullcontext))
    for name in ("lowvram", "sd_unet", "profiling", "masking", "sd_vae_approx", "face_restoration", "styles"):
        monkeypatch.setattr(m, name, sys.modules[f"modules.{name}"], raising=False)
    import ldm.models.diffusion.ddpm as ddpm

    monkeypatch.setattr(ddpm, "LatentDepth2ImageDiffusion", type("LatentDepth2ImageDiffusion", (), {}), raising=False)
    monkeypatch.setattr(m.sd_samplers, "fix_p_invalid_sampler_and_scheduler", lambda p: None, raising=False)
    m.shared.opts.data.update(
        fp8_storage="Disable",
        cache_fp16_weight=False,
        show_progress_type="Approx cheap",
        use_old_hires_fix_width_height=False,
        face_restoration_model=None,
        grid_save=False,
    )

    real = types.ModuleType("a1111_processing")
    real.__file__ = os.path.join(os.path.dirname(m.__file__), "processing.py")
    monkeypatch.setitem(sys.modules, real.__name__, real)  # dataclasses look their module up there
    exec(compile(real_source("modules/processing.py"), "a1111/processing.py", "exec"), real.__dict__)

    return real


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_process_images_matches_a1111(fake_webui, tmp_path, monkeypatch, kind):
    """The real processing.py (txt2img with hires fix, two batches of two) run on the double's models, samplers and
    ScriptRunner gives the same hook calls, images, infotexts, params.txt and Processed.js() as the double's."""
    import json

    m = fake_webui
    sd_model = m.sd_models.load_model(kind)
    ext_dir = tmp_path / "hook-ext"
    (ext_dir / "scripts").mkdir(parents=True)
    (ext_dir / "scripts" / "a.py").write_text(HOOK_PROBE)
    m.scripts.load_scripts(str(ext_dir))
    log = m.script_loading.loaded_scripts[str(ext_dir / "scripts" / "a.py")].log

    real = install_real_processing(m, monkeypatch)

    def run(processing):
        log.clear()
        # the class-level cond caches must not leak from one implementation to the other
        processing.StableDiffusionProcessing.cached_c = [None, None]
        processing.StableDiffusionProcessing.cached_uc = [None, None]
        processing.StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]
        processing.StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]
        runner = m.scripts.scripts_txt2img
        p = processing.StableDiffusionProcessingTxt2Img(
            prompt="a cat AND a (hat:1.2)",
            negative_prompt="blurry",
            steps=3,
            width=64,
            height=64,
            seed=11,
            subseed=5,
            n_iter=2,
            batch_size=2,
            sampler_name="Euler a",
            enable_hr=True,
            hr_scale=1.5,
            denoising_strength=0.5,
            hr_prompt="a big cat",
            hr_sampler_name="DDIM",
            do_not_save_samples=True,
        )
        p.scripts = runner
        p.script_args = tuple([0] + [c.value for s in runner.alwayson_scripts for c in s.controls])
        p.extra_generation_params["PS list"] = ["w", "x", "y", "z"]
        p.extra_generation_params["PS call"] = lambda p, index, **kw: f"#{index}"
        res = processing.process_images(p)
        js = json.loads(res.js())
        js.pop("job_timestamp")
        return list(log), [list(im.getdata()) for im in res.images], res.infotexts, js, res.index_of_first_image

    theirs = run(real)
    params_txt = (tmp_path / "params.txt").read_text(encoding="utf8")
    ours = run(m.processing)

    # faults: an interrupt during the second batch's first pass, and an exception inside the model
    def interrupt_in_batch_1(params):
        if params.denoiser.p.iteration == 1 and not params.denoiser.p.is_hr_pass:
            m.shared.state.interrupt()

    m.script_callbacks.on_cfg_denoiser(interrupt_in_batch_1)
    interrupted = []
    for processing in (real, m.processing):
        m.shared.state.begin()
        interrupted.append(run(processing))
    m.script_callbacks.remove_callbacks_for_function(interrupt_in_batch_1)
    assert interrupted[0] == interrupted[1] and interrupted[1][0][-1][1] == "postprocess"

    apply_model = sd_model.apply_model
    calls = []

    def fail_on_fifth_call(*args, **kwargs):
        calls.append(1)
        if len(calls) % 5 == 0:
            raise RuntimeError("injected")
        return apply_model(*args, **kwargs)

    monkeypatch.setattr(sd_model, "apply_model", fail_on_fifth_call)
    failed = []
    for processing in (real, m.processing):
        m.shared.state.begin()
        with pytest.raises(RuntimeError, match="injected"):
            run(processing)
        failed.append(list(log))
    assert failed[0] == failed[1] and "postprocess" not in [name for _, name, _, _ in failed[1]]
    assert ours[0] == theirs[0]  # hooks, in order, with their args and kwargs
    assert ours[2] == theirs[2]  # infotexts, grid's first
    assert ours[3] == theirs[3] and ours[4] == theirs[4] == 1
    assert ours[1] == theirs[1]  # pixels, grid included
    assert m.processing.last_params_txt == params_txt


CALLBACK_USER = """
def cb(*args):
    order.append((NAME, "cfg"))

def unloaded():
    order.append((NAME, "unloaded"))

sc.on_cfg_denoiser(cb)
sc.on_cfg_denoiser(cb, name="second")
sc.on_script_unloaded(unloaded)
sc.on_model_loaded(lambda m: order.append((NAME, "model")))

def drop_mine():
    sc.remove_current_script_callbacks()
"""


def test_script_callbacks_match_a1111(fake_webui, tmp_path, monkeypatch):
    import sys

    m = fake_webui
    stub_missing_modules(m)
    ext_dir = tmp_path / "cb-ext"
    (ext_dir / "scripts").mkdir(parents=True)
    m.extensions.extensions.append(m.extensions.Extension("cb-ext", str(ext_dir)))
    real = types.ModuleType("a1111_script_callbacks")
    monkeypatch.setitem(sys.modules, real.__name__, real)  # dataclasses look their module up there
    real.__file__ = "a1111/script_callbacks.py"  # its own frames are recognised by this name
    exec(compile(real_source("modules/script_callbacks.py"), "a1111/script_callbacks.py", "exec"), real.__dict__)

    def scenario(sc):
        order = []
        files = {}
        for name in ("a.py", "b.py"):
            path = str(ext_dir / "scripts" / name)
            files[name] = {"sc": sc, "order": order, "NAME": name}
            exec(compile(CALLBACK_USER, path, "exec"), files[name])
        names = {k: [c.name for c in v] for k, v in sc.callback_map.items() if v}
        sc.cfg_denoiser_callback(None)
        sc.model_loaded_callback(None)
        sc.script_unloaded_callback()
        files["a.py"]["drop_mine"]()
        sc.cfg_denoiser_callback(None)
        sc.remove_callbacks_for_function(files["b.py"]["cb"])
        sc.cfg_denoiser_callback(None)
        sc.script_unloaded_callback()
        # An unload callback that unregisters itself and another one while the host iterates the list (what
        # PromptScope did before): the host's loop skips callbacks; the double must skip the same ones.
        sc.clear_callbacks()
        sc.on_script_unloaded(lambda: order.append(("first", "unloaded")))
        sc.on_script_unloaded(files["a.py"]["unloaded"])

        def remove_while_iterated():
            order.append(("remover", "unloaded"))
            sc.remove_callbacks_for_function(remove_while_iterated)
            sc.remove_callbacks_for_function(files["a.py"]["unloaded"])

        sc.on_script_unloaded(remove_while_iterated)
        sc.script_unloaded_callback()
        return names, order

    theirs = scenario(real)
    ours = scenario(sys.modules["modules.script_callbacks"])
    assert ours == theirs
    assert ours[0]["callbacks_cfg_denoiser"][1] == "cb-ext/a.py/cfg_denoiser/second"
    assert ours[1][-1] == ("remover", "unloaded") and ("first", "unloaded") not in ours[1]  # skipped, as in A1111


@pytest.mark.slow
def test_img2img_matches_a1111(fake_webui, sd_model, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    m = fake_webui
    real = install_real_processing(m, monkeypatch)
    seen = []
    m.script_callbacks.on_cfg_denoiser(lambda params: seen.append((params.x.shape, float(params.sigma[0]))))
    rgba = Image.fromarray((np.indices((80, 72, 4)).sum(0) * 7 % 256).astype(np.uint8), "RGBA")

    def run(processing):
        seen.clear()
        processing.StableDiffusionProcessing.cached_c = [None, None]
        processing.StableDiffusionProcessing.cached_uc = [None, None]
        p = processing.StableDiffusionProcessingImg2Img(
            init_images=[rgba],
            prompt="a fox AND snow",
            negative_prompt="",
            steps=6,
            width=64,
            height=64,
            seed=3,
            subseed=4,
            batch_size=2,
            denoising_strength=0.6,
            sampler_name="DPM++ 2M",
            do_not_save_samples=True,
        )
        res = processing.process_images(p)
        return list(seen), [list(im.getdata()) for im in res.images], res.infotexts

    assert run(real) == run(m.processing)
