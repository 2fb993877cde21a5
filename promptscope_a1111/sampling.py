"""Sampling glue for A1111 v1.10.1: a PromptScope session around each sampler call, and nothing outside it.

Scripts call `prepare_sampling(p)` from `process_before_every_sampling`, which A1111 calls right before
`p.sampler.sample(...)` (txt2img, img2img) and before `sample_img2img(...)` of the hires pass. We wrap those two
methods on that sampler INSTANCE only. The wrapper removes itself, opens a `SamplingSession` and, inside it, wraps
the sampler's CFG denoiser instance (`forward` to learn each step's layout, `combine_denoised` to let features
replace the combination). The session restores all of it in a `finally`, so a raise inside sampling (where A1111
skips `postprocess`), an interrupt (caught inside the sampler) and success all leave the host as it was.
No class, module function or host global is ever patched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from promptscope_lib_ext.seam import BatchLayout, DenoiseStep, Feature, JobInfo, sampler_step_of
from promptscope_lib_ext.session import SamplingSession

from .host import job_info, tokenizer_for, unet_of
from .webui_bits import record_message

log = logging.getLogger("promptscope")

FEATURES_ATTR = "promptscope_features"  # on p: the features active for this job (a copy of p shares it)
WRAPPED_ATTR = "_promptscope_wrapped"


def activate(p: Any, feature: Feature) -> None:
    """Make `feature` active for the job `p` (call from a script's `process`)."""
    features = p.__dict__.setdefault(FEATURES_ATTR, [])
    if all(f is not feature for f in features):
        features.append(feature)


def active_features(p: Any) -> list[Feature]:
    return list(getattr(p, FEATURES_ATTR, None) or [])


def layout_of(conditioning: Any) -> BatchLayout:
    """Row layout of A1111's `reconstruct_multicond_batch`: sub-prompts of image 0, image 1, ..., numbered."""
    batch = getattr(conditioning, "batch", None)
    if batch is None:  # not a MulticondLearnedConditioning (another extension's sampler): one row per image
        n = int(getattr(conditioning, "shape", [1])[0])
        return BatchLayout.from_weights([[1.0]] * n)
    return BatchLayout.from_weights([[float(c.weight) for c in conds] for conds in batch])


def is_timestep_denoiser(denoiser: Any) -> bool:
    return any(cls.__name__ == "CFGDenoiserTimesteps" for cls in type(denoiser).__mro__)


def prepare_sampling(p: Any, run: Callable[..., Any] | None = None) -> bool:
    """Wrap `p.sampler`'s sampling entry points for this call. Idempotent; returns True if a wrap is in place.

    `run(p, sampler, conditioning, call)` puts the session around the call (default: `run_with_session`, which
    wraps A1111's CFG denoiser; the Forge adapter passes its own)."""
    run = run or run_with_session
    features = active_features(p)
    sampler = getattr(p, "sampler", None)
    if not features or sampler is None:
        return False
    if sampler.__dict__.get(WRAPPED_ATTR):
        return True
    originals: dict[str, Callable[..., Any]] = {}

    def unwrap() -> None:
        for name in originals:
            sampler.__dict__.pop(name, None)
        sampler.__dict__.pop(WRAPPED_ATTR, None)

    for name, cond_pos in (("sample", 2), ("sample_img2img", 3)):
        if not hasattr(sampler, name):
            continue
        originals[name] = getattr(sampler, name)

        def wrapper(*args: Any, _name: str = name, _pos: int = cond_pos, **kwargs: Any) -> Any:
            unwrap()
            conditioning = kwargs.get("conditioning", args[_pos] if len(args) > _pos else None)
            return run(p, sampler, conditioning, lambda: originals[_name](*args, **kwargs))

        setattr(sampler, name, wrapper)
    sampler.__dict__[WRAPPED_ATTR] = True
    return True


def run_with_session(p: Any, sampler: Any, conditioning: Any, call: Callable[[], Any]) -> Any:
    features = active_features(p)
    job: JobInfo = job_info(p)
    denoiser = sampler.model_wrap_cfg
    session = SamplingSession(features, job, unet_of(p.sd_model), layout_of(conditioning), tokenizer_for(p.sd_model))
    try:
        with session:
            _wrap_denoiser(session, denoiser, job)
            return call()
    finally:
        for message in session.errors:  # under the image (generation-info comments) and in the infotext (API)
            if hasattr(p, "comment"):
                p.comment(f"PromptScope: {message}")
            record_message(getattr(p, "extra_generation_params", None), message)


def _wrap_denoiser(session: SamplingSession, denoiser: Any, job: JobInfo) -> None:
    current: dict[str, torch.Tensor] = {}
    prediction = "eps" if is_timestep_denoiser(denoiser) else "x0"

    def make_forward(original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):  # v1.10.1 signature
            session.begin_step(layout_of(cond), int(getattr(denoiser, "step", 0)))
            current["x"], current["sigma"] = x, sigma
            return original(x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond)

        return forward

    def make_combine(original: Callable[..., Any]) -> Callable[..., Any]:
        def combine_denoised(x_out, conds_list, uncond, cond_scale):
            if not session.ctx.step_hooks or "x" not in current:
                return original(x_out, conds_list, uncond, cond_scale)
            layout = BatchLayout.from_conds_list(conds_list)
            x, sigma = current["x"], current["sigma"]
            roles = layout.roles()
            x_in = x[[r.image for r in roles]] if len(roles) == x_out.shape[0] else x_out
            step = DenoiseStep(
                x_in=x_in,
                x_out=x_out,
                sigma=sigma,
                layout=layout,
                cond_scale=float(cond_scale),
                step=int(getattr(denoiser, "step", 0)),
                total_steps=int(getattr(denoiser, "total_steps", 0) or job.steps),
                prediction=prediction,
                pass_name=job.pass_name,
                uncond_skipped=session.rows_run() <= layout.n_cond_rows,
                job=job,
                **sampler_steps(denoiser),
            )
            out = session.combine(step)
            return original(x_out, conds_list, uncond, cond_scale) if out is None else out

        return combine_denoised

    session.patches.wrap_method(denoiser, "forward", make_forward)
    session.patches.wrap_method(denoiser, "combine_denoised", make_combine)


def sampler_steps(denoiser: Any) -> dict[str, int]:
    """The sampler step of the current model call, from A1111's counters: `denoiser.step` counts model calls,
    `denoiser.steps` the sampler's steps (`launch_sampling`) and `denoiser.total_steps` the expected calls
    (`SamplerData.total_steps`: 2 × steps for second-order samplers). {} when the counters are missing."""
    try:
        call, steps, total = int(denoiser.step), int(denoiser.steps), int(denoiser.total_steps)
    except (AttributeError, TypeError, ValueError):
        return {}
    return sampler_step_of(call, steps, total)


def rebind_open_sessions(sd_model: Any) -> None:
    """on_model_loaded: sessions still sampling (the SDXL refiner swaps models mid-call) follow the new UNet."""
    unet = unet_of(sd_model)
    if unet is None:
        return
    for session in SamplingSession.open_sessions():
        session.rebind_unet(unet)


def close_open_sessions() -> None:
    """on_script_unloaded: nothing of ours may stay installed, even mid-call."""
    for session in SamplingSession.open_sessions():
        session.close(ok=False)
