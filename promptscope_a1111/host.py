"""The A1111 side of the host seam: prompts, tokens, UNet, results and generation jobs, read from v1.10.1."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from promptscope_lib_ext.heatmaps.tokens import prompt_tokens_from_clip
from promptscope_lib_ext.seam import (
    TAGGED_PROMPTS_KEY,
    GenerationRequest,
    GenerationResult,
    JobInfo,
    Progress,
    PromptTokens,
)

log = logging.getLogger("promptscope")


def unet_of(sd_model: Any) -> torch.nn.Module | None:
    """SD1/SD2 (`ldm`) and SDXL (`sgm`) both keep the UNet at `model.diffusion_model`."""
    return getattr(getattr(sd_model, "model", None), "diffusion_model", None)


def model_kind(sd_model: Any) -> str:
    if getattr(sd_model, "is_sdxl", False):
        return "sdxl"
    if getattr(sd_model, "is_sd2", False):
        return "sd2"
    return "sd1"


ORIGINAL_PROMPTS_ATTR = "promptscope_prompts"  # on p: the user's prompts of this batch when a feature rewrote them
ORIGINAL_HR_PROMPTS_ATTR = "promptscope_hr_prompts"


def tagged_batch_prompts(p: Any, hires: bool = False) -> list[str] | None:
    """This batch's prompts as the user typed them: A1111 strips every `<name:…>` tag (extra networks) from
    `p.prompts` / `p.hr_prompts` before scripts see the batch, but keeps them in `p.all_prompts` /
    `p.all_hr_prompts` (our `<sega:…>` settings live in such tags). None when the slice does not line up."""
    everything = getattr(p, "all_hr_prompts" if hires else "all_prompts", None)
    current = getattr(p, "hr_prompts" if hires else "prompts", None)
    size = int(getattr(p, "batch_size", 0) or 0)
    if not everything or not current or size <= 0:
        return None
    n = int(getattr(p, "iteration", 0) or 0)
    chunk = [str(x) for x in everything[n * size : (n + 1) * size]]
    return chunk if len(chunk) == len(current) else None


def rewrite_batch_prompts(p: Any, rewrite: Callable[[list[str], list[str] | None], list[str]]) -> None:
    """Replace the prompts A1111 computes this batch's cond rows from (call from `process_batch`, which runs after
    extra networks are parsed and before `setup_conds`). `rewrite(prompts, tagged)` gets the batch's prompts and
    the same prompts with their extra-network tags (`tagged_batch_prompts`). Infotext keeps the user's prompts
    (`p.all_prompts`), and features still see them through `job_info`. Both passes of hires fix are rewritten."""
    for current_attr, saved_attr, hires in (
        ("prompts", ORIGINAL_PROMPTS_ATTR, False),
        ("hr_prompts", ORIGINAL_HR_PROMPTS_ATTR, True),
    ):
        current = getattr(p, current_attr, None)
        p.__dict__.pop(saved_attr, None)  # each batch starts from the host's own prompts
        if not current:
            continue
        originals = [str(x) for x in current]
        rewritten = list(rewrite(originals, tagged_batch_prompts(p, hires)))
        if rewritten != originals:
            p.__dict__[saved_attr] = originals
            setattr(p, current_attr, rewritten)


def job_info(p: Any) -> JobInfo:
    hires = bool(getattr(p, "is_hr_pass", False))
    current = (getattr(p, "hr_prompts", None) if hires else None) or list(getattr(p, "prompts", None) or [])
    originals = p.__dict__.get(ORIGINAL_HR_PROMPTS_ATTR if hires else ORIGINAL_PROMPTS_ATTR)
    negatives = (getattr(p, "hr_negative_prompts", None) if hires else None) or list(
        getattr(p, "negative_prompts", None) or []
    )
    width = getattr(p, "hr_upscale_to_x", 0) if hires else getattr(p, "width", 0)
    height = getattr(p, "hr_upscale_to_y", 0) if hires else getattr(p, "height", 0)
    steps = (getattr(p, "hr_second_pass_steps", 0) or getattr(p, "steps", 0)) if hires else getattr(p, "steps", 0)
    return JobInfo(
        prompts=[str(x) for x in (originals if originals is not None else current)],
        negative_prompts=[str(x) for x in negatives],
        seeds=[int(s) for s in (getattr(p, "seeds", None) or [])],
        pass_name="hires" if hires else "first",
        width=int(width or 0),
        height=int(height or 0),
        steps=int(steps or 0),
        is_img2img=hasattr(p, "init_images") and not hires,
        model_kind=model_kind(getattr(p, "sd_model", None)),
        extra=_job_extra(p, hires),
        host_prompts=[str(x) for x in current] if originals is not None else [],
    )


def _job_extra(p: Any, hires: bool) -> dict[str, Any]:
    extra: dict[str, Any] = {"iteration": getattr(p, "iteration", 0)}
    tagged = tagged_batch_prompts(p, hires)
    if tagged is not None:
        extra[TAGGED_PROMPTS_KEY] = tagged
    return extra


# -- tokens -------------------------------------------------------------------------------------------------


def text_model_of(sd_model: Any) -> Any | None:
    """The hijacked text encoder that chunks prompts (`tokenize_line`); for SDXL the CLIP-L embedder, whose
    chunking the OpenCLIP-G embedder shares, so token positions are the same for both."""
    cond = getattr(sd_model, "cond_stage_model", None)
    if cond is not None and hasattr(cond, "tokenize_line"):
        return cond
    for embedder in getattr(getattr(sd_model, "conditioner", None), "embedders", []) or []:
        if hasattr(embedder, "tokenize_line"):
            return embedder
    return None


def _token_text(text_model: Any, token_id: int) -> str:
    tok = getattr(text_model, "tokenizer", None)
    if tok is not None and hasattr(tok, "convert_ids_to_tokens"):
        return str(tok.convert_ids_to_tokens([int(token_id)])[0])
    decoder = getattr(tok, "decoder", None)
    if isinstance(decoder, dict):
        return str(decoder.get(int(token_id), ""))
    return str(token_id)


def tokenize_with(text_model: Any, prompt: str) -> PromptTokens:
    """Chunks exactly as the host encodes `prompt`: A1111's `tokenize_line` (75 + start/end, BREAK, emphasis,
    textual-inversion embeddings), each token tied to a word by CLIP's end-of-word marker and a word's text decoded
    from the bytes of all its tokens together (a Japanese word's byte-level tokens are parts of characters)."""
    chunks, _count = text_model.tokenize_line(prompt)
    id_end = getattr(text_model, "id_end", None)
    token_chunks: list[list[tuple[str | None, float]]] = []
    embeddings: list[list[tuple[int, str, int]]] = []
    body: list[Any] = []
    for chunk in chunks:
        body = list(chunk.tokens[1:-1])
        mults = [float(m) for m in chunk.multipliers[1:-1]]
        token_chunks.append(
            [(None if token == id_end else _token_text(text_model, token), m) for token, m in zip(body, mults)]
        )
        embeddings.append([
            (int(f.offset), str(getattr(f.embedding, "name", "embedding")), int(getattr(f.embedding, "vectors", 1)))
            for f in getattr(chunk, "fixes", [])
        ])  # fmt: skip
    tokens = prompt_tokens_from_clip(token_chunks, embeddings, prompt)
    return dataclasses.replace(tokens, chunk_length=len(body) or 75)


def tokenizer_for(sd_model: Any) -> Callable[[str], PromptTokens]:
    def tokenize(prompt: str) -> PromptTokens:
        text_model = text_model_of(sd_model)
        if text_model is None:
            raise RuntimeError("PromptScope: this model's text encoder does not expose tokenize_line()")
        return tokenize_with(text_model, prompt)

    return tokenize


# -- results ------------------------------------------------------------------------------------------------


def add_infotext(p: Any, key: str, value: Any) -> None:
    """Write `key: value` into every image's infotext (A1111 quotes values with commas or colons itself)."""
    p.extra_generation_params[key] = value


def attach_images(processed: Any, images: Sequence[Any], infotexts: Sequence[str] | None = None) -> None:
    """Show extra images after the generation's own in the gallery (and the API's response)."""
    texts = (
        list(infotexts)
        if infotexts is not None
        else [processed.infotexts[0] if processed.infotexts else ""] * len(images)
    )
    processed.images.extend(images)
    processed.infotexts.extend(texts)


# -- jobs (for tabs) ----------------------------------------------------------------------------------------

_SETTING_KEYS = (
    "steps",
    "cfg_scale",
    "sampler_name",
    "scheduler",
    "width",
    "height",
    "batch_size",
    "denoising_strength",
)


def run_jobs(requests: Sequence[GenerationRequest], progress: Progress | None = None) -> list[GenerationResult]:
    """Generate each request through A1111's own txt2img pipeline (scripts, infotext) in order. The images are
    returned, not saved to the WebUI's outputs: the caller keeps them where it needs them (the bandit's folder),
    so a day of 1,500 rated images is not stored twice.

    Call it from a handler wrapped by `modules.call_queue.wrap_gradio_gpu_call`, which holds the queue lock
    and the progress state; stops early when the user presses Interrupt.
    """
    from modules import processing, scripts, shared

    results: list[GenerationResult] = []
    total = len(requests)
    shared.state.job_count = total
    for done, req in enumerate(requests):
        if shared.state.interrupted or getattr(shared.state, "stopping_generation", False):
            break
        if progress is not None:
            progress(done, total, f"Generating {done + 1}/{total}")
        shared.state.job = f"PromptScope {done + 1}/{total}"
        kwargs = {k: v for k, v in req.settings.items() if k in _SETTING_KEYS}
        kwargs.setdefault("scheduler", "Automatic")  # v1.10's default; None makes A1111 warn on every job
        p = processing.StableDiffusionProcessingTxt2Img(
            sd_model=shared.sd_model,
            outpath_samples=shared.opts.outdir_samples or shared.opts.outdir_txt2img_samples,
            outpath_grids=shared.opts.outdir_grids or shared.opts.outdir_txt2img_grids,
            prompt=req.prompt,
            negative_prompt=req.negative_prompt,
            seed=int(req.seed),
            n_iter=1,
            **kwargs,
        )
        p.is_api = True  # A1111 v1.10: its built-in Sampler and Seed scripts then keep the job's steps, sampler, seed
        p.do_not_save_samples = p.do_not_save_grid = True
        p.scripts = scripts.scripts_txt2img
        p.script_args = _default_alwayson_args(scripts.scripts_txt2img, req.settings.get(SCRIPT_ARGS_KEY))
        p.extra_generation_params.update(req.infotext)
        with contextlib.closing(p):
            processed = processing.process_images(p)
        # images: [grid if one was made] + the generated images + what scripts attached in `postprocess` (word-
        # heatmap grids): the first generated image is the result, the attached ones ride along.
        first = int(getattr(processed, "index_of_first_image", 0) or 0)
        if len(processed.images) > first:
            infotexts = list(processed.infotexts or [])
            infotexts += [""] * (len(processed.images) - len(infotexts))
            n_generated = max(1, min(len(processed.images) - first, int(getattr(p, "batch_size", 1) or 1)))
            end = first + n_generated
            results.append(
                GenerationResult(
                    request=req,
                    image=processed.images[first],
                    seed=int(processed.all_seeds[0] if processed.all_seeds else req.seed),
                    infotext=infotexts[first] or processed.info,
                    extra_images=list(processed.images[end:]),
                    extra_infotexts=infotexts[end : len(processed.images)],
                )
            )
    if progress is not None:
        progress(len(results), total, "Done")
    return results


SCRIPT_ARGS_KEY = "script_args"  # GenerationRequest.settings: {always-on script title: its args (list, or a dict)}


def _default_alwayson_args(runner: Any, given: dict[str, Any] | None = None) -> list[Any]:
    """Every always-on script's UI defaults, as the API fills them (`init_default_script_args`); `given` replaces
    a script's defaults by title as the API's `alwayson_scripts` does (a dict is passed as its first argument)."""
    size = max([getattr(s, "args_to", 0) or 0 for s in getattr(runner, "scripts", [])] + [1])
    args: list[Any] = [None] * size
    for script in getattr(runner, "alwayson_scripts", []):
        defaults = getattr(script, "promptscope_defaults", None)
        values = (
            defaults()
            if callable(defaults)
            else [getattr(c, "value", None) for c in getattr(script, "controls", None) or []]
        )
        override = (given or {}).get(script.title()) if hasattr(script, "title") else None
        if isinstance(override, dict):
            values = [override, *[None] * (len(values) - 1)]
        elif isinstance(override, list | tuple):
            values = [*override, *values[len(override) :]]
        for offset, value in enumerate(values):
            if script.args_from + offset < script.args_to:
                args[script.args_from + offset] = value
    args[0] = 0  # no selectable script
    return args
