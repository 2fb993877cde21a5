"""Reads an image of the toy world back into objects (shape, colour, mask), so any generation can be scored.

A pixel is an object's when it is light (objects are light, the background dark), and takes the palette colour of
its hue, measured over its 3×3 neighbourhood: the background has no chroma and the four palette hues lie 60–120°
apart on the hue circle, so hue survives the brightness and saturation drift of a generator better than a plain RGB
distance does. Per colour, a morphological opening drops speckle, connected components become objects, and the
shape is the template (circle, square, apex-up triangle, drawn with the scene generator's geometry at the blob's
centroid and area) that overlaps the blob best. Template IoU is an integral measure, so ragged edges move it
little; extremal geometry (fill of the minimum-area rectangle or enclosing circle, hull corners) is reported in
`features` beside it. A blob no template fits is tried as two touching objects of one colour.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from .vocab import BACKGROUND_RGB, COLORS, IMAGE_SIZE, SHAPES

# A pixel belongs to an object when its lightness (mean of RGB) is nearer the palette's than the background's, and
# takes the nearest palette hue when its chroma (max − min of RGB, over its 3×3 neighbourhood: the background is
# achromatic, so averaging with it keeps the hue while a generator's per-pixel noise averages out) reaches this
# (palette: 90, background: 0).
CHROMA_MIN = 30
# ... and belongs to the nearest palette hue when within this many degrees (cyan/magenta/orange-ish stay out).
HUE_TOLERANCE_DEG = 40.0
# The smallest object a scene holds (a 9 px triangle) covers 36 px; a blob under two thirds of that is a clump of
# a generator's pixel noise, not a shape anyone would count. Areas are for 32×32 and scale with the image area.
MIN_AREA_32 = 24
# Below this best template IoU a blob is tried as two touching objects (rendered shapes fit at ≥ 0.94).
SPLIT_BELOW_IOU = 0.75


@dataclass
class DetectedObject:
    shape: str
    color: str
    mask: np.ndarray = field(repr=False)  # bool (H, W)
    area: int = 0
    cx: float = 0.0
    cy: float = 0.0
    features: dict[str, float] = field(default_factory=dict)


def _hue_deg(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of float RGB (..., 3); undefined (0) where chroma is 0."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    c = np.where(mx - mn == 0, 1.0, mx - mn)
    h = np.where(
        mx == r,
        ((g - b) / c) % 6.0,
        np.where(mx == g, (b - r) / c + 2.0, (r - g) / c + 4.0),
    )
    return (h * 60.0) % 360.0


_COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
_PALETTE_HUES = _hue_deg(np.array([COLORS[c] for c in _COLOR_NAMES], dtype=np.float64))


_LIGHTNESS_SPLIT = (float(np.mean(BACKGROUND_RGB)) + float(np.mean([np.mean(c) for c in COLORS.values()]))) / 2.0


def classify_pixels(image: np.ndarray) -> np.ndarray:
    """Per pixel the index into the palette (order of vocab.COLORS), or -1 for background/unknown."""
    rgb = image.astype(np.float64)
    lit = rgb.mean(axis=-1) >= _LIGHTNESS_SPLIT
    smooth = cv2.blur(rgb, (3, 3), borderType=cv2.BORDER_REPLICATE)
    chroma = smooth.max(axis=-1) - smooth.min(axis=-1)
    hue = _hue_deg(smooth)
    diff = np.abs(hue[..., None] - _PALETTE_HUES)
    diff = np.minimum(diff, 360.0 - diff)
    nearest = diff.argmin(axis=-1)
    ok = lit & (chroma >= CHROMA_MIN) & (diff.min(axis=-1) <= HUE_TOLERANCE_DEG)
    return np.where(ok, nearest, -1)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fills enclosed holes (noise pixels inside an object): whatever a flood from outside cannot reach."""
    padded = np.pad(mask.astype(np.uint8), 1)
    cv2.floodFill(padded, None, (0, 0), 2)
    return padded[1:-1, 1:-1] != 2


