"""The semantic-guidance bench's trial logic: captions, concept choice after the base image, scoring rules."""

from __future__ import annotations

import numpy as np

from bench import semantic_guidance as G
from lib_ext.toyworld.judge import DetectedObject
from lib_ext.toyworld.vocab import COLORS, SHAPES


def _obj(color: str, shape: str, rows: slice) -> DetectedObject:
    mask = np.zeros((8, 8), bool)
    mask[rows, 2:6] = True
    return DetectedObject(shape=shape, color=color, mask=mask, area=int(mask.sum()))


def test_trials_cover_every_shape_and_recolour_concepts_differ_from_the_caption():
    recolour = G.make_trials(quick=False, kind="recolour")
    assert {t.shape for t in recolour} == set(SHAPES)
    assert all(t.concept != t.color and t.concept in COLORS for t in recolour)
    assert recolour[0].caption == f"a {recolour[0].color} {recolour[0].shape}"
    add = G.make_trials(quick=True, kind="add")
    assert all(t.color is None and t.caption == t.shape for t in add)
    assert len({t.seed for t in add}) == len(add)


def test_add_trials_choose_a_concept_other_than_the_drawn_colour():
    trials = G.make_trials(quick=True, kind="add")[:3]
    drawn = [_obj("red", trials[0].shape, slice(0, 4)), None, _obj("yellow", trials[2].shape, slice(0, 4))]
    chosen = G.choose_concepts(trials, drawn)
    assert chosen[0].concept != "red" and chosen[2].concept != "yellow"
    assert all(c.concept in COLORS for c in chosen)
    assert chosen[0].concept_caption == f"{chosen[0].concept} {trials[0].shape}"


def test_scoring_rules():
    base = _obj("red", "circle", slice(0, 4))
    assert G.is_drawn(base, None, "circle") and G.is_drawn(base, "red", "circle")
    assert not G.is_drawn(base, "blue", "circle") and not G.is_drawn(None, None, "circle")
    moved = _obj("red", "circle", slice(4, 8))
    assert G.mask_iou(base, base) == 1.0 and G.mask_iou(base, moved) == 0.0
    t = G.Trial(1, "circle", "red", "blue")
    assert G.concept_added([base, _obj("blue", "square", slice(5, 8))], base, t)
    assert not G.concept_added([moved, _obj("blue", "square", slice(5, 8))], base, t)  # base object moved
    assert not G.concept_added([base], base, t)  # nothing blue
