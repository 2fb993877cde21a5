"""A test-only WebUI extension (linked by the live tier as `extensions/ps-live-probe`): records the order in which
the real host calls script hooks and denoiser callbacks, and can fail or interrupt a job mid-sampling on request.
Inert unless its first arg is True; its second arg is an action: "raise_in_sampling" (the UNet raises in the
denoiser's second call), "interrupt_in_sampling" (shared.state.interrupt() at the first denoiser call),
"prompts:" + a JSON list (a different prompt per image of the batch, set in process() as Dynamic Prompts does) or, on
Forge, "forge_rows" (an event per UNet forward with its rows, and — when PROMPTSCOPE_PROBE_DUMP names a folder —
each UNet call's input/output rows, seen through a function wrapper installed before PromptScope's, and each step's
denoised result after every CFG hook, as .npz files: what `bench forge_neo` recomputes).
Events go as JSON lines to the file named by PROMPTSCOPE_PROBE_LOG. Two routes serve the Reload UI test:
GET /ps-live-probe/callbacks (the host's callbacks by category) and POST /ps-live-probe/reload-ui."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import gradio as gr
from modules import script_callbacks, scripts, shared

TITLE = "Live probe"
DELIBERATE = "live-probe: deliberate failure"
PROMPTS_ACTION = "prompts:"  # + a JSON list: the job's prompts, one per image
_active: dict[str, Any] = {"p": None, "action": "", "hook": None, "denoiser_call": None, "dump_seq": 0}


def _record(event: str, **data: Any) -> None:
    path = os.environ.get("PROMPTSCOPE_PROBE_LOG")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"event": event, "t": time.time(), **data}) + "\n")


def _shape(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items()}
    return list(x.shape) if hasattr(x, "shape") else type(x).__name__


def _mine(params: Any) -> bool:
    p = _active["p"]
    return p is not None and getattr(getattr(params, "denoiser", None), "p", p) is p


def _on_cfg_denoiser(params: Any) -> None:
    if not _mine(params):
        return
    call = getattr(params.denoiser, "step", None)  # the denoiser's own count of its calls in this sampling run
    _active["denoiser_call"] = call
    _record(
        "cfg_denoiser",
        call=call,
        total_calls=getattr(params.denoiser, "total_steps", None),
        step=params.sampling_step,
        total=params.total_sampling_steps,
        x=_shape(params.x),
        text_cond=_shape(params.text_cond),
        text_uncond=_shape(params.text_uncond),
        denoiser=type(params.denoiser).__name__,
        hr=bool(getattr(_active["p"], "is_hr_pass", False)),
    )
    # (Raising here would prove nothing: A1111 catches and prints every callback's exception and samples on.)
    if _active["action"] == "interrupt_in_sampling" and call == 0:
        shared.state.interrupt()


def _on_cfg_denoised(params: Any) -> None:
    if _active["p"] is not None:
        _record("cfg_denoised", step=params.sampling_step, x=_shape(params.x))


def _on_cfg_after_cfg(params: Any) -> None:
    if _active["p"] is not None:
        _record("cfg_after_cfg", step=params.sampling_step, x=_shape(params.x))
        if _active["action"] == "forge_rows":
            _dump("after_cfg", denoised=params.x, step=_active["denoiser_call"] or 0)


def _dump(kind: str, **arrays: Any) -> None:
    """One .npz in PROMPTSCOPE_PROBE_DUMP (float32 arrays; numbered in call order)."""
    folder = os.environ.get("PROMPTSCOPE_PROBE_DUMP")
    if not folder:
        return
    import numpy as np
    import torch

    def plain(v: Any) -> Any:
        return v.detach().float().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

    _active["dump_seq"] += 1
    path = os.path.join(folder, f"{_active['dump_seq']:05d}-{kind}.npz")
    np.savez(path, **{k: plain(v) for k, v in arrays.items()})


def _watch_forge_unet(p: Any) -> None:
    """Forge: count UNet forwards (rows each) and record every UNet call's rows through a function wrapper on this
    pass's UnetPatcher clone. Installed here, before the sampler starts, it is the INNER wrapper once PromptScope
    wraps the pass, so it sees the rows PromptScope appends too."""
    patcher = p.sd_model.forge_objects.unet.clone()
    previous = patcher.model_options.get("model_function_wrapper")

    def wrapper(apply_model: Any, args: dict[str, Any]) -> Any:
        if previous is not None:
            out = previous(apply_model, args)
        else:
            out = apply_model(args["input"], args["timestep"], **args["c"])
        kinds = list(args["cond_or_uncond"])
        _record("unet_call", rows=int(args["input"].shape[0]), cond_or_uncond=kinds, step=_active["denoiser_call"])
        _dump("unet", input=args["input"], timestep=args["timestep"], out=out, cond_or_uncond=kinds,
              step=_active["denoiser_call"] or 0, dtype=str(out.dtype))  # fmt: skip
        return out

    patcher.set_model_unet_function_wrapper(wrapper)
    p.sd_model.forge_objects.unet = patcher

    def pre_hook(module: Any, inputs: Any) -> None:
        _record("unet_forward", rows=int(inputs[0].shape[0]), step=_active["denoiser_call"])

    _drop_unet_hook()
    _active["hook"] = patcher.model.diffusion_model.register_forward_pre_hook(pre_hook)


script_callbacks.on_cfg_denoiser(_on_cfg_denoiser, name="live_probe")
script_callbacks.on_cfg_denoised(_on_cfg_denoised, name="live_probe")
script_callbacks.on_cfg_after_cfg(_on_cfg_after_cfg, name="live_probe")


def _drop_unet_hook() -> None:
    if _active["hook"] is not None:
        _active["hook"].remove()
        _active["hook"] = None


def _fail_in_second_denoiser_call(unet: Any) -> None:
    """A real failure inside sampling: the UNet raises once the denoiser's second call has begun (hooks of torch
    modules are not guarded by A1111, unlike script hooks and callbacks). Counting denoiser calls rather than UNet
    calls keeps this independent of batch_cond_uncond. The hook removes itself first."""

    def pre_hook(module: Any, inputs: Any) -> None:
        if _active["denoiser_call"] == 1:
            _drop_unet_hook()
            raise RuntimeError(DELIBERATE)

    _drop_unet_hook()
    _active["hook"] = unet.register_forward_pre_hook(pre_hook)


class LiveProbe(scripts.Script):
    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        return [gr.Checkbox(False, label="probe enabled"), gr.Textbox("", label="probe action")]

    def _hook(self, name: str, p: Any, args: tuple[Any, ...], **data: Any) -> bool:
        if not (args and args[0] is True):
            return False
        _record(name, job=id(p), hr=bool(getattr(p, "is_hr_pass", False)), **data)
        return True

    def setup(self, p: Any, *args: Any) -> None:
        self._hook("setup", p, args)

    def before_process(self, p: Any, *args: Any) -> None:
        _drop_unet_hook()  # left over when the last job failed before postprocess
        _active["denoiser_call"] = None
        _active["dump_seq"] = 0
        if self._hook("before_process", p, args, batch_cond_uncond=getattr(shared.opts, "batch_cond_uncond", None)):
            _active["p"], _active["action"] = p, str(args[1] or "")
        else:
            _active["p"] = None

    def process(self, p: Any, *args: Any) -> None:
        if self._hook("process", p, args, prompts=list(p.all_prompts), batch_size=p.batch_size):
            action = str(args[1] or "")
            if action.startswith(PROMPTS_ACTION):
                # One prompt per image of the job, as Dynamic Prompts sets them (the API's prompt is one string).
                prompts = json.loads(action[len(PROMPTS_ACTION) :])
                p.all_prompts = list(prompts)
                if hasattr(p, "all_hr_prompts"):
                    p.all_hr_prompts = list(prompts)

    def before_process_batch(self, p: Any, *args: Any, **kw: Any) -> None:
        self._hook("before_process_batch", p, args, batch_number=kw.get("batch_number"))

    def after_extra_networks_activate(self, p: Any, *args: Any, **kw: Any) -> None:
        self._hook("after_extra_networks_activate", p, args)

    def process_batch(self, p: Any, *args: Any, **kw: Any) -> None:
        self._hook("process_batch", p, args, batch_number=kw.get("batch_number"))

    def process_before_every_sampling(self, p: Any, *args: Any, **kw: Any) -> None:
        on = self._hook("process_before_every_sampling", p, args, x=_shape(kw.get("x")), width=p.width, height=p.height)
        if on and _active["action"] == "raise_in_sampling":
            _fail_in_second_denoiser_call(p.sd_model.model.diffusion_model)
        if on and _active["action"] == "forge_rows":
            _watch_forge_unet(p)

    def before_hr(self, p: Any, *args: Any) -> None:
        self._hook("before_hr", p, args)

    def post_sample(self, p: Any, ps: Any, *args: Any) -> None:
        self._hook("post_sample", p, args, samples=_shape(ps.samples))

    def postprocess_batch(self, p: Any, *args: Any, **kw: Any) -> None:
        self._hook("postprocess_batch", p, args, images=_shape(kw.get("images")))

    def postprocess_batch_list(self, p: Any, pp: Any, *args: Any, **kw: Any) -> None:
        self._hook("postprocess_batch_list", p, args, n=len(pp.images))

    def postprocess_image(self, p: Any, pp: Any, *args: Any) -> None:
        self._hook("postprocess_image", p, args)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        if self._hook("postprocess", p, args, n_images=len(processed.images), interrupted=shared.state.interrupted):
            _active["p"] = None
            _drop_unet_hook()


def _add_routes(_demo: Any, app: Any) -> None:
    """GET /ps-live-probe/callbacks: the host's registered callbacks, by category (names, in order).
    POST /ps-live-probe/reload-ui: what Settings → Reload UI runs (its button's handler,
    shared.state.request_restart)."""

    def callbacks() -> dict[str, list[str]]:
        return {category: [c.name for c in cbs] for category, cbs in script_callbacks.callback_map.items()}

    def reload_ui() -> dict[str, bool]:
        shared.state.request_restart()
        return {"requested": True}

    app.add_api_route("/ps-live-probe/callbacks", callbacks, methods=["GET"])
    app.add_api_route("/ps-live-probe/reload-ui", reload_ui, methods=["POST"])


script_callbacks.on_app_started(_add_routes, name="live_probe_routes")
