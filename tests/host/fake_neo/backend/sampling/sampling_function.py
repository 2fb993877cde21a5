"""Neo's CFG path (test double; names and call order of backend/sampling/sampling_function.py)."""

import math

import torch

from backend.sampling.condition import compile_conditions, compile_weighted_conditions

UNET_CALLS = []  # (cond_or_uncond, rows) of every UNet call (KModel.apply_model appends), for tests


def _conditioning(entry, x_in):
    return {k: c.process_cond(batch_size=x_in.shape[0], device=x_in.device) for k, c in entry["model_conds"].items()}


def calc_cond_uncond_batch(model, cond, uncond, x_in, timestep, model_options):
    out_cond = torch.zeros_like(x_in)
    out_count = torch.ones_like(x_in) * 1e-37
    out_uncond = torch.zeros_like(x_in)
    out_uncond_count = torch.ones_like(x_in) * 1e-37
    to_run = [(entry, 0) for entry in cond] + [(entry, 1) for entry in (uncond or [])]
    to_run = [(e, k, _conditioning(e, x_in)) for e, k in to_run]
    # Neo: everything that concatenates goes into one call, last first (the uncond chunk leads)
    batch = list(reversed(to_run))
    cond_or_uncond = [k for _e, k, _c in batch]
    keys = batch[0][2].keys()
    c = {k: batch[0][2][k].concat([b[2][k] for b in batch[1:]]) for k in keys}
    input_x = torch.cat([x_in] * len(batch))
    timestep_ = torch.cat([timestep] * len(batch))
    transformer_options = dict(model_options.get("transformer_options", {}))
    transformer_options["cond_or_uncond"] = cond_or_uncond[:]
    transformer_options["sigmas"] = timestep
    c["transformer_options"] = transformer_options
    if "model_function_wrapper" in model_options:
        args = {"input": input_x, "timestep": timestep_, "c": c, "cond_or_uncond": cond_or_uncond}
        output = model_options["model_function_wrapper"](model.apply_model, args)
    else:
        output = model.apply_model(input_x, timestep_, **c)
    output = output.chunk(len(batch))
    for o, (entry, kind, _c) in enumerate(batch):
        mult = torch.ones_like(x_in) * entry.get("strength", 1.0)
        if kind == 0:
            out_cond += output[o] * mult
            out_count += mult
        else:
            out_uncond += output[o] * mult
            out_uncond_count += mult
    return out_cond / out_count, out_uncond / out_uncond_count


def sampling_function_inner(
    model, x, timestep, uncond, cond, cond_scale, model_options=None, seed=None, return_full=False
):
    model_options = model_options or {}
    edit_strength = sum(item.get("strength", 1) for item in cond)
    if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False):
        uncond_ = None
    else:
        uncond_ = uncond
    for fn in model_options.get("sampler_pre_cfg_function", []):
        model, cond, uncond_, x, timestep, model_options = fn(model, cond, uncond_, x, timestep, model_options)
    cond_pred, uncond_pred = calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options)
    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": timestep,
                "input": x, "sigma": timestep, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                "model": model, "model_options": model_options}  # fmt: skip
        cfg_result = x - model_options["sampler_cfg_function"](args)
    elif not math.isclose(edit_strength, 1.0):
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale * edit_strength
    else:
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": cfg_result, "cond": cond, "uncond": uncond, "cond_scale": cond_scale, "model": model,
                "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": timestep,
                "model_options": model_options, "input": x}  # fmt: skip
        cfg_result = fn(args)
    if return_full:
        return cfg_result, cond_pred, uncond_pred
    return cfg_result


def sampling_function(self, denoiser_params, cond_scale, cond_composition, extra_model_options=None):
    unet_patcher = self.inner_model.inner_model.forge_objects.unet
    model = unet_patcher.model
    x = denoiser_params.x
    timestep = denoiser_params.sigma
    uncond = compile_conditions(denoiser_params.text_uncond)
    cond = compile_weighted_conditions(denoiser_params.text_cond, cond_composition)
    model_options = {**unet_patcher.model_options, **(extra_model_options or {})}
    seed = self.p.seeds[0]
    for modifier in model_options.get("conditioning_modifiers", []):
        model, x, timestep, uncond, cond, cond_scale, model_options, seed = modifier(
            model, x, timestep, uncond, cond, cond_scale, model_options, seed
        )
    return sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options, seed, return_full=True)
