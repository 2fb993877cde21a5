"""Attention heatmaps (DAAM): capture beside the host's attention, words → tokens, aggregation and overlays.

- ``capture``: :class:`Capture` hooks cross-attention modules and keeps one running sum per image;
- ``tokens``: the host's tokenisation → word positions in the 77·k context;
- ``aggregate``: word maps, normalisation, modes, masks, IoU;
- ``render``: colormaps, overlays, the captioned per-word grid, ``.safetensors`` export.
"""

from ..seam import PromptTokens, RowRole, TokenPiece
from .aggregate import MODES, combine_mode, iou, normalize_minmax, threshold_mask, word_map
from .capture import Capture, CaptureOptions, ImageMaps
from .render import COLORMAPS, colorize, export_safetensors, load_safetensors, mode_map, overlay, word_grid
from .tokens import (
    WordNotFound,
    WordSpan,
    find_word,
    prompt_tokens_from_clip,
    prompt_words,
    word_spans,
)

__all__ = [
    "COLORMAPS",
    "MODES",
    "Capture",
    "CaptureOptions",
    "ImageMaps",
    "PromptTokens",
    "RowRole",
    "TokenPiece",
    "WordNotFound",
    "WordSpan",
    "colorize",
    "combine_mode",
    "export_safetensors",
    "find_word",
    "iou",
    "load_safetensors",
    "mode_map",
    "normalize_minmax",
    "overlay",
    "prompt_tokens_from_clip",
    "prompt_words",
    "threshold_mask",
    "word_grid",
    "word_map",
    "word_spans",
]
