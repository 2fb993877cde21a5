"""Semantic guidance wired into the v1.10.1 double: arguments, rows, infotext, X/Y/Z, coexistence."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from promptscope_webui import alwayson, txt2img

TITLE = "PromptScope: Semantic guidance"


def script(m) -> Any:
    return alwayson(m, TITLE)


def make_p(m, args: list[Any] | None = None, **kw) -> Any:
    kw.setdefault("prompt", "a cat AND_TOPK red :0.5")
    kw.setdefault("negative_prompt", "")
    kw.setdefault("seed", 5)
    return txt2img(m, {TITLE: args} if args is not None else None, **kw)


def rows_seen(m, p) -> list[Any]:
    """Process and return the UNet batch sizes the denoiser used (via a probe on the denoiser callback)."""
    sizes: list[int] = []

    def on_denoiser(params):
        sizes.append(int(params.x.shape[0]))

    m.script_callbacks.on_cfg_denoiser(on_denoiser)
    processed = m.processing.process_images(p)
    m.script_callbacks.remove_callbacks_for_function(on_denoiser)
    return [processed, sizes]


def test_ui_builds_and_registers_infotext_fields(webui):
    s = script(webui)
    assert len(s.controls) == 9
    choices = [c[0] if isinstance(c, tuple | list) else c for c in s.controls[0].choices]
    assert s.controls[0].value == "auto" and choices == ["auto", "on", "off"]
    fields = dict((id(c), f) for c, f in s.infotext_fields)
    assert fields[id(s.controls[0])]({"Semantic guidance": "sega (auto)"}) == "auto"
    assert fields[id(s.controls[1])]({"Semantic guidance": "sega (auto)"}) == "sega"
    assert not getattr(webui.errors, "reported", [])


def paste(m, infotext: str) -> list[Any]:
    """The values a PNG Info paste of `infotext` gives our controls (None: left as they are)."""
    params = m.infotext_utils.parse_generation_parameters(infotext)
    s = script(m)
    fields = {id(c): f for c, f in s.infotext_fields}
    return [fields[id(c)](params) if callable(fields[id(c)]) else params.get(fields[id(c)]) for c in s.controls]


def test_keywords_turn_guidance_on_by_default_as_in_neutral_prompt(webui, sd_model):
    auto, sizes_auto = rows_seen(webui, make_p(webui))  # the API's defaults: every argument as the UI starts
    on, sizes_on = rows_seen(webui, make_p(webui, ["on"]))
    assert sizes_auto[0] == sizes_on[0] == 3
    assert "Semantic guidance: neutral (auto)" in auto.infotexts[0]
    assert "Semantic guidance: neutral," in on.infotexts[0] + "," and "(auto)" not in on.infotexts[0]
    assert np.array_equal(np.asarray(auto.images[0]), np.asarray(on.images[0]))
    assert "semantic guidance is off" not in auto.comments


def test_auto_without_keywords_is_the_host_alone(webui, sd_model):
    """No keyword, no `<sega:...>`: the default leaves everything to A1111 (image, rows, infotext, comments)."""
    plain, sizes = rows_seen(webui, make_p(webui, prompt="a cat AND a dog :0.5"))
    off, sizes_off = rows_seen(webui, make_p(webui, ["off"], prompt="a cat AND a dog :0.5"))
    assert sizes == sizes_off and np.array_equal(np.asarray(plain.images[0]), np.asarray(off.images[0]))
    assert plain.infotexts[0] == off.infotexts[0] and "Semantic guidance" not in plain.infotexts[0]
    assert "PromptScope" not in plain.comments
    # a <sega:...> tag alone is an unknown extra network to A1111, and stays one under auto; "on" reads it
    tagged, sizes_tagged = rows_seen(webui, make_p(webui, prompt="a cat <sega:topk=0.1>"))
    assert sizes_tagged[0] == 2 and "Semantic guidance" not in tagged.infotexts[0]


@pytest.mark.parametrize("off", [[False], ["off"], [{"enabled": False}], [{"enabled": "off"}], ["false"]])
def test_explicitly_off_is_recorded_and_warns(webui, sd_model, off):
    processed, sizes = rows_seen(webui, make_p(webui, off))
    assert sizes[0] == 2  # A1111's own rows: the keywords are its plain text
    assert "Semantic guidance: off" in processed.infotexts[0]
    assert "semantic guidance is off" in processed.comments


def test_settings_choose_the_mode_when_keywords_switch_guidance_on(webui, sd_model):
    webui.shared.opts.data["promptscope_guidance_mode"] = "sega"
    p = make_p(webui)
    s = script(webui)
    p.script_args[s.args_from : s.args_to] = [{}] + [None] * 8  # API: named arguments, none given
    processed, _ = rows_seen(webui, p)
    assert "Semantic guidance: sega (auto)" in processed.infotexts[0]


@pytest.mark.parametrize(
    ("args", "recorded", "pasted"),
    [
        ([], "neutral (auto)", "auto"),
        (["on"], "neutral", "on"),
        ([True, "sega"], "sega", "on"),
        (["off"], "off", "off"),
    ],
)
def test_paste_restores_how_guidance_was_switched(webui, sd_model, args, recorded, pasted):
    processed, _ = rows_seen(webui, make_p(webui, args))
    assert f"Semantic guidance: {recorded}" in processed.infotexts[0]
    values = paste(webui, processed.infotexts[0])
    assert values[0] == pasted
    assert values[1] == (None if recorded == "off" else recorded.split()[0])
    again, sizes = rows_seen(webui, make_p(webui, values[:1]))
    assert f"Semantic guidance: {recorded.replace('sega', 'neutral')}" in again.infotexts[0]
    assert sizes[0] == (2 if pasted == "off" else 3)


def test_paste_of_an_image_without_our_key_is_auto(webui):
    # e.g. an image made with neutral-prompt: its keywords are guided again after the switch
    assert paste(webui, "a cat AND_TOPK red :0.5\nSteps: 3, Sampler: Euler, CFG Rescale phi: 0")[:2] == ["auto", None]


def test_api_path_auto_off_and_infotext(webui, sd_model):
    from modules.api import api

    base = dict(prompt="a cat AND_TOPK red :0.5", steps=2, width=64, height=64, seed=3)
    auto = api.text2imgapi(base)
    assert "Semantic guidance: neutral (auto)" in auto["info"]
    off = api.text2imgapi({**base, "alwayson_scripts": {TITLE: {"args": [False]}}})
    assert "Semantic guidance: off" in off["info"]
    on = api.text2imgapi({**base, "alwayson_scripts": {TITLE: {"args": [True, "sega"]}}})
    assert "Semantic guidance: sega" in on["info"] and "(auto)" not in on["info"]
    plain = api.text2imgapi({**base, "prompt": "a cat"})
    assert "Semantic guidance" not in plain["info"]
    # the API's "infotext" field applies our paste fields: an image recorded as off stays off
    line = "a cat AND_TOPK red :0.5\nSteps: 2, Sampler: Euler, CFG scale: 7, Semantic guidance: "
    pasted_off = api.text2imgapi({**base, "infotext": line + "off"})
    assert "Semantic guidance: off" in pasted_off["info"]
    pasted_auto = api.text2imgapi({**base, "infotext": line + "sega (auto)"})
    assert "Semantic guidance: sega (auto)" in pasted_auto["info"]


def test_enabled_adds_one_row_per_concept_and_changes_the_image(webui, sd_model):
    off, sizes_off = rows_seen(webui, make_p(webui, [False]))
    on, sizes_on = rows_seen(webui, make_p(webui, [True]))
    plain, sizes_plain = rows_seen(webui, make_p(webui, [True], prompt="a cat"))
    assert sizes_plain[0] == 2  # cond + uncond
    assert sizes_on[0] == 3  # one more row for the concept, in the same forward
    assert "Semantic guidance: neutral" in on.infotexts[0]
    assert "Semantic guidance: off" in off.infotexts[0]
    assert not np.array_equal(np.asarray(on.images[0]), np.asarray(off.images[0]))
    assert on.infotexts[0].startswith("a cat AND_TOPK red :0.5")


def test_disabled_with_keywords_warns_once_in_the_info(webui, sd_model):
    processed, _ = rows_seen(webui, make_p(webui, [False]))
    assert "semantic guidance is off" in processed.comments


def test_bad_arguments_are_rejected_with_a_message_and_generation_goes_on(webui, sd_model):
    processed, sizes = rows_seen(webui, make_p(webui, [True, "fancy"]))
    assert "arguments rejected" in processed.comments and "mode" in processed.comments
    assert processed.images


def test_bad_arguments_are_named_in_the_api_answer(webui, sd_model):
    import json

    processed, _ = rows_seen(webui, make_p(webui, [True, "fancy"]))
    info = json.loads(processed.js())  # what A1111's API returns as `info`: it has no comments
    assert "arguments rejected" in info["infotexts"][0] and "fancy" in info["infotexts"][0], info["infotexts"]
    assert "arguments rejected" in info["extra_generation_params"]["PromptScope message"]


def test_dict_arguments_and_sega_mode(webui, sd_model):
    p = make_p(webui)
    s = script(webui)
    p.script_args[s.args_from : s.args_to] = [{"enabled": True, "mode": "sega", "warmup": 0}] + [None] * 8
    processed, sizes = rows_seen(webui, p)
    assert "Semantic guidance: sega" in processed.infotexts[0]


def _pixels(m, prompt: str, settings: dict | None, **kw) -> np.ndarray:
    p = make_p(m, prompt=prompt, **kw)
    s = script(m)
    p.script_args[s.args_from : s.args_to] = [settings or {"enabled": False}] + [None] * 8
    processed = m.processing.process_images(p)
    return np.stack([np.asarray(im, dtype=np.float32) for im in processed.images[: p.batch_size]])


def test_inline_sega_tags_reach_the_feature_although_a1111_strips_them(webui, sd_model):
    """A1111 removes every `<name:...>` tag from p.prompts before scripts see the batch; the feature must read
    the tags from p.all_prompts. A whole-run warm-up written inline turns the concept off: the image is the
    plain prompt's, while without the tag the concept changes it."""
    sega = {"enabled": True, "mode": "sega", "warmup": 0, "threshold": 0.0}
    plain = _pixels(webui, "a cat", None)
    edited = _pixels(webui, "a cat AND_TOPK red :3", sega)
    silenced = _pixels(webui, "a cat AND_TOPK red <sega:warmup=100%> :3", sega)
    assert np.abs(edited - plain).max() > 2
    assert np.abs(silenced - plain).max() <= 1


