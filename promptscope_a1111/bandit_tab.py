"""The seed-bandit tab in A1111: `on_ui_tabs` builds it, `on_app_started` mounts its HTTP routes, and a setting in
Settings → PromptScope chooses its data folder (the environment variable PROMPTSCOPE_BANDIT_DIR, when set, wins:
a deployment's or a test run's folder, so a test server never writes into the user's outputs).

Rounds generate through A1111's own txt2img pipeline (`host.run_jobs`) inside `wrap_gradio_gpu_call` (the queue
lock, job state, Interrupt); the infotext of every image carries the service's "PromptScope session / arm / round"
keys, so PNG Info tells which session, arm and round made it. The tab and the routes share one service.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr
from modules import call_queue, paths, shared
from promptscope_lib_ext.bandit.hosting import ServiceProvider, check_data_dir, host_generator
from promptscope_lib_ext.bandit.queue import QueueRunner
from promptscope_lib_ext.bandit.routes import make_router
from promptscope_lib_ext.bandit.settings import SettingsRules
from promptscope_lib_ext.bandit.ui import build_bandit_tab
from promptscope_lib_ext.guidance.feature import uses_guidance
from promptscope_lib_ext.heatmaps.controls import SWEEP_KEY, sweep_values
from promptscope_lib_ext.seam import GenerationRequest

from . import host
from .guidance_script import TITLE as GUIDANCE_TITLE
from .heatmaps_script import TITLE as HEATMAPS_TITLE
from .webui_bits import add_options, option

log = logging.getLogger("promptscope")
OPT_DIR = "promptscope_bandit_dir"
ENV_DIR = "PROMPTSCOPE_BANDIT_DIR"  # overrides the setting (read at every call, like the setting)
TAB_ID = "promptscope_bandit"
TITLE = "Seed bandit"
ELEM_PREFIX = "ps_bandit"
GUIDANCE_KEY = "semantic_guidance"  # the same session/arm setting as in the standalone app
# Word heatmaps inside the sweep, as in the standalone app (lib_ext/heatmaps/controls.py: sweep_values); the grid
# comes back attached to the image.
HEATMAPS_KEY = SWEEP_KEY


def _webui_path(value: str) -> Path:
    """A1111 keeps output folders relative to the WebUI folder (its working directory)."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(getattr(paths, "script_path", os.getcwd())) / p


def outputs_root() -> Path:
    """The folder A1111 writes its outputs under: "Output directory for images" if set, else the parent of the
    txt2img folder (`<webui>/outputs` by default)."""
    opts = shared.opts
    if getattr(opts, "outdir_samples", ""):
        return _webui_path(opts.outdir_samples)
    txt2img = getattr(opts, "outdir_txt2img_samples", "") or "outputs/txt2img-images"
    return _webui_path(txt2img).parent


def default_data_dir() -> Path:
    return outputs_root() / "promptscope-bandit"


def data_dir() -> Path:
    """$PROMPTSCOPE_BANDIT_DIR if set, else the setting's folder (blank: `<outputs>/promptscope-bandit`); relative
    folders are under the WebUI folder. Checked and created; ValueError if unusable."""
    value = os.environ.get(ENV_DIR, "").strip() or str(option(OPT_DIR, "") or "").strip()
    return check_data_dir(_webui_path(value) if value else default_data_dir())


def sampler_names() -> list[str] | None:
    """The names A1111's `create_sampler` accepts (its registry, extensions' samplers included); None (any name)
    on a WebUI without that registry."""
    from modules import sd_samplers

    registry = getattr(sd_samplers, "all_samplers_map", None)
    return None if registry is None else list(registry)


# Session/arm settings are checked against what `host.run_jobs` and `with_features` use (A1111's ranges).
SETTINGS_RULES = SettingsRules(samplers=sampler_names)
provider = ServiceProvider(data_dir, settings_rules=SETTINGS_RULES)
current_tab: Any = None  # the BanditTab of the last built UI (tests and other glue reach its handlers here)


def register_settings() -> None:
    add_options(
        {
            OPT_DIR: (
                "",
                f"Seed bandit: data folder (database, images, exports); blank: <outputs>/promptscope-bandit; "
                f"the environment variable {ENV_DIR}, if set, overrides this",
                None,
                None,
            ),
        }
    )


TASK_PARAM = "id_task"  # the round handler's parameter that the page script fills with A1111's "task(…)" id


