from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lib_ext.heatmaps.aggregate import (
    combine_mode,
    iou,
    normalize_minmax,
    resize_map,
    threshold_mask,
    token_normalize,
    word_map,
)
from lib_ext.heatmaps.render import (
    COLORMAPS,
    colorize,
    export_safetensors,
    load_safetensors,
    mode_map,
    overlay,
    resize_to,
    word_grid,
)

JET_LOW = (0, 0, 128)  # jet: dark blue at 0, dark red at 1 (RGB)
JET_HIGH = (128, 0, 0)


def test_colorize_is_rgb_and_knows_the_maps():
    rgb = colorize(np.array([[0.0, 1.0]]), "jet")
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == JET_LOW and tuple(rgb[0, 1]) == JET_HIGH
    for name in ("jet", "turbo", "inferno", "viridis", "magma"):
        assert name in COLORMAPS
    with pytest.raises(ValueError, match="unknown colormap 'nope'"):
        colorize(np.zeros((2, 2)), "nope")


def test_overlay_non_square_image_with_asymmetric_map_is_upright():
    image = Image.new("RGB", (48, 32), (10, 20, 30))  # 48 wide, 32 high
    heat = np.zeros((2, 3), dtype=np.float32)  # [H, W]: 2 rows, 3 columns
    heat[0, 2] = 1.0  # hot top-right corner
    out = overlay(image, heat, alpha=1.0, cmap="jet")
    assert out.size == (48, 32)
    px = np.asarray(out)
    assert tuple(px[0, 47]) == JET_HIGH  # top-right: hot
    assert tuple(px[31, 0]) == JET_LOW  # bottom-left: cold
    assert tuple(px[31, 47]) != JET_HIGH  # a transposed map would heat a different corner
    half = np.asarray(overlay(image, heat, alpha=0.5))
    assert np.abs(half[31, 0].astype(int) - (np.array(JET_LOW) + np.array([10, 20, 30])) / 2).max() <= 1


def test_resize_to_keeps_orientation():
    heat = torch.zeros(4, 6)
    heat[3, 0] = 1  # bottom-left
    big = resize_to(heat, 40, 60)
    assert big.shape == (40, 60)
    assert np.unravel_index(big.argmax(), big.shape)[0] > 30
    assert np.unravel_index(big.argmax(), big.shape)[1] < 10
    small = resize_map(heat, 40, 60)
    assert small.shape == (40, 60) and float(small.min()) >= 0


def test_word_grid_layout_and_captions():
    image = Image.new("RGB", (60, 40), (200, 200, 200))
    tiles = [("monkey", np.random.rand(8, 12)), ("ナウシカ", np.random.rand(8, 12)), ("hat", np.random.rand(8, 12))]
    grid = word_grid(image, tiles, alpha=0.5, cmap="turbo")
    columns, rows = 2, 2
    caption = grid.height // rows - 40
    assert grid.width == columns * 60 and caption > 0
    px = np.asarray(grid)
    assert (px[:caption, :60] < 100).any()  # the caption's dark text on white
    assert (px[-(40 + caption) :, 60:] == 255).all()  # the unused fourth tile stays blank
    with_message = np.asarray(word_grid(image, [("giraffe", None, "'giraffe' is not in the prompt")], alpha=1.0))
    assert (with_message[caption:] != 255).any() and (
        np.abs(with_message[caption:].astype(int) - [160, 0, 0]).sum(-1) < 60
    ).any()
    one_row = word_grid(image, tiles, columns=3, tile_width=30)
    assert one_row.width == 90 and one_row.height > 20
    with pytest.raises(ValueError):
        word_grid(image, [])


def test_word_map_mean_over_positions_and_normalised():
    maps = torch.zeros(77, 2, 3)
    maps[1, 0, 0] = 2.0
    maps[2, 1, 2] = 4.0
    m = word_map(maps, [1, 2], normalize=False)
    torch.testing.assert_close(m[0, 0], torch.tensor(1.0))
    torch.testing.assert_close(m[1, 2], torch.tensor(2.0))
    n = word_map(maps, [1, 2])
    assert float(n.max()) == 1.0 and float(n.min()) == 0.0
    with pytest.raises(ValueError, match="outside the captured context of 77"):
        word_map(maps, [80])
    assert float(normalize_minmax(torch.ones(3, 3)).max()) == 0.0


