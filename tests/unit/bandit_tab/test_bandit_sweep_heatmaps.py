"""Word heatmaps inside a seed-bandit sweep on the toy host: off by default; when a session asks, every image of
a round gets its per-word grid saved beside it, referenced from the store, and shown by the tab."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from PIL import Image

from lib_ext.app import panel_bandit
from lib_ext.app.panels import TabContext
from lib_ext.seam import GenerationRequest
from lib_ext.toyworld.host import ToyHost


def build(host: ToyHost, data_dir: Path) -> tuple[Any, Any]:
    with gr.Blocks() as blocks:
        panel_bandit.build(TabContext(host=host, data_dir=data_dir, app_hooks=[]))
    fns = blocks.fns.values() if isinstance(blocks.fns, dict) else blocks.fns  # gradio 4: a dict by id
    tab = next(f.fn.__self__ for f in fns if getattr(f.fn, "__name__", "") == "attachments_view")
    return blocks, tab


def test_a_round_with_heatmaps_on_attaches_a_grid_per_image_that_the_tab_shows(host, tmp_path):
    _blocks, tab = build(host, tmp_path / "bandit")
    sid = tab.create_session("heat", '{"steps": 2, "heatmaps": {"words": "red, circle"}}', None, None, 0, 3, False)
    value = sid[0]["value"]
    tab.add_arm(value, "a red circle", "", "", "")
    tab.add_arm(value, "a blue square", "", "", "")
    out = tab.run_round(value, 3, "uniform sweep (like an X/Y/Z grid)", False)
    assert "Round 1: 3 image(s)" in out[-1], out[-1]
    images = tab.svc.images(1)
    assert len(images) == 3
    assert {im["prompt"] for im in images} == {"a red circle", "a blue square"}
    for im in images:
        image_path = Path(im["path"])
        # the rated image itself is untouched: the toy model's 32 px image with the bandit's infotext
        assert Image.open(image_path).size == (32, 32)
        if im["prompt"] == "a blue square":  # neither word is in this prompt: no grid, the infotext says why
            assert im["attachments"] == []
            assert "not in the prompt" in Image.open(image_path).info["parameters"]
            continue
        (att,) = im["attachments"]
        grid_path = Path(att["path"])
        assert grid_path.parent == image_path.parent and grid_path.name == f"{image_path.stem}-heatmaps.png"
        assert att["caption"].startswith("Attention heatmaps") and im["prompt"] in att["caption"]
        grid = Image.open(grid_path)
        # two word tiles of 128 px side by side, each under its caption line
        assert grid.width == 2 * panel_bandit.HEATMAP_TILE and grid.height > panel_bandit.HEATMAP_TILE
    # the tab shows the grid of the image on show (a separate event after the rating) ...
    with_grid = [im for im in images if im["attachments"]]
    shown = tab.attachments_view(str(with_grid[0]["id"]))
    assert shown["visible"] is True and shown["value"][0][0] == with_grid[0]["attachments"][0]["path"]
    without = [im for im in images if not im["attachments"]]
    assert tab.attachments_view(str(without[0]["id"]))["visible"] is False
    # ... and of an image already rated, picked from the round's gallery
    first = images.index(with_grid[0])
    tab.rate(value, str(with_grid[0]["id"]), out[3], "like")
    picked = tab.select_image(value, out[3], first)
    assert picked[2] == str(with_grid[0]["id"]) and tab.attachments_view(picked[2])["visible"] is True
    # ... and of any image picked in "Browse an arm's images"
    browsed = tab.browse(value, "(all arms)", "all")[0]
    assert len(browsed) == 3
    for index, im in enumerate(images):
        view, status = tab.browse_select(value, "(all arms)", "all", index)
        assert view["visible"] is bool(im["attachments"]) and f"Image {im['id']}" in status
        if im["attachments"]:
            assert view["value"][0][0] == im["attachments"][0]["path"]
    assert tab.browse_select(value, "(all arms)", "all", 7)[0]["visible"] is False
    # the rating handler's outputs are unchanged (image, caption, id, status): heatmaps never slow it down
    assert len(tab.rate(value, picked[2], out[3], "dislike")) == 4


def test_heatmaps_are_off_by_default_and_the_gallery_stays_hidden(host, tmp_path):
    _blocks, tab = build(host, tmp_path / "bandit")
    value = tab.create_session("plain", '{"steps": 2}', None, None, 0, 2, False)[0]["value"]
    tab.add_arm(value, "a red circle", "", "", "")
    out = tab.run_round(value, 2, None, False)
    assert "Round 1: 2 image(s)" in out[-1], out[-1]
    assert all(im["attachments"] == [] for im in tab.svc.images(1))
    assert tab.attachments_view(out[2])["visible"] is False
    assert tab.attachments_view("")["visible"] is False


def test_a_bad_heatmap_setting_is_refused_and_a_stored_one_fails_only_its_arm(host, tmp_path):
    _blocks, tab = build(host, tmp_path / "bandit")
    out = tab.create_session("bad", '{"steps": 2, "heatmaps": {"colour": "red"}}', None, None, 0, 2, False)
    assert "unknown key(s) ['colour']" in html.unescape(out[-1]) and tab.svc.list_sessions() == []
    uniform = "uniform sweep (like an X/Y/Z grid)"  # every arm in every round
    value = tab.create_session("ok", '{"steps": 2}', uniform, None, 0, 4, False)[0]["value"]
    tab.add_arm(value, "a red circle", "", "", "")
    tab.add_arm(value, "a blue square", "", "", "")
    # an arm stored before settings were checked: its images fail, the other arm's are generated
    tab.svc.store.conn.execute("UPDATE arms SET settings = ? WHERE id = 2", ('{"heatmaps": {"colour": "red"}}',))
    out = tab.run_round(value, 4, None, False)
    status = html.unescape(out[-1])
    assert "unknown key(s) ['colour']" in status and "arm 2" in status, status
    images = tab.svc.images(1)
    assert images and {im["arm_id"] for im in images} == {1}


def test_heatmap_setting_forms():
    assert panel_bandit.heatmap_settings(None) is None and panel_bandit.heatmap_settings(False) is None
    assert panel_bandit.heatmap_settings({"enabled": False, "words": "x"}) is None
    assert panel_bandit.heatmap_settings(True).words == ()
    s = panel_bandit.heatmap_settings({"words": " cat, red hat ,", "mode": "delta", "alpha": 0.3})
    assert s.words == ("cat", "red hat") and s.mode == "delta" and s.alpha == 0.3
    assert panel_bandit.heatmap_settings({"words": ["a", "b"]}).words == ("a", "b")
    for bad in ("yes", {"mode": "sideways"}, {"time_start": 0.9, "time_end": 0.1}, {"alpha": "x"}):
        with pytest.raises(ValueError):
            panel_bandit.heatmap_settings(bad)


def test_toy_run_jobs_per_request_features_and_attached_images(host):
    seen: list[str] = []

    def features(req: GenerationRequest) -> list:
        seen.append(req.prompt)
        return []

    def attach(req: GenerationRequest, processed: Any) -> None:
        host.attach_images(processed, [Image.new("RGB", (8, 8))], [f"extra for {req.prompt}"])

    reqs = [GenerationRequest("a red circle", seed=1, settings={"steps": 1}), GenerationRequest("a cat", seed=2)]
    reqs[1].settings["steps"] = 1
    plain = host.run_jobs(reqs[:1])
    assert plain[0].extra_images == [] and plain[0].extra_infotexts == []
    results = host.run_jobs(reqs, features=features, postprocess=attach)
    assert seen == ["a red circle", "a cat"]
    assert [r.extra_infotexts for r in results] == [["extra for a red circle"], ["extra for a cat"]]
    assert all(r.extra_images[0].size == (8, 8) and r.image.size == (32, 32) for r in results)
    assert results[0].infotext == plain[0].infotext  # the image's own infotext, not the attachment's
