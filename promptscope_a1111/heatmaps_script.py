"""Attention heatmaps in A1111: the accordion, and the per-word grid shown with each generated image.

`process` activates a `HeatmapFeature` for the job (the sampling session attaches and removes its hooks on every
sampling call). After each batch `postprocess_batch` takes that batch's maps; `postprocess_image` draws the grid
over each final image; `postprocess` appends the grids to the gallery (and so to the API's images), saves them
beside the images when asked, exports raw maps as `.safetensors` when asked, and shows every note or error under
the images. Nothing requires "Always save all generated images".
"""

from __future__ import annotations

import os
from typing import Any

from modules import images, scripts, shared
from promptscope_lib_ext.arguments import as_bool
from promptscope_lib_ext.heatmaps.controls import (  # noqa: F401  (PASSES, split_words: re-exported)
    ARG_NAMES,
    DEFAULTS,
    PASSES,
    build_controls,
    settings_from_values,
    split_words,
)
from promptscope_lib_ext.heatmaps.feature import HeatmapFeature, HeatmapSettings, ImageHeatmaps

from .sampling import activate
from .webui_bits import add_to_processed, api_args, tell_user

TITLE = "PromptScope: Attention heatmaps"
FEATURE_ATTR = "promptscope_heatmaps"


def settings_from_args(args: tuple[Any, ...]) -> tuple[bool, HeatmapSettings, dict[str, Any]]:
    return settings_from_values(api_args(args, ARG_NAMES, DEFAULTS), as_bool)


class JobHeatmaps:
    """Per-job state, kept on `p` (a copy of `p`, as X/Y/Z makes, starts its own)."""

    def __init__(self, feature: HeatmapFeature, extra: dict[str, Any]) -> None:
        self.feature = feature
        self.extra = extra
        self.by_image: dict[tuple[int, int], dict[str, ImageHeatmaps]] = {}
        self.grids: list[tuple[Any, str]] = []

    def take_batch(self, iteration: int) -> None:
        for result in self.feature.take_results():
            self.by_image.setdefault((iteration, result.image), {})[result.pass_name] = result

    def result_for(self, iteration: int, index: int) -> ImageHeatmaps | None:
        passes = self.by_image.get((iteration, index), {})
        return passes.get(self.extra["show_pass"]) or passes.get("first") or next(iter(passes.values()), None)


class AttentionHeatmapsScript(scripts.Script):
    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        c = build_controls(TITLE, elem_id=self.elem_id("promptscope_heatmaps"), hires=True, saving=True)
        return [component for _name, component in c.named()]  # in ARG_NAMES order

    def process(self, p: Any, *args: Any) -> None:
        p.__dict__.pop(FEATURE_ATTR, None)
        try:
            enabled, settings, extra = settings_from_args(args)
        except ValueError as exc:
            tell_user(p, f"attention heatmap arguments rejected: {exc}. Generating without heatmaps.")
            return
        if not enabled:
            return
        job = JobHeatmaps(HeatmapFeature(settings), extra)
        p.__dict__[FEATURE_ATTR] = job
        activate(p, job.feature)

    def postprocess_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        job = p.__dict__.get(FEATURE_ATTR)
        if job is not None:
            job.take_batch(int(kwargs.get("batch_number", getattr(p, "iteration", 0))))

    def postprocess_image(self, p: Any, pp: Any, *args: Any) -> None:
        job: JobHeatmaps | None = p.__dict__.get(FEATURE_ATTR)
        if job is None:
            return
        iteration, index = int(getattr(p, "iteration", 0)), int(getattr(p, "batch_index", 0))
        result = job.result_for(iteration, index)
        if result is None:
            return
        try:
            grid = job.feature.render(result, pp.image)
        except Exception as exc:  # drawing must not lose the user's image; say what failed
            job.feature.messages.append(f"Attention heatmaps: could not draw the grid: {exc}")
            return
        if grid is None:
            missing = "; ".join(w.message for w in result.words if w.message) or "no word had a map"
            job.feature.messages.append(f"Attention heatmaps: nothing to show for image {index + 1}: {missing}")
            return
        n = iteration * int(getattr(p, "batch_size", 1)) + index
        seed = p.all_seeds[n] if n < len(getattr(p, "all_seeds", []) or []) else None
        caption = f"Attention heatmaps ({result.pass_name} pass, {result.mode}), seed {seed}: {result.prompt}"
        job.grids.append((grid, caption))
        if job.feature.settings.per_layer:
            for word, layer_grid in job.feature.render_layers(result, pp.image):
                where = f"{result.pass_name} pass, {result.mode}"
                job.grids.append((layer_grid, f"Attention heatmaps per layer ({where}), seed {seed}: {word}"))
        if job.extra["save"]:
            images.save_image(
                grid, p.outpath_samples, "", seed, result.prompt, shared.opts.samples_format, p=p, suffix="-heatmaps"
            )
        if job.extra["export_raw"]:
            folder = os.path.join(p.outpath_samples, "promptscope-heatmaps")
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{seed}-{iteration:03d}-{index:02d}-{result.pass_name}.safetensors")
            job.feature.export(result, path, {"seed": seed})

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        job: JobHeatmaps | None = p.__dict__.get(FEATURE_ATTR)
        if job is None:
            return
        for grid, caption in job.grids:
            processed.images.append(grid)
            processed.infotexts.append(caption)
        add_to_processed(processed, job.feature.messages)
