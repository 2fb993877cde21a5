"""Word heatmaps inside the seed-bandit sweep on the v1.10.1 double: the heatmap script runs inside each job of
a round, its grid comes back attached to the image (`GenerationResult.extra_images`), is saved beside it in the
bandit's data folder, referenced from the store and shown by the tab."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.host.test_a1111_bandit import handler, tabs_blocks, webui  # noqa: F401  (webui: fixture)


def run_handler(m: Any, tab: Any) -> Any:
    return handler(tabs_blocks(m), tab.c["run"])


def test_a_sweep_round_with_heatmaps_attaches_a_grid_per_image(webui, sd_model, tmp_path):  # noqa: F811
    m, _demo, _app = webui
    b = sys.modules["promptscope_a1111.bandit_tab"]
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    tab = b.current_tab
    settings = '{"steps": 2, "width": 64, "height": 64, "heatmaps": {"words": ["cat", "red"]}}'
    value = tab.create_session("heat", settings, None, None, 0, 2, False)[0]["value"]
    tab.add_arm(value, "a red cat", "blurry", "", "")
    tab.add_arm(value, "a plain dog", "", "", '{"heatmaps": false}')  # an arm can turn them off
    out = run_handler(m, tab)(value, 4, "uniform sweep (like an X/Y/Z grid)", False)
    assert "Round 1: 4 image(s)" in out[-1], out[-1]
    images = b.provider().images(1)
    assert {im["prompt"] for im in images} == {"a red cat", "a plain dog"}
    for im in images:
        image_path = Path(im["path"])
        assert Image.open(image_path).size == (64, 64)  # the generated image, never the grid
        assert "PromptScope session: 1" in Image.open(image_path).info["parameters"]
        if im["prompt"] == "a plain dog":
            assert im["attachments"] == []
            continue
        (att,) = im["attachments"]
        grid_path = Path(att["path"])
        assert grid_path.parent == image_path.parent and grid_path.name == f"{image_path.stem}-heatmaps.png"
        assert att["caption"].startswith("Attention heatmaps") and f"seed {im['seed']}" in att["caption"]
        assert Image.open(grid_path).width == 2 * 64  # two word tiles ("cat", "red") over the 64 px image
        shown = tab.attachments_view(str(im["id"]))
        assert shown["visible"] is True and shown["value"] == [(str(grid_path), att["caption"])]
    # the script's own "save the grids" stays off: A1111's outputs folder gets no grid
    outdir = Path(m.shared.opts.outdir_txt2img_samples)
    assert (list(outdir.rglob("*-heatmaps*")) if outdir.exists() else []) == []


def test_run_jobs_returns_what_scripts_attached_and_nothing_when_heatmaps_are_off(webui, sd_model):  # noqa: F811
    m, _demo, _app = webui
    b = sys.modules["promptscope_a1111.bandit_tab"]
    seam = sys.modules["promptscope_lib_ext.seam"]
    req = seam.GenerationRequest("a red cat", "", 7, {"steps": 2, "width": 64, "height": 64})
    with m.call_queue.queue_lock:
        (plain,) = b.run_jobs([req])
        heat = seam.GenerationRequest("a red cat", "", 7, {**req.settings, "heatmaps": True})
        (with_grid,) = b.run_jobs([heat])
    assert plain.extra_images == [] and plain.extra_infotexts == []
    assert len(with_grid.extra_images) == 1 and with_grid.extra_infotexts[0].startswith("Attention heatmaps")
    assert with_grid.image.size == (64, 64) and with_grid.infotext == plain.infotext
    with pytest.raises(ValueError, match="heatmaps"):
        b.with_features(seam.GenerationRequest("x", settings={"heatmaps": "yes"}))
