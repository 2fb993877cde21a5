"""The semantic-guidance and attention-heatmap panels of the standalone app, without a browser: they register, build
the shared accordions, make their features from the panel values, and a Generate through `make_generate` shows
their effect (a changed image and infotext keys; heatmap grids in the gallery with a caption naming the words)."""

from __future__ import annotations

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from lib_ext.app import panel_guidance, panel_heatmaps  # noqa: E402
from lib_ext.app.panels import Txt2ImgContext, discover  # noqa: E402
from lib_ext.app.ui import build_app, make_generate  # noqa: E402
from lib_ext.guidance.feature import GuidanceFeature  # noqa: E402
from lib_ext.toyworld.host import ToyHost  # noqa: E402

GUIDED = "a red circle AND_TOPK blue :0.8"


def built(host: ToyHost, module):
    """The panel as the page builds it: (panel, its components' default values)."""
    with gr.Blocks():
        prompt = gr.Textbox(elem_id="ps_prompt")
        others = [gr.Textbox() for _ in range(8)]
        ctx = Txt2ImgContext(host, prompt, *others)
        panel = module.build(ctx)
    return panel, ctx, [getattr(c, "value", None) for c in panel.inputs]


def generate(host, panels, prompt, batch=1, seed=3):
    """One Generate click: the base settings, then each panel's values (given as {name: values})."""
    run = make_generate(host, [(name, panel) for name, panel, _values in panels])
    values = [v for _name, _panel, vals in panels for v in vals]
    return run(prompt, "", seed, 3, 7.0, "Euler", batch, *values, None)


def guidance_values(defaults, prompt, enabled, **changes):
    """The guidance panel's inputs: the prompt box first, then enabled and the settings (SETTINGS_ORDER)."""
    from lib_ext.guidance.controls import SETTINGS_ORDER

    values = [prompt, enabled, *defaults[2:]]
    for name, value in changes.items():
        values[2 + SETTINGS_ORDER.index(name)] = value
    return values


def heatmap_values(panel, defaults, **changes):
    """The heatmap panel's inputs: the A1111 arguments without the hires-pass choice (and without the save boxes
    when the host does not save)."""
    from lib_ext.heatmaps.controls import ARG_NAMES

    absent = {"show_pass"} if len(panel.inputs) == 10 else {"show_pass", "save", "export_raw"}
    names = [n for n in ARG_NAMES if n not in absent]
    values = {**dict(zip(names, defaults)), **changes}
    return [values[n] for n in names]


# -- registration and page ------------------------------------------------------------------------------------
def test_the_app_discovers_both_panels_before_its_tabs(host):
    reg = discover()
    assert [e.name for e in reg.of_kind("txt2img")][:2] == ["guidance", "heatmaps"]
    assert "bandit" in [e.name for e in reg.of_kind("tab")]
    demo = build_app(host, reg)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"ps_guidance", "ps_guidance_add", "ps_heatmaps"} <= ids


def test_guidance_panel_reads_the_prompt_box_and_the_shared_controls(host):
    panel, ctx, defaults = built(host, panel_guidance)
    assert panel.inputs[0] is ctx.prompt and len(panel.inputs) == 10
    assert defaults[1] == "auto" and defaults[2] == "neutral"


def test_guidance_prompt_helper_appends_a_keyword_line_to_the_prompt_box(host):
    from lib_ext.guidance.controls import append_keyword_line

    assert append_keyword_line("a red circle", "AND_TOPK", "blue", 0.4) == "a red circle\nAND_TOPK blue :0.4"
    assert append_keyword_line(None, "AND_PERP", "(square:1.2)", -1) == "AND_PERP (square:1.2) :-1"
    assert append_keyword_line("a red circle", "AND_TOPK", " ", 1) == "a red circle"
    with gr.Blocks() as demo:
        ctx = Txt2ImgContext(host, gr.Textbox(), *[gr.Textbox() for _ in range(8)])
        panel_guidance.build(ctx)
    if hasattr(demo, "dependencies"):  # gradio 3: parallel lists of configs and functions
        events = [(d["inputs"], d["outputs"], d["targets"], f.fn) for d, f in zip(demo.dependencies, demo.fns)]
    else:  # gradio 4: BlockFunction objects carry their components and (id, event) targets
        events = [([c._id for c in f.inputs], [c._id for c in f.outputs], f.targets, f.fn) for f in demo.fns.values()]
    ((inputs, outputs, targets, _fn),) = (e for e in events if e[3] is append_keyword_line)
    assert inputs[0] == ctx.prompt._id and outputs == [ctx.prompt._id]
    target = targets[0][0] if isinstance(targets[0], tuple | list) else targets[0]
    assert demo.blocks[target].elem_id == "ps_guidance_add"