def shape_features(mask: np.ndarray) -> dict[str, float]:
    """Geometry of one object's mask, measured on the corners of its pixels."""
    ys, xs = np.nonzero(mask)
    area = float(len(xs))
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)], axis=0).astype(
        np.float32
    )
    (_, _), (w, h), _ = cv2.minAreaRect(corners)
    (_, _), radius = cv2.minEnclosingCircle(corners)
    hull = cv2.convexHull(corners)
    hull_area = max(float(cv2.contourArea(hull)), 1.0)
    perimeter = cv2.arcLength(hull, True)
    approx = cv2.approxPolyDP(hull, 0.08 * perimeter, True)
    return {
        "area": area,
        "rect_fill": area / max(w * h, 1.0),
        "circle_fill": area / max(math.pi * radius * radius, 1.0),
        "solidity": area / hull_area,
        "vertices": float(len(approx)),
    }


def _template_params(shape: str, area: float, mx: float, my: float) -> tuple[float, float, float]:
    """(cx, cy, size) of the shape with this area whose centroid is (mx, my), as scenes.render draws it."""
    if shape == "square":
        size = math.sqrt(area)
        return mx, my, size
    if shape == "circle":
        size = math.sqrt(4.0 * area / math.pi)
        return mx, my, size
    # Apex-up triangle with base = height = size: its centroid lies size/6 below the bounding-box centre.
    size = math.sqrt(2.0 * area)
    return mx, my - size / 6.0, size


def _draw(shape: str, cx: float, cy: float, size: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pixels (centres xs, ys) inside the shape, with scenes.render's geometry: apex-up triangle, base = height."""
    dx, dy, half = xs - cx, ys - cy, size / 2.0
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    depth = dy + half
    return (depth >= 0) & (dy <= half) & (np.abs(dx) <= depth / 2.0)


def template_ious(mask: np.ndarray) -> dict[str, float]:
    """Per shape, the best IoU of the mask with that shape drawn near the mask's centroid and area.

    An integral measure: ragged edges from a noisy generator move it little, unlike extremal geometry.
    """
    ys, xs = np.nonzero(mask)
    area = float(len(xs))
    mx, my = float(xs.mean() + 0.5), float(ys.mean() + 0.5)
    # Work on a crop around the object: templates never reach far beyond it.
    pad = 4
    y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad + 1, mask.shape[0])
    x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad + 1, mask.shape[1])
    crop = mask[y0:y1, x0:x1]
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5
    out = {}
    for shape in SHAPES:
        cx0, cy0, size0 = _template_params(shape, area, mx, my)
        best = 0.0
        for scale in (0.92, 1.0, 1.08):
            for dx in (-0.5, 0.0, 0.5):
                for dy in (-0.5, 0.0, 0.5):
                    tmpl = _draw(shape, cx0 + dx, cy0 + dy, size0 * scale, gx, gy)
                    union = np.count_nonzero(tmpl | crop)
                    best = max(best, np.count_nonzero(tmpl & crop) / union if union else 0.0)
        out[shape] = best
    return out


def classify_shape(mask: np.ndarray) -> tuple[str, dict[str, float]]:
    """The shape whose template fits the mask best, and the features (fills, corners, template IoUs)."""
    feats = shape_features(mask)
    ious = template_ious(mask)
    feats.update({f"iou_{s}": v for s, v in ious.items()})
    return max(ious, key=ious.get), feats


def _split_touching(mask: np.ndarray, min_area: int) -> list[np.ndarray]:
    """Two touching objects of one colour form one blob: erode until it falls apart, then give each pixel to
    the nearest part. Returns [mask] when erosion never yields two parts of a few pixels each."""
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    m = mask.astype(np.uint8)
    for iterations in range(1, 5):
        eroded = cv2.erode(m, cross, iterations=iterations)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(eroded, connectivity=4)
        seeds = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= 3]
        if not seeds:
            break
        if len(seeds) >= 2:
            dists = np.stack([cv2.distanceTransform((comp != k).astype(np.uint8), cv2.DIST_L2, 3) for k in seeds])
            owner = dists.argmin(axis=0)
            parts = [mask & (owner == j) for j in range(len(seeds))]
            return [p for p in parts if p.sum() >= min_area] or [mask]
    return [mask]


