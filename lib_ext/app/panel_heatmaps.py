"""Attention heatmaps in the standalone app: the A1111 accordion (`heatmaps.controls`, without the hires-pass choice,
which the toy host has no use for) under the txt2img settings.

After each generation, as A1111's script: one captioned per-word grid per image is appended to the gallery (its
gallery caption names the seed, mode and words), plus, with "per layer", one grid per word over the UNet's blocks.
Notes and errors (a word not in the prompt, a grid that could not be drawn) go under the images. When the app saves
(`--save`, the host's `outdir`), the grids can be saved beside the images and the raw maps exported as
`.safetensors` into `<outdir>/promptscope-heatmaps/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..heatmaps.controls import build_controls, settings_from_values
from ..heatmaps.feature import HeatmapFeature, HeatmapSettings, ImageHeatmaps
from .panels import PanelRegistry, Txt2ImgContext, Txt2ImgPanel
from .ui import upscale

TITLE = "Attention heatmaps"
ELEM_ID = "ps_heatmaps"
EXPORT_FOLDER = "promptscope-heatmaps"


class PanelHeatmaps(HeatmapFeature):
    """The feature plus what the panel does with its results once the images exist."""

    def __init__(self, settings: HeatmapSettings, save: bool = False, export_raw: bool = False) -> None:
        super().__init__(settings)
        self.save = save
        self.export_raw = export_raw


def make_feature_for(names: list[str]):
    """`make_feature(*values)` for the controls `names` (in `heatmaps.controls.ARG_NAMES` order)."""

    def make_feature(*values: Any) -> PanelHeatmaps | None:
        if len(values) != len(names):
            raise TypeError(f"attention heatmaps take {len(names)} values ({', '.join(names)}), got {len(values)}")
        given = dict(zip(names, values))
        if not given.get("enabled"):  # off: settings it would reject must not stop the generation
            return None
        try:
            _enabled, settings, extra = settings_from_values(given)
        except ValueError as exc:
            raise ValueError(f"attention heatmap settings: {exc}") from None
        return PanelHeatmaps(settings, save=extra["save"], export_raw=extra["export_raw"])

    return make_feature


def grid_caption(result: ImageHeatmaps, seed: int | None) -> str:
    words = ", ".join(w.word for w in result.words)
    return f"Attention heatmaps ({result.mode}), seed {seed}: {words}"


def after(host: Any, processed: Any, feature: Any) -> None:
    if not isinstance(feature, PanelHeatmaps):
        return
    grids: list[tuple[Any, str]] = []
    notes: list[str] = []
    for result in feature.take_results():
        i = result.image
        if i >= processed.n_generated:
            continue
        seed = processed.seeds[i] if i < len(processed.seeds) else None
        base = upscale(processed.images[i])  # draw on the display size: 32×32 tiles could not hold the words
        try:
            grid = feature.render(result, base)
            layer_grids = [
                (g, f"Attention heatmaps per layer ({result.mode}), seed {seed}: {word}")
                for word, g in (feature.render_layers(result, base) if feature.settings.per_layer else [])
            ]
        except Exception as exc:  # drawing must not lose the user's image; say what failed
            notes.append(f"Attention heatmaps: could not draw the grid of image {i + 1}: {exc}")
            continue
        if grid is None:
            missing = "; ".join(w.message for w in result.words if w.message) or "no word had a map"
            notes.append(f"Attention heatmaps: nothing to show for image {i + 1}: {missing}")
            continue
        grids.append((grid, grid_caption(result, seed)))
        grids.extend(layer_grids)
        outdir = getattr(host, "outdir", None)
        if outdir is None or not (feature.save or feature.export_raw):
            continue
        folder = Path(outdir) / EXPORT_FOLDER
        try:
            if feature.save:  # the image's own infotext, as A1111 saves a grid with `p`
                host.save(grid, processed.infotexts[i], seed if seed is not None else 0, folder)
            if feature.export_raw:
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{seed}-{i:02d}-{result.pass_name}.safetensors"
                feature.export(result, path, {"seed": seed})
                notes.append(f"Attention heatmaps: raw maps saved to {path}")
        except Exception as exc:
            notes.append(f"Attention heatmaps: could not save to {folder}: {exc}")
    if grids:
        host.attach_images(processed, [g for g, _c in grids], [c for _g, c in grids])
    for note in notes:
        if note not in processed.messages:
            processed.messages.append(note)


def build(ctx: Txt2ImgContext) -> Txt2ImgPanel:
    saving = getattr(ctx.host, "outdir", None) is not None
    controls = build_controls(TITLE, elem_id=ELEM_ID, hires=False, saving=saving)
    named = controls.named()
    return Txt2ImgPanel(
        inputs=[c for _n, c in named], make_feature=make_feature_for([n for n, _c in named]), after=after
    )


def register(registry: PanelRegistry) -> None:
    registry.txt2img_panel("heatmaps", build, order=20)