# -- make_feature -----------------------------------------------------------------------------------------------
def test_guidance_make_feature_on_off_and_bad_settings(host):
    _panel, _ctx, d = built(host, panel_guidance)
    make = panel_guidance.make_feature
    assert make(*guidance_values(d, "a red circle", False)) is None
    warn = make(*guidance_values(d, GUIDED, False))
    assert isinstance(warn, GuidanceFeature) and warn.enabled is False  # only warns
    assert warn.infotext() == {"Semantic guidance": "off"}
    assert make(*guidance_values(d, "a red circle", True)) is None  # nothing to guide: the host's own behaviour
    for switch in ("auto", "on", "off"):
        assert make(*guidance_values(d, "a red circle", switch)) is None
    auto = make(*guidance_values(d, GUIDED, "auto"))
    assert auto.enabled and auto.auto and auto.infotext()["Semantic guidance"] == "neutral (auto)"
    assert make(*guidance_values(d, "a red circle <sega:topk=0.1>", "auto")) is None  # only keywords switch it on
    assert make(*guidance_values(d, "a red circle <sega:topk=0.1>", "on")).enabled
    with pytest.raises(ValueError, match="enabled must be one of auto, on, off"):
        make(*guidance_values(d, GUIDED, "maybe"))
    on = make(*guidance_values(d, GUIDED, True, mode="sega", warmup="2", cooldown="none"))
    assert on.enabled and on.settings.mode == "sega" and on.settings.sega.cooldown is None
    assert on.settings.sega.warmup.value == 2 and not on.settings.sega.warmup.relative
    with pytest.raises(ValueError, match="semantic guidance settings: warmup"):
        make(*guidance_values(d, GUIDED, True, warmup="abc"))


def test_heatmaps_make_feature_on_off_and_bad_settings(host):
    panel, _ctx, d = built(host, panel_heatmaps)
    assert len(panel.inputs) == 8  # no hires-pass choice, no save boxes: this host does not save
    assert panel.make_feature(*d) is None
    feature = panel.make_feature(*heatmap_values(panel, d, enabled=True, words="red, blue square", mode="delta"))
    assert isinstance(feature, panel_heatmaps.PanelHeatmaps)
    assert feature.settings.words == ("red", "blue square") and feature.settings.mode == "delta"
    with pytest.raises(ValueError, match="attention heatmap settings: time focus"):
        panel.make_feature(*heatmap_values(panel, d, enabled=True, time_start=0.8, time_end=0.2))
    assert panel.make_feature(*heatmap_values(panel, d, enabled=False, time_start=0.8, time_end=0.2)) is None
    host.outdir = "somewhere"
    saving, _ctx, d2 = built(host, panel_heatmaps)
    assert len(saving.inputs) == 10 and d2[-2:] == [False, False]


# -- generations ------------------------------------------------------------------------------------------------
def test_guidance_changes_the_image_and_writes_its_infotext(host):
    panel, _ctx, d = built(host, panel_guidance)
    on = generate(host, [("guidance", panel, guidance_values(d, GUIDED, True))], GUIDED)
    off = generate(host, [("guidance", panel, guidance_values(d, GUIDED, False))], GUIDED)
    assert "Semantic guidance: neutral" in on[1] and "Semantic guidance top-k: 0.05" in on[1]
    assert "Semantic guidance: off" in off[1] and "top-k" not in off[1]
    auto = generate(host, [("guidance", panel, guidance_values(d, GUIDED, "auto"))], GUIDED)
    assert "Semantic guidance: neutral (auto)" in auto[1]
    assert np.array_equal(np.asarray(auto[0][0]), np.asarray(on[0][0]))
    assert not np.array_equal(np.asarray(on[0][0]), np.asarray(off[0][0]))
    assert "semantic guidance is off" in off[2] and "semantic guidance is off" not in on[2]
    sega = generate(host, [("guidance", panel, guidance_values(d, GUIDED, True, mode="sega", warmup="0"))], GUIDED)
    assert "Semantic guidance: sega" in sega[1] and "Semantic guidance SEGA:" in sega[1]
    assert not np.array_equal(np.asarray(sega[0][0]), np.asarray(on[0][0]))
    bad = generate(host, [("guidance", panel, guidance_values(d, GUIDED, True, warmup="abc"))], GUIDED)
    assert bad[0] == [] and "Error: semantic guidance settings: warmup" in bad[2]


