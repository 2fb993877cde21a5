"""Procedural scenes with known truth: flat light shapes on a dark background, a caption, a mask per caption word.

Shapes are rasterised by testing pixel centres (no anti-aliasing), so every object pixel has exactly its palette
colour and a judge can classify pixels by nearest colour. Objects keep at least one background pixel between them
(rejection sampling) so that connected components separate them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .vocab import BACKGROUND_RGB, COLORS, IMAGE_SIZE, SHAPES

# Object size = width of its bounding box in pixels; 9–14 px keeps circle/square/triangle distinct at 32×32.
MIN_SIZE = 9.0
MAX_SIZE = 14.0

ObjectSpec = tuple[str, str, float, float, float]  # (shape, color, cx, cy, size) in pixels


@dataclass
class SceneObject:
    shape: str
    color: str
    cx: float
    cy: float
    size: float
    mask: np.ndarray = field(repr=False)  # bool (H, W)


@dataclass
class Scene:
    image: np.ndarray  # uint8 (H, W, 3)
    objects: list[SceneObject]
    caption: str  # "a red circle and a blue square"
    word_masks: list[tuple[int, str, np.ndarray]]  # (index of the word in caption.split(), word, bool mask)


def shape_mask(shape: str, cx: float, cy: float, size: float, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Pixels whose centres fall inside the shape; (cx, cy) is the bounding-box centre, size its width."""
    ys, xs = np.mgrid[0:image_size, 0:image_size].astype(np.float64) + 0.5
    dx, dy = xs - cx, ys - cy
    half = size / 2.0
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":
        # Apex up; base and height both equal size, so the half-width at depth d below the apex is d / 2.
        depth = dy + half
        return (depth >= 0) & (dy <= half) & (np.abs(dx) <= depth / 2.0)
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _shape_color(obj: Any) -> tuple[str, str]:
    if isinstance(obj, tuple | list):
        return str(obj[0]), str(obj[1])
    return obj.shape, obj.color


def caption_for(objects: list[Any]) -> str:
    """ "a red circle and a blue square" for objects (SceneObject or (shape, color, ...) tuples), in their order."""
    parts = []
    for obj in objects:
        shape, color = _shape_color(obj)
        parts.append(f"a {color} {shape}")
    return " and ".join(parts)


def word_masks_for(objects: list[SceneObject]) -> list[tuple[int, str, np.ndarray]]:
    """Masks of the colour and shape words of caption_for(objects): word i of object k is at 4k+1 / 4k+2."""
    out = []
    for k, obj in enumerate(objects):
        out.append((4 * k + 1, obj.color, obj.mask))
        out.append((4 * k + 2, obj.shape, obj.mask))
    return out


def render(objects_spec: list[ObjectSpec], size: int = IMAGE_SIZE) -> Scene:
    """Draws the given objects (later ones on top) and builds caption and word masks."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND_RGB
    objects = []
    for shape, color, cx, cy, obj_size in objects_spec:
        if color not in COLORS:
            raise ValueError(f"unknown color {color!r}; known: {tuple(COLORS)}")
        mask = shape_mask(shape, cx, cy, obj_size, size)
        image[mask] = COLORS[color]
        objects.append(SceneObject(shape, color, float(cx), float(cy), float(obj_size), mask))
    # A later object may cover an earlier one; each mask keeps only its visible pixels.
    covered = np.zeros((size, size), dtype=bool)
    for obj in reversed(objects):
        obj.mask = obj.mask & ~covered
        covered |= obj.mask
    return Scene(image=image, objects=objects, caption=caption_for(objects), word_masks=word_masks_for(objects))


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:, :] |= mask[:-1, :]
    out[:-1, :] |= mask[1:, :]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    out[1:, 1:] |= mask[:-1, :-1]
    out[:-1, :-1] |= mask[1:, 1:]
    out[1:, :-1] |= mask[:-1, 1:]
    out[:-1, 1:] |= mask[1:, :-1]
    return out


def random_specs(
    rng: np.random.Generator, n_objects: int | tuple[int, int] = (1, 3), size: int = IMAGE_SIZE, gap: int = 1
) -> list[ObjectSpec]:
    """Random non-touching objects with distinct (shape, colour) pairs; n_objects is a count or inclusive range.

    At least `gap` background pixels (8-connected) lie between two objects; 1 is the least the judge needs to tell
    them apart, and what every bench draws.
    """
    if gap < 1:
        raise ValueError(f"gap is at least one background pixel between objects (got {gap})")
    if isinstance(n_objects, int):
        n = n_objects
    else:
        n = int(rng.integers(n_objects[0], n_objects[1] + 1))
    scale = size / IMAGE_SIZE
    pairs = [(s, c) for s in SHAPES for c in COLORS]
    for _ in range(1000):
        chosen = rng.choice(len(pairs), size=n, replace=False)
        specs: list[ObjectSpec] = []
        occupied = np.zeros((size, size), dtype=bool)
        for idx in chosen:
            shape, color = pairs[int(idx)]
            for _ in range(50):
                obj_size = float(rng.uniform(MIN_SIZE, MAX_SIZE)) * scale
                half = obj_size / 2.0
                cx = float(rng.uniform(half, size - half))
                cy = float(rng.uniform(half, size - half))
                mask = shape_mask(shape, cx, cy, obj_size, size)
                grown = mask
                for _ in range(gap):
                    grown = _dilate(grown)
                if not (grown & occupied).any():
                    occupied |= mask
                    specs.append((shape, color, cx, cy, obj_size))
                    break
            else:
                break
        if len(specs) == n:
            return specs
    raise RuntimeError(f"could not place {n} objects in a {size}x{size} image")


def random_scene(
    rng: np.random.Generator, n_objects: int | tuple[int, int] = (1, 3), size: int = IMAGE_SIZE, gap: int = 1
) -> Scene:
    return render(random_specs(rng, n_objects, size, gap), size)
