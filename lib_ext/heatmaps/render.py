"""Heatmap overlays: colour a map (OpenCV colormaps by name), blend it over the image, lay out a captioned per-word
grid, and export the raw maps as ``.safetensors``.

Sizes: maps are ``[H, W]`` (rows, columns) like the image's ``(height, width)``; PIL's ``size`` is ``(width, height)``
and so is ``cv2.resize``'s ``dsize`` — both are converted explicitly here, so non-square images come out upright.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .aggregate import Mode, combine_mode, normalize_minmax

COLORMAPS: dict[str, int] = {
    name.removeprefix("COLORMAP_").lower(): getattr(cv2, name) for name in dir(cv2) if name.startswith("COLORMAP_")
}

ArrayLike = np.ndarray | torch.Tensor


def _as_float_map(heat: ArrayLike) -> np.ndarray:
    if isinstance(heat, torch.Tensor):
        heat = heat.detach().float().cpu().numpy()
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"a heatmap is 2-D [H, W]; got shape {heat.shape}")
    return heat


def colorize(heat: ArrayLike, cmap: str = "jet", normalize: bool = True) -> np.ndarray:
    """``[H, W]`` heat → ``[H, W, 3]`` uint8 RGB through an OpenCV colormap (jet, turbo, inferno, viridis, …)."""
    code = COLORMAPS.get(cmap.lower())
    if code is None:
        raise ValueError(f"unknown colormap {cmap!r}; known: {', '.join(sorted(COLORMAPS))}")
    values = _as_float_map(heat)
    if normalize:
        values = normalize_minmax(torch.from_numpy(values)).numpy()
    gray = np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray, code), cv2.COLOR_BGR2RGB)


def resize_to(heat: ArrayLike, height: int, width: int) -> np.ndarray:
    """Resize a ``[h, w]`` map to ``[height, width]`` (bicubic), clamped to its own range."""
    values = _as_float_map(heat)
    if values.shape == (height, width):
        return values
    out = cv2.resize(values, (width, height), interpolation=cv2.INTER_CUBIC)  # dsize is (width, height)
    return np.clip(out, values.min(), values.max())


def overlay(
    image: Image.Image | np.ndarray, heat: ArrayLike, alpha: float = 0.5, cmap: str = "jet", normalize: bool = True
) -> Image.Image:
    """The heat (resized to the image) coloured and alpha-blended over the image: alpha 0 = image, 1 = heat."""
    base = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    base = base.convert("RGB")
    width, height = base.size
    values = _as_float_map(heat)
    if normalize:
        values = normalize_minmax(torch.from_numpy(values)).numpy()
    colored = colorize(resize_to(values, height, width), cmap, normalize=False)
    alpha = float(min(1.0, max(0.0, alpha)))
    blended = np.asarray(base, dtype=np.float32) * (1.0 - alpha) + colored.astype(np.float32) * alpha
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def mode_map(positive: ArrayLike | None, negative: ArrayLike | None, mode: Mode) -> torch.Tensor:
    """positive / negative / delta = max(0, pos − neg) of one word's normalised maps (None: absent, counts as 0)."""
    pos = None if positive is None else torch.from_numpy(_as_float_map(positive))
    neg = None if negative is None else torch.from_numpy(_as_float_map(negative))
    return combine_mode(pos, neg, mode)


_FONT_CANDIDATES = (
    "NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/ヒラギノ角ゴシック W3.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "C:/Windows/Fonts/meiryo.ttc",
    "C:/Windows/Fonts/msgothic.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "DejaVuSans.ttf",
)


# Said when no font found here draws a caption's characters (they are then written as code points, never as boxes).
NO_GLYPHS_HINT = (
    "no font here draws them, so their captions show code points; install a CJK font (Debian: fonts-noto-cjk)"
)
# A code point no font draws: what a font draws for it is its "missing glyph" box.
_NO_GLYPH_PROBE = "\U0010fffd"


@lru_cache(maxsize=64)
def _load(candidate: str, size: int) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(candidate, size)
    except OSError:
        return None


@lru_cache(maxsize=16)
def _font(size: int, path: str | None) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    for candidate in ((path,) if path else ()) + _FONT_CANDIDATES:
        font = _load(candidate, size)
        if font is not None:
            return font
    return ImageFont.load_default()


@lru_cache(maxsize=4096)
def _drawn(font: ImageFont.FreeTypeFont, ch: str) -> bytes:
    size = max(8, int(getattr(font, "size", 10))) * 2
    im = Image.new("L", (size, size))
    ImageDraw.Draw(im).text((0, 0), ch, font=font, fill=255)
    return im.tobytes()


def missing_glyphs(font: Any, text: str) -> list[str]:
    """The characters of `text` that `font` has no glyph for (it would draw its missing-glyph box), in order."""
    if not isinstance(font, ImageFont.FreeTypeFont):
        return list(dict.fromkeys(ch for ch in text if ord(ch) > 255))  # the bitmap fallback draws Latin-1 only
    box = _drawn(font, _NO_GLYPH_PROBE)
    return list(dict.fromkeys(ch for ch in text if not ch.isspace() and _drawn(font, ch) == box))


