"""The accordions shared by the A1111 scripts and the app (`guidance.controls`, `heatmaps.controls`): the components
each host builds, in the argument order A1111's API relies on, and the values → settings conversions."""

from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from lib_ext.guidance import controls as gc  # noqa: E402
from lib_ext.heatmaps import controls as hc  # noqa: E402


def test_guidance_controls_in_argument_order_with_the_defaults():
    with gr.Blocks():
        c = gc.build_controls("T", {"mode": "sega", "topk_ratio": 0.1}, elem_id="x")
    labels = [getattr(v, "label", None) for v in c.values]
    assert labels[0] == gc.ENABLE_LABEL and labels[1].startswith("Mode") and labels[2] == "CFG rescale φ"
    assert len(c.values) == 1 + len(gc.SETTINGS_ORDER) == 9
    assert [v.value for v in c.values] == ["auto", "sega", 0.0, 0.1, 0.9, "40%", "", 0.1, 0.4]
    assert c.helper_keyword.value == "AND_TOPK" and list(gc.KEYWORDS)[-1] == "AND"


def test_guidance_values_to_settings():
    s = gc.settings_from_values({"mode": "sega", "warmup": "3", "cooldown": " Off ", "threshold": 0.7})
    assert s.mode == "sega" and s.sega.warmup.value == 3 and s.sega.cooldown is None and s.sega.threshold == 0.7
    assert gc.settings_from_values({"warmup": "25%"}).sega.warmup.relative
    with pytest.raises(ValueError, match="warmup must be set"):
        gc.settings_from_values({"warmup": "none"})
    with pytest.raises(ValueError, match="cfg_rescale must be in"):
        gc.settings_from_values({"cfg_rescale": 2})


def test_heatmap_controls_per_host():
    with gr.Blocks():
        a1111 = hc.build_controls("T", elem_id="a")
        app = hc.build_controls("T", hires=False, saving=False)
    assert [n for n, _c in a1111.named()] == list(hc.ARG_NAMES)
    assert [c.value for _n, c in a1111.named()] == [hc.DEFAULTS[n] for n in hc.ARG_NAMES]
    assert [n for n, _c in app.named()] == [n for n in hc.ARG_NAMES if n not in ("show_pass", "save", "export_raw")]


def test_heatmap_values_to_settings():
    enabled, s, extra = hc.settings_from_values({"enabled": "yes", "words": " red , blue square,", "alpha": "0.3"})
    assert enabled and s.words == ("red", "blue square") and s.alpha == 0.3 and s.time_focus == (0.0, 1.0)
    assert extra == {"show_pass": "hires", "save": False, "export_raw": False}
    for bad, match in (
        ({"alpha": 1.5}, "alpha must be in"),
        ({"show_pass": "third"}, "show_pass must be one of"),
        ({"mode": "sideways"}, "unknown heatmap mode"),
        ({"colormap": "nope"}, "unknown colormap"),
        ({"per_layer": "maybe"}, "per_layer must be true or false"),
        ({"time_start": "x"}, "must be numbers"),
    ):
        with pytest.raises(ValueError, match=match):
            hc.settings_from_values(bad)
