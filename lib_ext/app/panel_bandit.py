"""The seed-bandit tab in the standalone app: generation on the toy host, data in `outputs/promptscope-bandit/`
(or the app's `--data-dir`), and the HTTP routes on the app's FastAPI app once it runs."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from ..bandit.hosting import HEATMAP_CAPTION, ServiceProvider, host_generator
from ..bandit.queue import QueueRunner
from ..bandit.routes import make_router
from ..bandit.settings import BASE_KEYS, SettingsRules
from ..bandit.ui import build_bandit_tab
from ..guidance import GuidanceSettings
from ..guidance.feature import GuidanceFeature, uses_guidance
from ..heatmaps.controls import SWEEP_KEY, settings_from_values, sweep_values
from ..heatmaps.feature import HeatmapFeature, HeatmapSettings
from ..seam import GenerationRequest
from ..toyworld.host import IMAGE_SIZE, SAMPLER_NAMES
from .panels import PanelRegistry, TabContext

log = logging.getLogger("promptscope")
REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO / "outputs" / "promptscope-bandit"
ELEM_PREFIX = "ps_bandit"
GUIDANCE_KEY = "semantic_guidance"  # session/arm setting: GuidanceSettings as a dict (defaults if absent)
HEATMAPS_KEY = SWEEP_KEY
HEATMAP_TILE = 128  # px per word tile: the toy model's 32 px images would leave no room for the word
# Session/arm settings the toy host can use (ToyHost.run_jobs reads steps, cfg_scale, sampler_name, width, height).
TOY_RULES = SettingsRules(keys=BASE_KEYS, size=(IMAGE_SIZE, IMAGE_SIZE, 1), samplers=lambda: SAMPLER_NAMES)


def toy_rules(image_size: int) -> SettingsRules:
    """The rules for the host's model: 32 px (word-level model) or 256 px (the SD1 checkpoint)."""
    return dataclasses.replace(TOY_RULES, size=(image_size, image_size, 1))


def heatmap_settings(value: Any) -> HeatmapSettings | None:
    """The `heatmaps` setting → HeatmapSettings, or None when off; ValueError saying what is wrong."""
    values = sweep_values(value)
    if values is None:
        return None
    try:
        return settings_from_values(values)[1]
    except ValueError as exc:
        raise ValueError(f"setting {HEATMAPS_KEY!r}: {exc}") from None


class SweepHeatmaps:
    """Word heatmaps inside a sweep round: a HeatmapFeature for each request that asks for one (`features`), and
    its grid drawn over the finished image and attached to it (`postprocess`), as A1111's heatmap script does."""

    def __init__(self, host: Any) -> None:
        self.host = host  # ToyHost: attach_images, add_infotext
        self._features: dict[int, HeatmapFeature] = {}

    def features(self, req: GenerationRequest) -> list[HeatmapFeature]:
        settings = heatmap_settings(req.settings.get(HEATMAPS_KEY))
        if settings is None:
            return []
        feature = HeatmapFeature(settings)
        self._features[id(req)] = feature
        return [feature]

    def postprocess(self, req: GenerationRequest, processed: Any) -> None:
        feature = self._features.pop(id(req), None)
        if feature is None or not processed.images:
            return
        results = [r for r in feature.take_results() if r.image == 0]
        grid = feature.render(results[-1], processed.images[0], tile_width=HEATMAP_TILE) if results else None
        if grid is None:  # nothing captured (interrupted early) or no word had a map: say why in the infotext
            words = "; ".join(w.message for w in results[-1].words if w.message) if results else ""
            why = "; ".join(feature.messages) or words or "no word of the prompt had a map"
            self.host.add_infotext(processed, "PromptScope heatmaps", why[:200])
            return
        seed = processed.seeds[0] if processed.seeds else ""
        caption = f"{HEATMAP_CAPTION} (first pass, {feature.settings.mode}), seed {seed}: {req.prompt}"
        self.host.attach_images(processed, [grid], [caption])


def sweep_features(requests) -> list:
    """Semantic guidance inside the sweep: on for a round whose prompts use its keywords (AND_TOPK …), with the
    settings' `semantic_guidance` dict (the first request that has one; the round shares one feature)."""
    if not any(uses_guidance(r.prompt) for r in requests):
        return []
    given = next((r.settings[GUIDANCE_KEY] for r in requests if isinstance(r.settings.get(GUIDANCE_KEY), dict)), {})
    return [GuidanceFeature(GuidanceSettings.from_dict(given))]


def build(ctx: TabContext) -> None:
    data_dir = Path(ctx.data_dir) if getattr(ctx, "data_dir", None) else DEFAULT_DATA_DIR
    host = ctx.host
    provider = ServiceProvider(data_dir, settings_rules=toy_rules(getattr(host, "image_size", IMAGE_SIZE)))

    def run_jobs(requests, progress=None):
        guidance = sweep_features(requests)
        if not any(heatmap_settings(r.settings.get(HEATMAPS_KEY)) for r in requests):
            return host.run_jobs(requests, progress, features=guidance)
        heat = SweepHeatmaps(host)
        return host.run_jobs(
            requests, progress, features=lambda r: [*guidance, *heat.features(r)], postprocess=heat.postprocess
        )

    images_dir = lambda: provider.data_dir() / "images"  # noqa: E731
    generate = host_generator(run_jobs, GenerationRequest, images_dir)
    # Queued images are generated in the background on the toy host (its lock serialises them with the page's
    # own generations) and by the session's worker WebUIs.
    runner = QueueRunner(provider, generate, images_dir, host.interrupt)
    build_bandit_tab(provider, generate, host.interrupt, provider.data_dir, ELEM_PREFIX, display_size=256,
                     queue_runner=runner)  # fmt: skip
    hooks = getattr(ctx, "app_hooks", None)
    if hooks is not None:
        outdir = getattr(host, "outdir", None)
        router = make_router(provider, allowed_roots=lambda: [outdir] if outdir is not None else [], runner=runner)

        def started(_demo: Any, app: Any) -> None:
            app.include_router(router)
            try:
                runner.resume_all()  # queues a previous run left unfinished
            except Exception:  # an unusable data folder: the tab and routes say why
                log.exception("PromptScope: could not resume the seed-bandit queues")

        hooks.append(started)
    closing = getattr(ctx, "close_hooks", None)
    if closing is not None:
        closing.append(lambda: (runner.close(), provider.close()))


def register(registry: PanelRegistry) -> None:
    registry.tab("bandit", "Seed bandit", build, order=50)