def test_inline_sega_tags_per_image_of_a_batch_and_in_the_hires_pass(webui, sd_model):
    sega = {"enabled": True, "mode": "sega", "warmup": 0, "threshold": 0.0}
    hires = {"enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 2, "denoising_strength": 0.5}
    plain = _pixels(webui, ["a cat", "a cat"], None, batch_size=2, **hires)
    mixed = _pixels(
        webui, ["a cat AND_TOPK red :3", "a cat AND_TOPK red <sega:warmup=100%> :3"], sega, batch_size=2, **hires
    )
    assert np.abs(mixed[0] - plain[0]).max() > 2
    assert np.abs(mixed[1] - plain[1]).max() <= 1


def test_batch_with_different_prompts_and_hires_prompt(webui, sd_model):
    p = make_p(
        webui,
        [True],
        prompt=["a cat AND_TOPK red :0.5", "a dog"],
        batch_size=2,
        enable_hr=True,
        hr_scale=2,
        hr_second_pass_steps=2,
        denoising_strength=0.5,
        hr_prompt=["a cat AND_TOPK blue :0.5", "a dog AND_PERP cat :1"],
    )
    processed, sizes = rows_seen(webui, p)
    assert sizes[0] == 3 + 2  # image 0: 2 rows, image 1: 1 row, + 2 uncond
    assert sizes[-1] == 2 + 2 + 2  # hires: both images have two rows
    assert processed.infotexts[1].startswith("a dog")


@pytest.mark.parametrize("sampler", ["DDIM", "DPM++ 2M"])
@pytest.mark.parametrize("batch_cond_uncond", [True, False])
def test_samplers_and_batching(webui, sd_model, sampler, batch_cond_uncond):
    webui.shared.opts.batch_cond_uncond = batch_cond_uncond
    processed, _ = rows_seen(webui, make_p(webui, [True], sampler_name=sampler))
    assert "Semantic guidance" in processed.infotexts[0]
    assert "skipped" not in processed.comments


def test_infotext_round_trips_through_paste(webui, sd_model):
    p = make_p(webui, [True, "sega", 0.3, 0.05, 0.8, "2", "", 0.2, 0.5])
    processed, _ = rows_seen(webui, p)
    params = webui.infotext_utils.parse_generation_parameters(processed.infotexts[0])
    s = script(webui)
    values = {}
    for component, field in s.infotext_fields:
        values[id(component)] = field(params) if callable(field) else params.get(field)
    got = [values[id(c)] for c in s.controls]
    assert got[0] == "on" and got[1] == "sega"
    assert float(got[2]) == pytest.approx(0.3)
    assert float(got[4]) == pytest.approx(0.8) and str(got[5]) == "2" and got[6] in ("", None)
    assert float(got[7]) == pytest.approx(0.2) and float(got[8]) == pytest.approx(0.5)


def test_xyz_axes_are_added_once_and_apply_per_job(webui, sd_model):
    from promptscope_a1111.webui_bits import xyz_module

    xyz = xyz_module()
    assert xyz is not None, "the double ships the built-in X/Y/Z plot script"
    before = len(xyz.axis_options)
    webui.script_callbacks.before_ui_callback()
    webui.script_callbacks.before_ui_callback()
    labels = [a.label for a in xyz.axis_options[before:]]
    assert len(labels) == len(set(labels)) == 8
    axis = next(a for a in xyz.axis_options if a.label.endswith("Guidance mode"))
    p = make_p(webui, [True])
    axis.apply(p, "sega", ["neutral", "sega"])
    processed, _ = rows_seen(webui, p)
    assert "Semantic guidance: sega" in processed.infotexts[0]


def test_neutral_prompt_installed_and_chosen_leaves_keywords_to_it(webui, sd_model, capsys):
    webui.extensions.extensions.append(webui.extensions.Extension("sd-webui-neutral-prompt", "/nonexistent"))
    webui.shared.opts.data["promptscope_guidance_handler"] = "neutral-prompt"
    processed, sizes = rows_seen(webui, make_p(webui, [True]))
    assert sizes[0] == 2 and "Semantic guidance" not in processed.infotexts[0]
    webui.shared.opts.data["promptscope_guidance_handler"] = "PromptScope"
    processed, sizes = rows_seen(webui, make_p(webui, [True]))
    assert sizes[0] == 3
    assert "handled by" in capsys.readouterr().out


def test_neutral_prompt_installed_and_guidance_off_leaves_keywords_to_it_without_warning(webui, sd_model, capsys):
    webui.extensions.extensions.append(webui.extensions.Extension("sd-webui-neutral-prompt", "/nonexistent"))
    processed, sizes = rows_seen(webui, make_p(webui, [False]))
    out = capsys.readouterr().out
    assert sizes[0] == 2 and "Semantic guidance" not in processed.infotexts[0]
    assert "handled by PromptScope" not in out, out
    assert "plain text" not in out and "semantic guidance is off" not in processed.comments, (out, processed.comments)
    assert "handled by neutral-prompt" in out, out


def test_settings_section_is_registered(webui):
    webui.script_callbacks.ui_settings_callback()
    assert "promptscope_guidance_handler" in webui.shared.opts.data_labels


def test_prompt_helper_line(webui):
    from promptscope_a1111.guidance_script import append_keyword_line

    assert append_keyword_line("a castle", "AND_TOPK", "snowy", 0.4) == "a castle\nAND_TOPK snowy :0.4"
    assert append_keyword_line("", "AND_PERP", "(glasses:1.2)", -1) == "AND_PERP (glasses:1.2) :-1"
    assert append_keyword_line("x", "AND_TOPK", "  ", 1) == "x"


def _edits_per_call(m, monkeypatch, sampler: str, steps: int, settings: dict) -> list[tuple[int, int, bool]]:
    """(model call, sampler step, SEGA edit non-zero) for every call of one generation."""
    import sys

    combine_module = sys.modules["promptscope_lib_ext.guidance.combine"]
    original = combine_module._GroupCombination._sega_edit
    seen: list[tuple[int, int, bool]] = []
    calls = {"n": 0}

    def probe(self, concepts, path):
        edit = original(self, concepts, path)
        seen.append((calls["n"], self.step.step, bool(edit.abs().max() > 0)))
        calls["n"] += 1
        return edit

    monkeypatch.setattr(combine_module._GroupCombination, "_sega_edit", probe)
    p = make_p(m, sampler_name=sampler, steps=steps, prompt="a cat AND_TOPK red :3")
    s = script(m)
    p.script_args[s.args_from : s.args_to] = [{"enabled": "on", "mode": "sega", "threshold": 0.0, "momentum": 0.0,
                                               **settings}] + [None] * 8  # fmt: skip
    processed = m.processing.process_images(p)
    assert "Semantic guidance: sega" in processed.infotexts[0]
    return seen


@pytest.mark.parametrize("warmup", ["2", "50%"])
def test_sega_warmup_counts_sampler_steps_with_a_two_call_sampler(webui, sd_model, monkeypatch, warmup):
    """Heun calls the model twice per step (once for the last): A1111's denoiser counts 7 calls for 4 steps.
    Warm-up 2 (or 50%) must start the edit at the third sampler STEP, i.e. the fifth model call."""
    heun = _edits_per_call(webui, monkeypatch, "Heun", 4, {"warmup": warmup})
    assert [c for c, _, _ in heun] == list(range(7))
    assert [s for _, s, _ in heun] == [0, 0, 1, 1, 2, 2, 3]
    assert [on for _, _, on in heun] == [False] * 4 + [True] * 3


def test_sega_cooldown_counts_sampler_steps_and_one_call_samplers_are_unchanged(webui, sd_model, monkeypatch):
    heun = _edits_per_call(webui, monkeypatch, "Heun", 4, {"warmup": 0, "cooldown": 3})
    assert [on for _, _, on in heun] == [True] * 6 + [False]  # step 3 (the last call) is cooled down
    euler = _edits_per_call(webui, monkeypatch, "Euler", 4, {"warmup": 1, "cooldown": 3})
    assert euler == [(0, 0, False), (1, 1, True), (2, 2, True), (3, 3, False)]


def test_prompts_neutral_prompt_accepts_are_guided_with_a_note_and_nan_is_refused(webui, sd_model):
    empty, sizes = rows_seen(webui, make_p(webui, prompt="a cat :1.0 AND_PERP AND red :2.0"))
    assert sizes[0] == 3 + 1  # "a cat", the empty concept, "red" (+ uncond): guidance on, as in neutral-prompt
    assert "Semantic guidance: neutral (auto)" in empty.infotexts[0]
    assert "AND_PERP at character 11 has no text" in empty.comments
    big, sizes = rows_seen(webui, make_p(webui, prompt="a cat AND_TOPK red :1001"))
    assert sizes[0] == 3 and "weight 1001 at character" in big.comments
    nan, sizes = rows_seen(webui, make_p(webui, prompt="a cat AND_TOPK red :nan"))
    assert sizes[0] == 2  # A1111's own reading of the prompt
    assert "semantic guidance off for this prompt: weight nan at character 20 is not a finite number" in nan.comments
