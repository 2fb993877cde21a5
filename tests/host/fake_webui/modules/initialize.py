"""Start-up and UI reload in the order of v1.10.1's ``webui.py`` / ``modules.initialize`` (test helpers).

``boot(*extension_dirs)``: ``initialize_rest`` (load scripts -> list optimisers -> load the model, which fires
``on_model_loaded``) -> ``before_ui`` -> ``create_ui`` (``ui_settings``, txt2img/img2img script UIs, ``ui_tabs``)
-> ``app_started(demo, app)``.
``restart_ui()`` is "Reload UI": ``on_before_reload`` -> ``script_unloaded`` -> ``initialize_rest`` again (the model
is already loaded, so ``on_model_loaded`` does NOT fire again) -> UI -> ``app_started``.
The WebUI loads the model in a background thread; here it is loaded synchronously before the UI.
"""

from __future__ import annotations

import os

from modules import extensions, script_callbacks, scripts, sd_hijack, sd_models, shared

tabs: list = []


def initialize_rest(*, reload_script_modules=False, model="sd1"):
    scripts.load_scripts(initialize=False)
    sd_hijack.list_optimizers()
    if sd_models.model_data.sd_model is None and model is not None:
        sd_models.load_model(model)
    if sd_hijack.current_optimizer is None:
        sd_hijack.apply_optimizations()


def create_ui():
    """The script-facing part of ``modules.ui.create_ui``; returns the tabs extensions added."""
    import gradio as gr

    script_callbacks.ui_settings_callback()
    with gr.Blocks(analytics_enabled=False) as demo:
        scripts.scripts_txt2img.initialize_scripts(is_img2img=False)
        scripts.scripts_txt2img.setup_ui()
        scripts.scripts_img2img.initialize_scripts(is_img2img=True)
        scripts.scripts_img2img.setup_ui()
    tabs[:] = script_callbacks.ui_tabs_callback()
    shared.demo = demo
    return demo


def _start(with_ui: bool):
    from fastapi import FastAPI

    script_callbacks.before_ui_callback()
    demo = create_ui() if with_ui else None
    app = FastAPI()
    script_callbacks.app_started_callback(demo, app)
    return demo, app


def boot(*extension_dirs: str, model: str | None = "sd1", with_ui: bool = True):
    """Register the extension folders, then start the fake WebUI; returns (demo, FastAPI app)."""
    for d in extension_dirs:
        d = os.path.abspath(d)
        if not any(os.path.abspath(e.path) == d for e in extensions.extensions):
            extensions.extensions.append(extensions.Extension(os.path.basename(d), d))
    initialize_rest(model=model)
    return _start(with_ui)


def restart_ui(with_ui: bool = True):
    script_callbacks.app_reload_callback()
    script_callbacks.script_unloaded_callback()
    initialize_rest(reload_script_modules=True)
    return _start(with_ui)