def test_heatmap_grids_join_the_gallery_with_their_words(host):
    panel, _ctx, d = built(host, panel_heatmaps)
    prompt = "a red circle and a blue square"
    images, info, status, infotexts = generate(
        host, [("heatmaps", panel, heatmap_values(panel, d, enabled=True))], prompt, batch=2
    )
    assert len(images) == 4 and len(infotexts) == 4
    assert all(not isinstance(im, tuple) for im in images[:2])
    for seed, (grid, caption) in zip((3, 4), images[2:]):
        assert caption.startswith(f"Attention heatmaps (positive), seed {seed}: ")
        assert {"red", "circle", "blue", "square"} <= set(caption.split(": ", 1)[1].split(", "))
        assert grid.size[0] >= 2 * 256 and grid.size[1] > 256  # one 256-px tile per word, captioned
    assert infotexts[2] == images[2][1] and info == infotexts[0] and status == ""


def test_heatmaps_per_layer_and_a_missing_word(host):
    panel, _ctx, d = built(host, panel_heatmaps)
    values = heatmap_values(panel, d, enabled=True, words="red, zebra", per_layer=True)
    images, _info, _status, _ = generate(host, [("heatmaps", panel, values)], "a red circle")
    captions = [im[1] for im in images[1:]]
    assert captions[0].endswith(": red, zebra")  # zebra's tile says it is not in the prompt
    assert captions[1:] == ["Attention heatmaps per layer (positive), seed 3: red"]  # zebra has no layers
    only_missing = heatmap_values(panel, d, enabled=True, words="zebra")
    images, _info, status, _ = generate(host, [("heatmaps", panel, only_missing)], "a red circle")
    assert len(images) == 1 and "nothing to show for image 1" in status and "zebra" in status


def test_heatmaps_export_raw_maps_and_save_grids_to_the_apps_folder(host, tmp_path):
    from lib_ext.heatmaps.render import load_safetensors

    host.outdir = tmp_path
    panel, _ctx, d = built(host, panel_heatmaps)
    values = heatmap_values(panel, d, enabled=True, words="red, circle", save=True, export_raw=True)
    _images, _info, status, _ = generate(host, [("heatmaps", panel, values)], "a red circle", seed=11)
    folder = tmp_path / panel_heatmaps.EXPORT_FOLDER
    (raw,) = folder.glob("*.safetensors")
    maps, meta = load_safetensors(raw)
    assert list(maps) == ["red", "circle"] and meta["prompt"] == "a red circle" and meta["seed"] == "11"
    assert [p.name for p in folder.glob("*.png")] == ["00000-11.png"]
    assert [p.name for p in tmp_path.glob("*.png")] == ["00000-11.png"]  # the image itself, by --save
    assert "raw maps saved to" in status


def test_guidance_and_heatmaps_in_the_same_generation(host):
    g_panel, _c, gd = built(host, panel_guidance)
    h_panel, _c2, hd = built(host, panel_heatmaps)
    panels = [
        ("guidance", g_panel, guidance_values(gd, GUIDED, True)),
        ("heatmaps", h_panel, heatmap_values(h_panel, hd, enabled=True, words="circle, blue")),
    ]
    images, info, status, infotexts = generate(host, panels, GUIDED)
    assert "Semantic guidance: neutral" in info
    assert len(images) == 2 and images[1][1].endswith(": circle, blue")
    assert "not in the prompt" not in status  # "blue" comes from the concept's own cond row
