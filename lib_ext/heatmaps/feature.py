"""The attention-heatmap feature as the hosts drive it (``lib_ext.seam.Feature``), host-independent.

Per sampling call (first pass, hires pass, img2img) :meth:`HeatmapFeature.begin_sampling` attaches a
:class:`~.capture.Capture` to every ``attn2`` of the UNet through the call's PatchSet (so the hooks go on every way
out), reading the rows of each UNet call from ``ctx.current_rows``; :meth:`end_sampling` turns the summed maps into
one map per word per image (:class:`ImageHeatmaps`), using the host's own tokenisation of each image's own prompt
(``ctx.tokenize``) and, for ``AND`` prompts, the rows of the sub-prompt that holds the word. Hooks' notes and errors
go to ``ctx.messages`` and to :attr:`HeatmapFeature.messages`; a word missing from the prompt becomes a message on
its tile, never an exception. The host then draws the grid with :meth:`HeatmapFeature.render` once it has the
image, and may export raw maps with :meth:`HeatmapFeature.export`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from ..attention_sites import find_cross_attention
from ..seam import DenoiseStep, JobInfo, PromptTokens, SamplingContext, sampler_step_of
from .aggregate import MODES, Mode, combine_mode, normalize_minmax, word_map
from .capture import Capture, CaptureOptions, ImageMaps
from .render import COLORMAPS, NO_GLYPHS_HINT, export_safetensors, word_grid
from .tokens import WordNotFound, find_word, prompt_words


@dataclass
class HeatmapSettings:
    words: tuple[str, ...] = ()  # words to show; empty: every word of the prompt (of the negative one in "negative")
    mode: Mode = "positive"  # positive / negative / delta = max(0, pos − neg)
    time_focus: tuple[float, float] = (0.0, 1.0)  # fraction of each pass's steps summed: [start, end)
    per_layer: bool = False  # also keep per-block maps (WordHeatmap.layers: IN01, MID, OUT05, …)
    alpha: float = 0.5
    colormap: str = "jet"
    max_map_side: int = 64
    middle_block: bool = False  # also sum the UNet middle block into the word maps (DAAM, and the default, do not)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown heatmap mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.colormap.lower() not in COLORMAPS:
            raise ValueError(f"unknown colormap {self.colormap!r}; known: {', '.join(sorted(COLORMAPS))}")
        start, end = self.time_focus
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"time focus must satisfy 0 <= start < end <= 1, got {self.time_focus}")

    def step_range(self, total_steps: int) -> tuple[int, int] | None:
        start, end = self.time_focus
        if (start, end) == (0.0, 1.0) or total_steps <= 0:
            return None
        first = min(total_steps - 1, math.floor(start * total_steps))
        return first, max(first + 1, math.ceil(end * total_steps))


@dataclass
class WordHeatmap:
    word: str
    heat: torch.Tensor | None  # [H, W] in [0, 1] after the mode; None when the word has no map
    raw: torch.Tensor | None = None  # [H, W] un-normalised mean of the word's token sums (positive, or negative)
    message: str | None = None  # why there is no map, or a caveat
    layers: dict[str, torch.Tensor] = field(default_factory=dict)  # per-layer normalised maps (per_layer on)


@dataclass
class ImageHeatmaps:
    image: int  # index of the image in its batch (see iteration)
    pass_name: str
    prompt: str
    negative_prompt: str
    mode: Mode
    words: list[WordHeatmap]
    maps: ImageMaps  # the raw summed token maps
    iteration: int = 0  # the host's batch number (A1111's p.iteration, from JobInfo.extra["iteration"])

    def tiles(self) -> list[tuple[str, torch.Tensor | None, str | None]]:
        """(word, heat, message) per word, for ``render.word_grid``: words without a map show their message."""
        return [(w.word, w.heat, w.message) for w in self.words]


class HeatmapFeature:
    """``lib_ext.seam.Feature`` for DAAM heatmaps; collect results with :meth:`take_results`."""

    name = "heatmaps"

    def __init__(self, settings: HeatmapSettings | None = None) -> None:
        self.settings = settings or HeatmapSettings()
        self.settings.validate()
        self.results: list[ImageHeatmaps] = []
        self.messages: list[str] = []
        self._capture: Capture | None = None
        self._job: JobInfo | None = None

    # -- Feature ------------------------------------------------------------------------------------------------
    def begin_sampling(self, ctx: SamplingContext) -> None:
        s = self.settings
        options = CaptureOptions(
            capture_negative=s.mode != "positive",
            group_by="layer" if s.per_layer else None,
            step_range=s.step_range(ctx.job.steps),
            max_map_side=s.max_map_side,
        )
        sites = find_cross_attention(ctx.unet)
        if not sites:
            self._message(ctx, "this model has no cross-attention (attn2) modules: no heatmaps")
            return
        # As DAAM (castorini/daam: UNetCrossAttentionLocator hooks the up and down blocks only), the middle block stays
        # out of the word maps; SD1.5's is 8×8 and dropped anyway, SDXL's sits at 32×32 and would count. Per-layer
        # maps (per_layer on) still show it.
        if not s.middle_block:
            options.sum_exclude = frozenset(site.short_name for site in sites if site.block == "mid")
        capture = Capture(ctx.current_rows, options)
        capture.begin_pass(ctx.job.pass_name)
        capture.set_step(0)
        # Per-layer maps are keyed by the block labels users know (IN01, MID, OUT05; SDXL's several transformer
        # blocks of one block sum together).
        try:
            handles = capture.attach([(site.short_name, site.module) for site in sites], unet=ctx.unet)
        except TypeError as exc:  # an attention module of an unknown kind: no heatmaps, the image still comes
            capture.detach()
            self._message(ctx, str(exc))
            return
        for handle in handles:
            ctx.patches.add_handle(handle, what="attention heatmap hook")
        # First in line: a later hook returning a tensor would end the loop before ours counts the step.
        ctx.step_hooks.insert(0, partial(_advance_step, capture))
        self._capture, self._job = capture, ctx.job

    def rebind(self, ctx: SamplingContext) -> None:
        """The host swapped UNets mid-call (SDXL refiner): capture from the new one too."""
        if self._capture is None:
            return
        sites = [(site.short_name, site.module) for site in find_cross_attention(ctx.unet)]
        for handle in self._capture.attach(sites, unet=ctx.unet, replace=False):
            ctx.patches.add_handle(handle, what="attention heatmap hook")

    def end_sampling(self, ctx: SamplingContext, ok: bool) -> None:
        capture, job = self._capture, self._job
        self._capture = self._job = None
        if capture is None or job is None:
            return
        capture.detach()  # the PatchSet has removed the hooks already; this only forgets them
        for note in capture.notes:
            self._message(ctx, note)
        for error in capture.errors:
            self._message(ctx, error)
        if not ok:
            return
        for maps in capture.collect():
            self.results.append(self.word_maps(maps, job, ctx.tokenize))

    # -- results ------------------------------------------------------------------------------------------------
    def take_results(self) -> list[ImageHeatmaps]:
        results, self.results = self.results, []
        return results

    def word_maps(self, maps: ImageMaps, job: JobInfo, tokenize: Any) -> ImageHeatmaps:
        """One map per word of the image's own prompt (its own sub-prompt's rows for ``AND`` prompts)."""
        s = self.settings
        i = maps.image
        prompt = job.prompts[i] if i < len(job.prompts) else (job.prompts[-1] if job.prompts else "")
        negative = job.negative_prompts[i] if i < len(job.negative_prompts) else ""
        # The text of each of this image's cond rows (after a feature such as semantic guidance rewrote them).
        sub_tokens = {j: _tokens(tokenize, text) for j, text in enumerate(job.subprompts(i))}
        neg_tokens = _tokens(tokenize, negative) if maps.negative is not None else None
        words = list(s.words) or prompt_words(negative if s.mode == "negative" else prompt)
        out = []
        for word in words:
            out.append(self._word(word, maps, sub_tokens, neg_tokens))
        iteration = int(job.extra.get("iteration", 0) or 0)
        return ImageHeatmaps(i, maps.pass_name, prompt, negative, s.mode, out, maps, iteration)

    def _word(
        self,
        word: str,
        maps: ImageMaps,
        sub_tokens: dict[int, PromptTokens | Exception],
        neg_tokens: PromptTokens | Exception | None,
    ) -> WordHeatmap:
        pos_parts: list[torch.Tensor] = []
        layer_parts: dict[str, list[torch.Tensor]] = {}
        missing = ""
        for j, tokens in sub_tokens.items():
            if j not in maps.positive:
                continue
            positions, why = _positions(tokens, word)
            if positions is None:
                missing = missing or why
                continue
            try:
                pos_parts.append(word_map(maps.positive[j], positions, normalize=False))
                for layer, per_sub in maps.groups.items():
                    if j in per_sub:
                        layer_map = word_map(maps.group_map(layer, j), positions, normalize=False)
                        layer_parts.setdefault(layer, []).append(layer_map)
            except ValueError as exc:
                missing = str(exc)
        pos_raw = torch.stack(pos_parts).mean(0) if pos_parts else None
        neg_raw = None
        if neg_tokens is not None and maps.negative is not None:
            positions, why = _positions(neg_tokens, word)
            if positions is not None:
                try:
                    neg_raw = word_map(maps.negative, positions, normalize=False)
                except ValueError as exc:
                    missing = missing or str(exc)
        mode = self.settings.mode
        needed = pos_raw if mode == "positive" else neg_raw if mode == "negative" else pos_raw
        if needed is None:
            where = "negative prompt" if mode == "negative" else "prompt"
            return WordHeatmap(word, None, message=missing or f"{word!r} is not in the {where}")
        if not all(bool(torch.isfinite(t).all()) for t in (pos_raw, neg_raw) if t is not None):
            return WordHeatmap(word, None, raw=needed, message=f"{word!r}: the model's attention was not finite (NaN)")
        pos = normalize_minmax(pos_raw) if pos_raw is not None else None
        neg = normalize_minmax(neg_raw) if neg_raw is not None else None
        layers = {name: normalize_minmax(torch.stack(parts).mean(0)) for name, parts in layer_parts.items()}
        return WordHeatmap(word, combine_mode(pos, neg, mode), raw=needed, layers=layers)

    # -- output ---------------------------------------------------------------------------------------------
    def render(self, result: ImageHeatmaps, image: Any, font_path: str | None = None, **kw: Any):
        """The captioned per-word grid over the generated image (PIL); words without a map show their message in
        their tile. None when no word has a map (the host then reports the words' messages)."""
        tiles = result.tiles()
        if all(heat is None for _word, heat, _message in tiles):
            return None
        unreadable: list[str] = []
        grid = word_grid(
            image,
            tiles,
            alpha=self.settings.alpha,
            cmap=self.settings.colormap,
            font_path=font_path,
            unreadable=unreadable,
            **kw,
        )
        if unreadable:
            message = f"Attention heatmaps: captions {', '.join(unreadable)}: {NO_GLYPHS_HINT}"
            if message not in self.messages:
                self.messages.append(message)
        return grid

    def render_layers(self, result: ImageHeatmaps, image: Any, font_path: str | None = None) -> list[tuple[str, Any]]:
        """Per word with per-layer maps (``per_layer`` on): (word, a grid with one tile per UNet block)."""
        out = []
        for w in result.words:
            tiles = [(f"{w.word} · {layer}", heat) for layer, heat in w.layers.items()]
            if tiles:
                grid = word_grid(image, tiles, alpha=self.settings.alpha, cmap=self.settings.colormap,
                                 font_path=font_path)  # fmt: skip
                out.append((w.word, grid))
        return out

    def export(self, result: ImageHeatmaps, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
        """Raw (un-normalised) word maps as ``.safetensors``, words and shapes in the metadata."""
        words = [w for w in result.words if w.raw is not None]
        info = {
            "prompt": result.prompt,
            "negative_prompt": result.negative_prompt,
            "pass": result.pass_name,
            "mode": result.mode,
            "image": result.image,
            "layer_calls": result.maps.calls,
            "aggregation": "sum over heads, layers and steps of softmax(QK^T/sqrt(d)), bicubic to common size",
            **(meta or {}),
        }
        export_safetensors(path, [w.raw for w in words], [w.word for w in words], info)

    def _message(self, ctx: SamplingContext, text: str) -> None:
        message = f"Attention heatmaps: {text}"
        if message not in self.messages:
            self.messages.append(message)
        if message not in ctx.messages:
            ctx.messages.append(message)


def _advance_step(capture: Capture, step: DenoiseStep) -> None:
    """The step of the next model call, in the sampler's steps (what time focus is a fraction of): Heun's two calls
    of one step share it."""
    if step.sampler_steps:
        capture.set_step(sampler_step_of(step.step + 1, step.sampler_steps, step.total_steps)["sampler_step"])
    else:
        capture.set_step(step.step + 1)
    return None


def _tokens(tokenize: Any, text: str) -> PromptTokens | Exception:
    try:
        return tokenize(text)
    except Exception as exc:  # shown on every tile that needed it
        return exc


def _positions(tokens: PromptTokens | Exception, word: str) -> tuple[list[int] | None, str]:
    if isinstance(tokens, Exception):
        return None, f"could not tokenize the prompt: {tokens}"
    try:
        return find_word(tokens, word), ""
    except WordNotFound as exc:
        return None, exc.message


__all__: Sequence[str] = ("HeatmapFeature", "HeatmapSettings", "ImageHeatmaps", "WordHeatmap")