def _font_for(text: str, size: int, path: str | None) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The first font (`path`, then the candidates) that draws every character of `text`; else the usual one."""
    default = _font(size, path)
    if not missing_glyphs(default, text):
        return default
    for candidate in ((path,) if path else ()) + _FONT_CANDIDATES:
        font = _load(candidate, size)
        if font is not None and not missing_glyphs(font, text):
            return font
    return default


def _drawable(text: str, font: Any) -> str:
    """`text` with each character the font cannot draw written as its code point (U+732B), never as a box."""
    missing = set(missing_glyphs(font, text))
    return "".join(f"U+{ord(ch):04X}" if ch in missing else ch for ch in text)


def _wrap(text: str, font: Any, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def word_grid(
    image: Image.Image | np.ndarray,
    tiles: Sequence[tuple[str, ArrayLike | None] | tuple[str, ArrayLike | None, str | None]],
    alpha: float = 0.5,
    cmap: str = "jet",
    columns: int | None = None,
    tile_width: int | None = None,
    font_path: str | None = None,
    unreadable: list[str] | None = None,
) -> Image.Image:
    """One overlay per ``(caption, heat)`` tile, each captioned with its word, in a grid (default ⌈√n⌉ columns).

    A tile whose heat is None shows the image greyed out with its message (``(caption, None, message)``), so a word
    missing from the prompt is reported where the user looks. ``tile_width`` scales the tiles (keeping the image's
    aspect ratio); the default keeps the image size. A caption is drawn with the first font that has all its
    characters (a CJK font for 猫); when none has them, they are written as code points and the caption is added
    to ``unreadable`` (say :data:`NO_GLYPHS_HINT`).
    """
    if not tiles:
        raise ValueError("no word maps to draw")
    base = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    base = base.convert("RGB")
    if tile_width is not None and tile_width != base.width:
        base = base.resize((tile_width, max(1, round(base.height * tile_width / base.width))), Image.BICUBIC)
    width, height = base.size
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    font_size = max(10, min(32, width // 12))
    small_size = max(8, font_size * 2 // 3)
    small = _font(small_size, font_path)
    caption = font_size + 8
    grid = Image.new("RGB", (columns * width, rows * (height + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    faded = Image.blend(base, Image.new("RGB", base.size, (235, 235, 235)), 0.8)
    for i, tile in enumerate(tiles):
        word, heat = tile[0], tile[1]
        message = tile[2] if len(tile) > 2 else None
        x, y = (i % columns) * width, (i // columns) * (height + caption)
        word_font = _font_for(word, font_size, font_path)
        if missing_glyphs(word_font, word) and unreadable is not None and word not in unreadable:
            unreadable.append(word)
        draw.text((x + 4, y + 4), _drawable(word, word_font), fill=(0, 0, 0), font=word_font)
        if heat is not None:
            grid.paste(overlay(base, heat, alpha=alpha, cmap=cmap), (x, y + caption))
            continue
        grid.paste(faded, (x, y + caption))
        line_height = int(getattr(small, "size", 10)) + 2
        text = message or "no map"
        small_font = _font_for(text, small_size, font_path)
        for j, line in enumerate(_wrap(_drawable(text, small_font), small_font, width - 8, draw)):
            draw.text((x + 4, y + caption + 4 + j * line_height), line, fill=(160, 0, 0), font=small_font)
    return grid


def export_safetensors(
    path: str | os.PathLike,
    maps: Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | torch.Tensor,
    words: Sequence[str],
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Save raw maps with the words and shapes in the metadata (values are strings; non-strings as JSON).

    ``maps``: one tensor per word (a sequence or ``[n_words, …]`` tensor in ``words`` order, or a mapping word →
    tensor). Tensors are stored as ``map_000``, ``map_001``, … so any word (spaces, Japanese) is safe.
    """
    from safetensors.torch import save_file

    if isinstance(maps, Mapping):
        tensors = [maps[w] for w in words]
    else:
        tensors = list(maps)
    if len(tensors) != len(words):
        raise ValueError(f"{len(tensors)} maps for {len(words)} words")
    named = {f"map_{i:03d}": t.detach().to("cpu").contiguous().clone() for i, t in enumerate(tensors)}
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in (meta or {}).items()}
    metadata["words"] = json.dumps(list(words), ensure_ascii=False)
    metadata["shapes"] = json.dumps([list(t.shape) for t in named.values()])
    metadata["keys"] = json.dumps(list(named))
    save_file(named, os.fspath(path), metadata=metadata)


def load_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Maps by word and the metadata of a file written by :func:`export_safetensors`."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        keys = json.loads(metadata["keys"])
        words = json.loads(metadata["words"])
        return {w: f.get_tensor(k) for w, k in zip(words, keys)}, metadata
