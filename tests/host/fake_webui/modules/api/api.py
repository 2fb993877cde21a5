"""The logic of ``/sdapi/v1/txt2img`` (``modules.api.api.Api.text2imgapi``) without FastAPI or pydantic.

``text2imgapi(payload)`` takes the JSON body as a dict and returns ``{"images", "parameters", "info"}`` with PIL
images instead of base64. Kept: default script args from every script's ``ui()`` values, ``alwayson_scripts``
args written over ``args_from..`` (missing ones keep the ``ui()`` defaults), script args read from ``infotext``
through the scripts' ``infotext_fields``, ``p.is_api``, the queue lock, ``closing(p)``, ``state.begin/end``.
"""

from __future__ import annotations

import types
from contextlib import closing

from modules import call_queue, infotext_utils, processing, scripts, shared
from modules.shared import opts


class HTTPException(Exception):
    def __init__(self, status_code: int, detail: str):
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


TXT2IMG_DEFAULTS = {
    "prompt": "",
    "negative_prompt": "",
    "styles": None,
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0,
    "sampler_name": None,
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 50,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 512,
    "enable_hr": False,
    "denoising_strength": None,
    "hr_scale": 2.0,
    "hr_upscaler": None,
    "hr_second_pass_steps": 0,
    "hr_sampler_name": None,
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "override_settings": None,
    "override_settings_restore_afterwards": True,
    "script_name": None,
    "script_args": [],
    "alwayson_scripts": {},
    "send_images": True,
    "save_images": False,
    "infotext": None,
}


_NOT_PROCESSING_ARGS = {"script_name", "script_args", "alwayson_scripts", "infotext", "send_images", "save_images"}


def script_name_to_index(name, scripts_list):
    try:
        return [script.title().lower() for script in scripts_list].index(name.lower())
    except Exception as e:
        raise HTTPException(status_code=422, detail=f"Script '{name}' not found") from e


def get_selectable_script(script_name, script_runner):
    if not script_name:
        return None, None
    idx = script_name_to_index(script_name, script_runner.selectable_scripts)
    return script_runner.selectable_scripts[idx], idx


def get_script(script_name, script_runner):
    if not script_name:
        return None
    return script_runner.scripts[script_name_to_index(script_name, script_runner.scripts)]


def init_default_script_args(script_runner):
    """``[0, ui defaults...]`` covering every script's ``args_from:args_to`` (``ui()`` is called again, twice)."""
    import gradio as gr

    last_arg_index = 1
    for script in script_runner.scripts:
        last_arg_index = max(last_arg_index, script.args_to or 1)
    script_args = [None] * last_arg_index
    script_args[0] = 0
    with gr.Blocks():
        for script in script_runner.scripts:
            if script.ui(script.is_img2img):
                script_args[script.args_from : script.args_to] = [e.value for e in script.ui(script.is_img2img)]
    return script_args


def init_script_args(
    request, default_script_args, selectable_scripts, selectable_idx, script_runner, *, input_script_args=None
):
    script_args = default_script_args.copy()
    if input_script_args is not None:
        for index, value in input_script_args.items():
            script_args[index] = value
    if selectable_scripts:
        script_args[selectable_scripts.args_from : selectable_scripts.args_to] = request.script_args
        script_args[0] = selectable_idx + 1
    for name, body in (request.alwayson_scripts or {}).items():
        script = get_script(name, script_runner)
        if script is None:
            raise HTTPException(status_code=422, detail=f"always on script {name} not found")
        if script.alwayson is False:
            raise HTTPException(
                status_code=422, detail="Cannot have a selectable script in the always on scripts params"
            )
        if "args" in body:
            for idx in range(0, min(script.args_to - script.args_from, len(body["args"]))):
                script_args[script.args_from + idx] = body["args"][idx]
    return script_args


def script_args_from_infotext(infotext: str, script_runner) -> dict[int, object]:
    """{input index: value} for every script ``infotext_fields`` key found in the infotext."""
    params = infotext_utils.parse_generation_parameters(infotext)
    indexes = {id(v): i for i, v in enumerate(script_runner.inputs)}
    found = {}
    for field in script_runner.infotext_fields:
        field = field if isinstance(field, infotext_utils.PasteField) else infotext_utils.PasteField(*field)
        index = indexes.get(id(field.component))
        if index is None:
            continue
        value = field.function(params) if field.function else params.get(field.label)
        if value is None:
            continue
        if isinstance(value, dict) and value.get("__type__") == "generic_update":
            value = value.get("value")
        target_type = type(field.component.value)
        if target_type is type(None):
            continue
        if value is not None and not isinstance(value, target_type):
            value = target_type(value)
        found[index] = value
    return found


def text2imgapi(payload: dict) -> dict:
    unknown = set(payload) - set(TXT2IMG_DEFAULTS)
    if unknown:
        raise HTTPException(status_code=422, detail=f"unknown fields: {sorted(unknown)}")
    request = types.SimpleNamespace(**{**TXT2IMG_DEFAULTS, **payload})
    script_runner = scripts.scripts_txt2img

    infotext_script_args = script_args_from_infotext(request.infotext, script_runner) if request.infotext else {}
    selectable_scripts, selectable_idx = get_selectable_script(request.script_name, script_runner)

    # fields left out of the request keep the processing class's own defaults (the pydantic model copies them)
    args = {k: v for k, v in payload.items() if k not in _NOT_PROCESSING_ARGS}
    args["sampler_name"] = request.sampler_name or "Euler"
    args["do_not_save_samples"] = not request.save_images
    args["do_not_save_grid"] = not request.save_images

    script_args = init_script_args(
        request,
        init_default_script_args(script_runner),
        selectable_scripts,
        selectable_idx,
        script_runner,
        input_script_args=infotext_script_args,
    )

    with (
        call_queue.queue_lock,
        closing(processing.StableDiffusionProcessingTxt2Img(sd_model=shared.sd_model, **args)) as p,
    ):
        p.is_api = True
        p.scripts = script_runner
        p.outpath_grids = opts.outdir_txt2img_grids
        p.outpath_samples = opts.outdir_txt2img_samples
        try:
            shared.state.begin(job="scripts_txt2img")
            if selectable_scripts is not None:
                p.script_args = script_args
                processed = scripts.scripts_txt2img.run(p, *p.script_args)
            else:
                p.script_args = tuple(script_args)
                processed = processing.process_images(p)
        finally:
            shared.state.end()
            shared.total_tqdm.clear()

    images = processed.images if request.send_images else []
    return {"images": images, "parameters": vars(request), "info": processed.js()}
