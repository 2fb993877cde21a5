"""The seed-bandit tab in the standalone app: generation on the toy host, data in `outputs/promptscope-bandit/`
(or the app's `--data-dir`), and the HTTP routes on the app's FastAPI app once it runs."""

from __future__ import annotations

from pathlib import Path

from ..bandit.hosting import ServiceProvider, host_generator
from ..bandit.routes import make_router
from ..bandit.ui import build_bandit_tab
from ..guidance import GuidanceSettings
from ..guidance.feature import GuidanceFeature, uses_guidance
from ..seam import GenerationRequest
from .panels import PanelRegistry, TabContext

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO / "outputs" / "promptscope-bandit"
ELEM_PREFIX = "ps_bandit"
GUIDANCE_KEY = "semantic_guidance"  # session/arm setting: GuidanceSettings as a dict (defaults if absent)


def sweep_features(requests) -> list:
    """Semantic guidance inside the sweep: on for a round whose prompts use its keywords (AND_TOPK …), with the
    settings' `semantic_guidance` dict (the first request that has one; the round shares one feature)."""
    if not any(uses_guidance(r.prompt) for r in requests):
        return []
    given = next((r.settings[GUIDANCE_KEY] for r in requests if isinstance(r.settings.get(GUIDANCE_KEY), dict)), {})
    return [GuidanceFeature(GuidanceSettings.from_dict(given))]


def build(ctx: TabContext) -> None:
    data_dir = Path(ctx.data_dir) if getattr(ctx, "data_dir", None) else DEFAULT_DATA_DIR
    provider = ServiceProvider(data_dir)
    host = ctx.host

    def run_jobs(requests, progress=None):
        return host.run_jobs(requests, progress, features=sweep_features(requests))

    generate = host_generator(run_jobs, GenerationRequest, lambda: provider.data_dir() / "images")
    build_bandit_tab(provider, generate, host.interrupt, provider.data_dir, ELEM_PREFIX, display_size=256)
    hooks = getattr(ctx, "app_hooks", None)
    if hooks is not None:
        outdir = getattr(host, "outdir", None)
        router = make_router(provider, allowed_roots=lambda: [outdir] if outdir is not None else [])
        hooks.append(lambda _demo, app: app.include_router(router))


def register(registry: PanelRegistry) -> None:
    registry.tab("bandit", "Seed bandit", build, order=50)
