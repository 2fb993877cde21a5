"""The judge reads rendered scenes back into the objects that were drawn, and scores captions exactly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib_ext.toyworld import scenes
from lib_ext.toyworld.judge import DetectedObject, caption_matches, classify_pixels, judge, parse_caption
from lib_ext.toyworld.vocab import BACKGROUND_RGB, COLORS, SHAPES


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _noisy(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return np.clip(image.astype(np.float64) + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)


def test_judge_is_right_on_at_least_99_percent_of_500_rendered_scenes():
    rng = np.random.default_rng(2024)
    right, mask_ious = 0, []
    for _ in range(500):
        scene = scenes.random_scene(rng)
        found = judge(scene.image)
        right += caption_matches(found, scene.caption)
        for obj in scene.objects:
            same = [d for d in found if (d.color, d.shape) == (obj.color, obj.shape)]
            mask_ious.append(max((_iou(d.mask, obj.mask) for d in same), default=0.0))
    assert right / 500 >= 0.99
    # The masks are the objects' own pixels, not just the right labels.
    assert np.mean(mask_ious) >= 0.98
    assert np.percentile(mask_ious, 1) >= 0.9


def test_judge_survives_per_pixel_noise_of_a_generator():
    rng = np.random.default_rng(7)
    n = 150
    right = sum(
        caption_matches(judge(_noisy(s.image, rng, 25.0)), s.caption)
        for s in (scenes.random_scene(rng) for _ in range(n))
    )
    assert right / n >= 0.95


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("color", list(COLORS))
def test_every_shape_and_colour_at_the_smallest_and_largest_size(shape, color):
    for size in (scenes.MIN_SIZE, scenes.MAX_SIZE):
        scene = scenes.render([(shape, color, 16.0, 16.0, size)])
        found = judge(scene.image)
        assert [(d.color, d.shape) for d in found] == [(color, shape)]
        assert _iou(found[0].mask, scene.objects[0].mask) >= 0.95


def test_plain_background_and_speckle_are_no_objects():
    grey = np.empty((32, 32, 3), np.uint8)
    grey[:] = BACKGROUND_RGB
    assert judge(grey) == []
    speckled = grey.copy()
    speckled[3, 3] = COLORS["red"]
    speckled[20, 7:9] = COLORS["blue"]
    speckled[10:12, 25:27] = COLORS["green"]  # 4 px: far below the smallest object
    speckled[28, 0:30] = COLORS["yellow"]  # a 1-px line is not an object either
    assert judge(speckled) == []
    speckled[2:6, 2:7] = COLORS["red"]  # a solid 20 px clump: still under the smallest shape's two thirds
    assert judge(speckled) == []
    speckled[20:26, 20:26] = COLORS["green"]  # 36 px, the area of the smallest triangle a scene draws
    assert [(d.color, d.shape) for d in judge(speckled)] == [("green", "square")]


def test_unpalette_hues_and_pale_colours_are_background():
    image = np.empty((32, 32, 3), np.uint8)
    image[:] = BACKGROUND_RGB
    image[2:14, 2:14] = (30, 200, 200)  # cyan: 50° from green and from blue
    image[18:30, 18:30] = (165, 150, 150)  # a pale, almost grey red (chroma 15; the palette has 90)
    assert (classify_pixels(image) == -1).all()
    assert judge(image) == []


def test_object_cut_by_the_image_border_is_still_found():
    scene = scenes.render([("square", "blue", 3.0, 16.0, 12.0)])  # left third of it outside the image
    found = judge(scene.image)
    assert [d.color for d in found] == ["blue"]


def test_two_touching_objects_of_one_colour_are_split():
    scene_a = scenes.render([("square", "red", 9.0, 16.0, 12.0)])
    scene_b = scenes.render([("circle", "red", 21.0, 16.0, 12.0)])
    image = scene_a.image.copy()
    image[scene_b.objects[0].mask] = COLORS["red"]
    assert (scene_a.objects[0].mask & scene_b.objects[0].mask).sum() == 0
    touching = scene_a.objects[0].mask[:, 14].any() and scene_b.objects[0].mask[:, 15].any()
    assert touching
    found = judge(image)
    assert sorted((d.color, d.shape) for d in found) == [("red", "circle"), ("red", "square")]


def test_objects_of_different_colours_touching_are_two_objects():
    spec = [("square", "green", 10.0, 16.0, 12.0), ("triangle", "yellow", 22.0, 16.0, 12.0)]
    found = judge(scenes.render(spec).image)
    assert sorted((d.color, d.shape) for d in found) == [("green", "square"), ("yellow", "triangle")]


def test_larger_images_work_with_scaled_thresholds():
    rng = np.random.default_rng(3)
    right = sum(
        caption_matches(judge(s.image), s.caption) for s in (scenes.random_scene(rng, size=64) for _ in range(40))
    )
    assert right >= 39


def test_judge_rejects_non_rgb_input():
    with pytest.raises(ValueError):
        judge(np.zeros((32, 32), np.uint8))


def test_parse_caption():
    assert parse_caption("a red circle and a blue square") == [("red", "circle"), ("blue", "square")]
    assert parse_caption("A RED Circle, and (a blue:1.2) square!") == [("red", "circle"), ("blue", "square")]
    assert parse_caption("a circle") == [(None, "circle")]
    # A colour belongs to the next shape only; a trailing colour is dropped.
    assert parse_caption("a green triangle and a square red") == [("green", "triangle"), (None, "square")]
    assert parse_caption("grey background") == []


@given(st.lists(st.tuples(st.sampled_from(SHAPES), st.sampled_from(list(COLORS))), max_size=5))
def test_parse_caption_inverts_caption_for(pairs):
    caption = scenes.caption_for(pairs)
    assert parse_caption(caption) == [(color, shape) for shape, color in pairs]


def _obj(color: str, shape: str) -> DetectedObject:
    return DetectedObject(shape=shape, color=color, mask=np.zeros((32, 32), bool))


def test_caption_matches_exactly_the_asked_objects():
    caption = "a red circle and a blue square"
    assert caption_matches([_obj("blue", "square"), _obj("red", "circle")], caption)
    assert not caption_matches([_obj("red", "circle")], caption)  # missing
    assert not caption_matches([_obj("red", "circle"), _obj("blue", "square"), _obj("green", "circle")], caption)
    assert not caption_matches([_obj("red", "circle"), _obj("red", "square")], caption)  # wrong colour
    assert not caption_matches([_obj("red", "circle"), _obj("blue", "triangle")], caption)  # wrong shape
    assert not caption_matches([_obj("red", "circle"), _obj("red", "circle")], "a red circle")  # one too many
    assert caption_matches([_obj("red", "circle"), _obj("red", "circle")], "a red circle and a red circle")
    assert caption_matches([], "grey background")


def test_colourless_phrase_takes_any_colour_of_its_shape():
    assert caption_matches([_obj("yellow", "circle")], "a circle")
    assert caption_matches([_obj("red", "circle"), _obj("green", "circle")], "a circle and a red circle")
    assert not caption_matches([_obj("green", "circle"), _obj("green", "square")], "a circle and a red circle")