def test_token_normalize_divides_by_real_tokens():
    maps = torch.rand(77, 4, 4)
    norm = token_normalize(maps, 3)
    torch.testing.assert_close(norm[1:4].sum(0), torch.ones(4, 4), rtol=1e-4, atol=1e-4)


def test_modes():
    pos = torch.tensor([[1.0, 0.5], [0.0, 0.2]])
    neg = torch.tensor([[0.2, 0.8], [0.5, 0.0]])
    torch.testing.assert_close(combine_mode(pos, neg, "delta"), torch.tensor([[0.8, 0.0], [0.0, 0.2]]))
    assert torch.equal(combine_mode(pos, neg, "negative"), neg)
    assert torch.equal(combine_mode(pos, None, "delta"), pos)
    assert torch.equal(combine_mode(None, neg, "positive"), torch.zeros(2, 2))
    torch.testing.assert_close(mode_map(pos.numpy(), neg.numpy(), "delta"), combine_mode(pos, neg, "delta"))
    with pytest.raises(ValueError, match="unknown heatmap mode"):
        combine_mode(pos, neg, "signed")


def test_threshold_and_iou():
    heat = torch.tensor([[0.0, 0.3], [0.5, 1.0]])
    mask = threshold_mask(heat, 0.4)
    assert mask.tolist() == [[False, False], [True, True]]
    assert iou(mask, torch.tensor([[False, False], [True, False]])) == 0.5
    assert iou(torch.zeros(2, 2), torch.zeros(2, 2)) == 1.0


def test_export_safetensors_round_trip(tmp_path):
    maps = {"monkey": torch.rand(64, 48), "ナウシカ": torch.rand(64, 48), "red hat": torch.rand(2, 3)}
    path = tmp_path / "maps.safetensors"
    export_safetensors(path, maps, list(maps), {"prompt": "monkey ナウシカ red hat", "steps": 20, "size": [64, 48]})
    loaded, meta = load_safetensors(path)
    assert list(loaded) == list(maps)
    for word, t in maps.items():
        assert torch.equal(loaded[word], t)
    assert json.loads(meta["words"]) == list(maps)
    assert json.loads(meta["shapes"]) == [[64, 48], [64, 48], [2, 3]]
    assert meta["prompt"] == "monkey ナウシカ red hat" and meta["steps"] == "20"
    assert json.loads(meta["size"]) == [64, 48]
    stacked = tmp_path / "stacked.safetensors"
    export_safetensors(stacked, torch.rand(2, 4, 4), ["a", "b"])
    assert list(load_safetensors(stacked)[0]) == ["a", "b"]
    with pytest.raises(ValueError, match="2 maps for 3 words"):
        export_safetensors(stacked, torch.rand(2, 4, 4), ["a", "b", "c"])


DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def test_cjk_caption_never_drawn_as_missing_glyph_boxes(monkeypatch):
    import lib_ext.heatmaps.render as render

    latin_only = render._load(DEJAVU, 20)
    if latin_only is None:
        pytest.skip(f"needs a Latin-only TrueType font ({DEJAVU}, Debian fonts-dejavu-core)")
    assert render.missing_glyphs(latin_only, "a cat") == []
    assert render.missing_glyphs(latin_only, "猫 ねこ") == ["猫", "ね", "こ"]
    # Only a Latin font available: the caption shows the code point and the word is reported, not a tofu box.
    monkeypatch.setattr(render, "_FONT_CANDIDATES", (DEJAVU,))
    render._font.cache_clear()
    try:
        image = Image.new("RGB", (120, 80), (200, 200, 200))
        unreadable: list[str] = []
        word_grid(image, [("猫", np.random.rand(8, 12)), ("cat", np.random.rand(8, 12))], unreadable=unreadable)
        assert unreadable == ["猫"]
        assert render._drawable("猫", latin_only) == "U+732B"
    finally:
        render._font.cache_clear()


def test_cjk_caption_uses_a_font_that_has_the_glyphs():
    import lib_ext.heatmaps.render as render

    cjk = next((f for f in (render._load(c, 20) for c in render._FONT_CANDIDATES) if f is not None
                and not render.missing_glyphs(f, "猫ねこ")), None)  # fmt: skip
    if cjk is None:
        pytest.skip("no CJK font installed (Debian: fonts-noto-cjk): the fallback is tested above")
    unreadable: list[str] = []
    word_grid(Image.new("RGB", (120, 80)), [("猫", np.random.rand(8, 12))], unreadable=unreadable)
    assert unreadable == []
    assert not render.missing_glyphs(render._font_for("ねこ", 20, None), "ねこ")
