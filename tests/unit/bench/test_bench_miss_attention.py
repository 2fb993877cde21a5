"""`bench miss_attention`: shares of each word's map on the objects the judge found, and which duplicates the
sampler built from the word's attention (no model: pictures drawn by the scene generator, maps made to order)."""

from __future__ import annotations

import pytest
import torch

from bench import miss_attention as ma
from bench import webui_quality as wq
from lib_ext.toyworld.judge import judge
from lib_ext.toyworld.scenes import render

# "a red circle and a blue square" drawn with a second blue square
PICTURE = render([("circle", "red", 8, 8, 9), ("square", "blue", 24, 8, 8), ("square", "blue", 16, 24, 8)]).image


def _maps(square_on_both: bool) -> dict[str, torch.Tensor]:
    found = judge(PICTURE)
    masks = {(d.color, d.shape, round(d.cy)): torch.from_numpy(d.mask).float() for d in found}
    circle = next(m for (c, s, _), m in masks.items() if s == "circle")
    upper = next(m for (c, s, y), m in masks.items() if s == "square" and y < 16)
    lower = next(m for (c, s, y), m in masks.items() if s == "square" and y >= 16)
    square = upper + lower if square_on_both else upper + 0.05 * lower
    return {"a": circle + square, "vermilion": circle, "circle": circle, "cerulean": square, "square": square}


def test_shares_and_a_duplicate_whose_words_cover_both_copies():
    found = judge(PICTURE)
    assert sorted((d.color, d.shape) for d in found) == [("blue", "square"), ("blue", "square"), ("red", "circle")]
    caption = "a red circle and a blue square"
    assert ma.duplicates(found, caption) == [("blue", "square")]
    assert ma.duplicates(found, "a red circle and a blue square and a blue square") == []
    split = ma.map_shares(wq.Output(PICTURE, _maps(True)), found)
    for word, row in split.items():
        assert sum(row) == pytest.approx(1.0, abs=1e-6), word  # every map's mass lies on the objects here
    assert ma.is_split(("blue", "square"), found, split)  # the synonym cerulean stands for blue
    one = ma.map_shares(wq.Output(PICTURE, _maps(False)), found)
    assert not ma.is_split(("blue", "square"), found, one)
    assert not ma.is_split(("blue", "square"), found, {"a": [0.3, 0.3, 0.4]})  # no word of the phrase: not split


def test_report_counts_misses_duplicates_and_splits_and_reads_the_pairs():
    class Backend:
        def __init__(self) -> None:
            self.seeds: list[int] = []

        def generate(self, prompts, seed, sampler, cfg, hires, heatmaps, sega):
            self.seeds.append(seed)
            return [wq.Output(PICTURE, _maps(True)) for _ in prompts]

    caps = ["a red circle and a blue square", "a red circle", "a red circle and a blue square"]
    backend = Backend()
    batch2 = next(c for c in wq.CASES if c.name == "batch2")
    counts = ma.report(backend, batch2, caps, [0, 1, 2], only_misses=True)
    assert counts == {"misses": 3, "duplicates": 2, "duplicates_split": 2}
    assert backend.seeds == [wq.IMAGE_SEED, wq.IMAGE_SEED + 2]  # batch2 draws captions in pairs, as run_case does
    assert ma.chosen_pairs(" multi_token:14, plain:6 ") == [("multi_token", 14), ("plain", 6)]
    for bad in ("plainer:6", "plain:x", "plain"):
        with pytest.raises(SystemExit, match="case:index"):
            ma.chosen_pairs(bad)