def _objects_in_blob(mask: np.ndarray, color: str, min_area: int) -> list[DetectedObject]:
    shape, feats = classify_shape(mask)
    candidates = [(mask, shape, feats)]
    best_iou = feats[f"iou_{shape}"]
    # No template fits well: perhaps two objects touch. Keep the split only if its parts fit clearly better.
    if best_iou < SPLIT_BELOW_IOU:
        parts = _split_touching(mask, min_area)
        if len(parts) >= 2:
            classified = [(p, *classify_shape(p)) for p in parts]
            if np.mean([f[f"iou_{s}"] for _, s, f in classified]) > best_iou + 0.05:
                candidates = classified
    out = []
    for m, shape, feats in candidates:
        ys, xs = np.nonzero(m)
        out.append(
            DetectedObject(
                shape=shape,
                color=color,
                mask=m,
                area=len(xs),
                cx=float(xs.mean() + 0.5),
                cy=float(ys.mean() + 0.5),
                features=feats,
            )
        )
    return out


def judge(image: np.ndarray, min_area: int | None = None) -> list[DetectedObject]:
    """The objects in an RGB uint8 image (H, W, 3), largest first."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    height, width = image.shape[:2]
    if min_area is None:
        min_area = max(4, round(MIN_AREA_32 * height * width / (IMAGE_SIZE * IMAGE_SIZE)))
    labels = classify_pixels(image)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    square = np.ones((3, 3), np.uint8)
    found: list[DetectedObject] = []
    for ci, color in enumerate(_COLOR_NAMES):
        raw = labels == ci
        if raw.sum() < min_area:
            continue
        # Opening finds the solid cores (speckle and 1-px lines vanish). No closing: it would bridge the 1-px gap
        # between two objects of one colour; interior pinholes are filled per object below.
        core = cv2.morphologyEx(raw.astype(np.uint8), cv2.MORPH_OPEN, cross)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
        for k in range(1, n):
            if stats[k, cv2.CC_STAT_AREA] < min_area // 2:
                continue
            # Give back the thin tips and edges the opening removed (a triangle's apex) from the raw pixels.
            grown = cv2.dilate((comp == k).astype(np.uint8), square).astype(bool)
            mask = _fill_holes(grown & raw)
            if mask.sum() >= min_area:
                found.extend(_objects_in_blob(mask, color, min_area))
    found.sort(key=lambda o: -o.area)
    return found


_WORD_RE = re.compile(r"[a-z]+")


def parse_caption(caption: str) -> list[tuple[str | None, str]]:
    """(colour, shape) per shape word, in order; colour None when the phrase names none ("a circle").

    A shape word takes the last colour word since the previous shape word, so "a red circle and a blue square"
    gives [("red", "circle"), ("blue", "square")]. Other words are ignored.
    """
    out: list[tuple[str | None, str]] = []
    color: str | None = None
    for word in _WORD_RE.findall(caption.lower()):
        if word in COLORS:
            color = word
        elif word in SHAPES:
            out.append((color, word))
            color = None
    return out


def caption_matches(objects: list[DetectedObject], caption: str) -> bool:
    """True when the objects are exactly the caption's shapes in its colours: nothing missing, nothing extra."""
    wanted = parse_caption(caption)
    have = Counter((o.color, o.shape) for o in objects)
    # Fully specified phrases first; a colourless phrase then takes any remaining object of its shape.
    for color, shape in sorted(wanted, key=lambda cs: cs[0] is None):
        if color is not None:
            if have[(color, shape)] == 0:
                return False
            have[(color, shape)] -= 1
        else:
            match = next((key for key, n in have.items() if n > 0 and key[1] == shape), None)
            if match is None:
                return False
            have[match] -= 1
    return sum(have.values()) == 0
