"""``modules.script_callbacks`` of v1.10.1: registration, ordering cache, dispatch and removal.

Callbacks are keyed by the file that registered them (first stack frame outside this module), which is what
``remove_current_script_callbacks`` relies on. Extension ordering from ``metadata.ini`` is not modelled.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

from modules import errors, extensions, shared


def report_exception(c, job):
    errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


class ImageSaveParams:
    def __init__(self, image, p, filename, pnginfo):
        self.image = image
        self.p = p
        self.filename = filename
        self.pnginfo = pnginfo


class ExtraNoiseParams:
    def __init__(self, noise, x, xi):
        self.noise = noise
        self.x = x
        self.xi = xi


class CFGDenoiserParams:
    def __init__(
        self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None
    ):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


class UiTrainTabParams:
    def __init__(self, txt2img_preview_params):
        self.txt2img_preview_params = txt2img_preview_params


class ImageGridLoopParams:
    def __init__(self, imgs, cols, rows):
        self.imgs = imgs
        self.cols = cols
        self.rows = rows


@dataclasses.dataclass
class BeforeTokenCounterParams:
    prompt: str
    steps: int
    styles: list
    is_positive: bool = True


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: Any
    name: str = "unnamed"


def _caller_filename() -> str:
    frames = [f for f in inspect.stack() if f.filename != __file__]
    return frames[0].filename if frames else "unknown file"


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    if filename is None:
        filename = _caller_filename()
    ext = extensions.find_extension(filename)
    base = f"{ext.canonical_name if ext else 'base'}/{os.path.basename(filename)}/{category}"
    if name is not None:
        base += f"/{name}"
    unique = base
    for i in range(1000):
        if not any(x.name == unique for x in callbacks):
            break
        unique = f"{base}-{i + 1}"
    callbacks.append(ScriptCallback(filename, fun, unique))


def sort_callbacks(category, unordered_callbacks, *, enable_user_sort=True):
    callbacks = unordered_callbacks.copy()
    if enable_user_sort:
        for name in reversed(getattr(shared.opts, "prioritized_callbacks_" + category, [])):
            index = next((i for i, c in enumerate(callbacks) if c.name == name), None)
            if index is not None:
                callbacks.insert(0, callbacks.pop(index))
    return callbacks


def ordered_callbacks(category, unordered_callbacks=None, *, enable_user_sort=True):
    if unordered_callbacks is None:
        unordered_callbacks = callback_map.get("callbacks_" + category, [])
    if not enable_user_sort:
        return sort_callbacks(category, unordered_callbacks, enable_user_sort=False)
    # the WebUI caches the sorted list and only rebuilds it when the length changes
    cached = ordered_callbacks_map.get(category)
    if cached is not None and len(cached) == len(unordered_callbacks):
        return cached
    cached = sort_callbacks(category, unordered_callbacks)
    ordered_callbacks_map[category] = cached
    return cached


def enumerate_callbacks():
    for category, callbacks in callback_map.items():
        yield (category[10:] if category.startswith("callbacks_") else category), callbacks


callback_map = {
    f"callbacks_{k}": []
    for k in (
        "app_started",
        "model_loaded",
        "ui_tabs",
        "ui_train_tabs",
        "ui_settings",
        "before_image_saved",
        "image_saved",
        "extra_noise",
        "cfg_denoiser",
        "cfg_denoised",
        "cfg_after_cfg",
        "before_component",
        "after_component",
        "image_grid",
        "infotext_pasted",
        "script_unloaded",
        "before_ui",
        "on_reload",
        "list_optimizers",
        "list_unets",
        "before_token_counter",
    )
}

ordered_callbacks_map: dict = {}


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()
    ordered_callbacks_map.clear()


def _run_each(category, job, *args, reverse=False, **kwargs):
    found = ordered_callbacks(category)
    for c in reversed(found) if reverse else found:
        try:
            c.callback(*args, **kwargs)
        except Exception:
            report_exception(c, job)


def app_started_callback(demo, app):
    _run_each("app_started", "app_started_callback", demo, app)


def app_reload_callback():
    _run_each("on_reload", "callbacks_on_reload")


def model_loaded_callback(sd_model):
    _run_each("model_loaded", "model_loaded_callback", sd_model)


def ui_tabs_callback():
    res = []
    for c in ordered_callbacks("ui_tabs"):
        try:
            res += c.callback() or []
        except Exception:
            report_exception(c, "ui_tabs_callback")
    return res


def ui_train_tabs_callback(params: UiTrainTabParams):
    _run_each("ui_train_tabs", "callbacks_ui_train_tabs", params)


def ui_settings_callback():
    _run_each("ui_settings", "ui_settings_callback")


def before_image_saved_callback(params: ImageSaveParams):
    _run_each("before_image_saved", "before_image_saved_callback", params)


def image_saved_callback(params: ImageSaveParams):
    _run_each("image_saved", "image_saved_callback", params)


def extra_noise_callback(params: ExtraNoiseParams):
    _run_each("extra_noise", "callbacks_extra_noise", params)


def cfg_denoiser_callback(params: CFGDenoiserParams):
    _run_each("cfg_denoiser", "cfg_denoiser_callback", params)


def cfg_denoised_callback(params: CFGDenoisedParams):
    _run_each("cfg_denoised", "cfg_denoised_callback", params)


def cfg_after_cfg_callback(params: AfterCFGCallbackParams):
    _run_each("cfg_after_cfg", "cfg_after_cfg_callback", params)


def before_component_callback(component, **kwargs):
    _run_each("before_component", "before_component_callback", component, **kwargs)


def after_component_callback(component, **kwargs):
    _run_each("after_component", "after_component_callback", component, **kwargs)


def image_grid_callback(params: ImageGridLoopParams):
    _run_each("image_grid", "image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]):
    _run_each("infotext_pasted", "infotext_pasted", infotext, params)


def script_unloaded_callback():
    # unloaded in reverse registration order
    _run_each("script_unloaded", "script_unloaded", reverse=True)


def before_ui_callback():
    _run_each("before_ui", "before_ui", reverse=True)


def list_optimizers_callback():
    res = []
    _run_each("list_optimizers", "list_optimizers", res)
    return res


def list_unets_callback():
    res = []
    _run_each("list_unets", "list_unets", res)
    return res


def before_token_counter_callback(params: BeforeTokenCounterParams):
    _run_each("before_token_counter", "before_token_counter", params)


def remove_current_script_callbacks():
    filename = _caller_filename()
    if filename == "unknown file":
        return
    for lists in (callback_map.values(), ordered_callbacks_map.values()):
        for callback_list in lists:
            for cb in [cb for cb in callback_list if cb.script == filename]:
                callback_list.remove(cb)


def remove_callbacks_for_function(callback_func):
    for lists in (callback_map.values(), ordered_callbacks_map.values()):
        for callback_list in lists:
            for cb in [cb for cb in callback_list if cb.callback == callback_func]:
                callback_list.remove(cb)


# The registration functions; their frames live in this file, so the registering file is the caller's.
def on_app_started(callback, *, name=None):
    add_callback(callback_map["callbacks_app_started"], callback, name=name, category="app_started")


def on_before_reload(callback, *, name=None):
    add_callback(callback_map["callbacks_on_reload"], callback, name=name, category="on_reload")


def on_model_loaded(callback, *, name=None):
    add_callback(callback_map["callbacks_model_loaded"], callback, name=name, category="model_loaded")


def on_ui_tabs(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_tabs"], callback, name=name, category="ui_tabs")


def on_ui_train_tabs(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_train_tabs"], callback, name=name, category="ui_train_tabs")


def on_ui_settings(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name, category="ui_settings")


def on_before_image_saved(callback, *, name=None):
    add_callback(callback_map["callbacks_before_image_saved"], callback, name=name, category="before_image_saved")


def on_image_saved(callback, *, name=None):
    add_callback(callback_map["callbacks_image_saved"], callback, name=name, category="image_saved")


def on_extra_noise(callback, *, name=None):
    add_callback(callback_map["callbacks_extra_noise"], callback, name=name, category="extra_noise")


def on_cfg_denoiser(callback, *, name=None):
    add_callback(callback_map["callbacks_cfg_denoiser"], callback, name=name, category="cfg_denoiser")


def on_cfg_denoised(callback, *, name=None):
    add_callback(callback_map["callbacks_cfg_denoised"], callback, name=name, category="cfg_denoised")


def on_cfg_after_cfg(callback, *, name=None):
    add_callback(callback_map["callbacks_cfg_after_cfg"], callback, name=name, category="cfg_after_cfg")


def on_before_component(callback, *, name=None):
    add_callback(callback_map["callbacks_before_component"], callback, name=name, category="before_component")


def on_after_component(callback, *, name=None):
    add_callback(callback_map["callbacks_after_component"], callback, name=name, category="after_component")


def on_image_grid(callback, *, name=None):
    add_callback(callback_map["callbacks_image_grid"], callback, name=name, category="image_grid")


def on_infotext_pasted(callback, *, name=None):
    add_callback(callback_map["callbacks_infotext_pasted"], callback, name=name, category="infotext_pasted")


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name, category="script_unloaded")


def on_before_ui(callback, *, name=None):
    add_callback(callback_map["callbacks_before_ui"], callback, name=name, category="before_ui")


def on_list_optimizers(callback, *, name=None):
    add_callback(callback_map["callbacks_list_optimizers"], callback, name=name, category="list_optimizers")


def on_list_unets(callback, *, name=None):
    add_callback(callback_map["callbacks_list_unets"], callback, name=name, category="list_unets")


def on_before_token_counter(callback, *, name=None):
    add_callback(callback_map["callbacks_before_token_counter"], callback, name=name, category="before_token_counter")