def _wrap_run(fn: Any, n_outputs: int) -> Any:
    """The round handler inside A1111's `wrap_gradio_gpu_call` (queue lock, job state, Interrupt, error HTML).

    A1111 reads a task id from the FIRST argument ("task(…)": progress.add_task_to_queue / start_task /
    finish_task, which A1111's progress bar and live preview poll); the tab passes it as the handler's `id_task`
    parameter, so it is moved to the front for the wrapper and back for the handler. The returned function keeps
    `fn`'s signature (gradio fills its `gr.Progress()` from it)."""
    params = list(inspect.signature(fn).parameters)
    at = params.index(TASK_PARAM) if TASK_PARAM in params else None

    def task_first(id_task: Any, *args: Any, **kwargs: Any) -> Any:
        if at is not None:
            if len(args) >= at:
                args = (*args[:at], id_task, *args[at:])
            else:
                kwargs[TASK_PARAM] = id_task
        return fn(*args, **kwargs)

    # On an exception A1111's wrapper returns `extra_outputs + [error html]`: leave the other outputs as they are.
    wrapped = call_queue.wrap_gradio_gpu_call(task_first, extra_outputs=[gr.update() for _ in range(n_outputs - 1)])

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        id_task = kwargs.pop(TASK_PARAM, None)
        if at is not None and len(args) > at:
            id_task, args = args[at], (*args[:at], *args[at + 1 :])
        return wrapped(id_task if id_task else None, *args, **kwargs)

    return run


def heatmap_args(value: Any) -> dict[str, Any] | None:
    """The `heatmaps` setting → the heatmap script's named arguments, or None when off (the script validates the
    values and tells the user under the image if they are wrong)."""
    values = sweep_values(value)
    return None if values is None else {**values, "save": False}  # the sweep saves the grid itself


def with_features(req: GenerationRequest) -> GenerationRequest:
    """Semantic guidance and word heatmaps inside the sweep, as in the standalone app: guidance on for prompts that
    use its keywords, with the session/arm setting `semantic_guidance` (a dict of its settings) if given; heatmaps
    when the setting `heatmaps` asks (the grid comes back in the result's `extra_images`)."""
    given = req.settings.get(GUIDANCE_KEY)
    heat = heatmap_args(req.settings.get(HEATMAPS_KEY))
    guided = uses_guidance(req.prompt) or isinstance(given, dict)
    if not guided and heat is None:
        return req
    script_args = dict(req.settings.get(host.SCRIPT_ARGS_KEY) or {})
    if guided:
        script_args.setdefault(GUIDANCE_TITLE, {"enabled": True, **(given if isinstance(given, dict) else {})})
    if heat is not None:
        script_args.setdefault(HEATMAPS_TITLE, heat)
    return dataclasses.replace(req, settings={**req.settings, host.SCRIPT_ARGS_KEY: script_args})


def run_jobs(requests: list[GenerationRequest], progress: Any = None) -> list[Any]:
    return host.run_jobs([with_features(r) for r in requests], progress)


def images_dir() -> Path:
    return provider.data_dir() / "images"


generate = host_generator(run_jobs, GenerationRequest, images_dir)


def background_generate(jobs: list[Any], progress: Any = None) -> list[Any]:
    """A queued image through A1111's pipeline from the queue's thread, as `wrap_gradio_gpu_call` runs a click:
    under the queue lock (one generation at a time with the user's own txt2img) and inside A1111's job state
    (Interrupt stops it; the flags are reset afterwards as A1111's wrapper does)."""
    with call_queue.queue_lock:
        shared.state.begin(job="promptscope_queue")
        try:
            return generate(jobs, progress)
        finally:
            shared.state.end()
            shared.state.interrupted = shared.state.skipped = False
            shared.state.stopping_generation = False


def interrupt() -> None:
    shared.state.interrupt()


# Generate ahead: queues run in the background through this WebUI (and the session's worker WebUIs).
runner = QueueRunner(provider, background_generate, images_dir, interrupt)


def build_blocks() -> gr.Blocks:
    global current_tab
    with gr.Blocks(analytics_enabled=False) as blocks:
        current_tab = build_bandit_tab(
            provider, generate, interrupt, provider.data_dir, ELEM_PREFIX, _wrap_run, queue_runner=runner
        )
    return blocks


def on_ui_tabs() -> list[tuple[gr.Blocks, str, str]]:
    return [(build_blocks(), TITLE, TAB_ID)]


def on_app_started(_demo: Any, app: Any) -> None:
    def allowed_roots() -> list[Path]:
        return [outputs_root()]

    app.include_router(make_router(provider, allowed_roots, runner=runner))
    try:
        runner.resume_all()  # queues left unfinished by the last run (or by a UI reload)
    except Exception:  # an unusable data folder: the tab and the routes say why
        log.exception("PromptScope: could not resume the seed-bandit queues")


def on_unloaded() -> None:
    runner.close()  # background threads joined, claims given back; the queues resume at the next start
    provider.close()
