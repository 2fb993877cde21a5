"""Sampling glue for Forge Neo: a PromptScope session around each sampler call, through Forge's own patch points.

`process_before_every_sampling` (first pass, hires pass, img2img) wraps that pass's sampler INSTANCE, as the A1111
adapter does (`promptscope_a1111.sampling.prepare_sampling`); inside the session we clone
`p.sd_model.forge_objects.unet`, patch the clone and put it in place, and the session's PatchSet puts the original
back on every way out (Forge also resets `forge_objects` before every pass). Nothing global is patched.

What Neo does differently, and what we do about it:
- Neo compiles each `AND` sub-prompt into its own cond (one chunk of B rows, one row per image) and AVERAGES them
  by strength before any CFG hook. When a feature rewrote the prompts (semantic guidance flattens its keywords
  into plain `AND`s), a conditioning modifier keeps only the first sub-prompt for Neo and takes the others as
  concept rows of ours; the UNet function wrapper appends them to the SAME batched UNet call (one extra chunk of B
  rows per concept, cross-attention padded to a common length as Neo pads) and keeps their outputs.
- Neo pairs the sub-prompts of a batch's images by position and drops those past the shortest image's count
  (`zip`), with the last image's weight. When the images' counts differ we build the concept chunks ourselves from
  the step's conditioning (Neo's own `reconstruct_multicond_batch` and `compile_conditions`); an image with fewer
  sub-prompts fills its place in a chunk with its first sub-prompt, a filler row no feature reads.
- The combination: a post-CFG function builds the seam's `DenoiseStep` (A1111's row layout: sub-prompt rows of
  image 0, of image 1, ..., then one uncond row per image; x0 predictions) and offers it to the features. When
  one replaces the combination and the clone has a `sampler_cfg_function` (Neo's Rescale CFG), that function
  is applied to the guided result too, so both act. When no feature replaces it, Neo's result is returned as it
  is: with the features off, or on without changing the combination (heatmaps), the image is bit-identical.
- Rows of each UNet call come from `cond_or_uncond` (chunks of B rows; Neo puts the uncond chunk first).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from promptscope_lib_ext.seam import FILLER, BatchLayout, DenoiseStep, JobInfo, RowRole
from promptscope_lib_ext.session import SamplingSession

from promptscope_a1111.host import job_info
from promptscope_a1111.sampling import active_features, layout_of
from promptscope_a1111.sampling import prepare_sampling as _prepare_sampling

from .host import tokenizer_for, unet_patcher_of

log = logging.getLogger("promptscope")

COND, UNCOND = 0, 1


def prepare_sampling(p: Any) -> bool:
    """Call from `process_before_every_sampling`: the session opens when the sampler starts this pass."""
    return _prepare_sampling(p, run=run_with_session)


def run_with_session(p: Any, sampler: Any, conditioning: Any, call: Callable[[], Any]) -> Any:
    features = active_features(p)
    job = job_info(p)
    forge_objects = p.sd_model.forge_objects
    patcher = unet_patcher_of(p.sd_model)
    unet = patcher.model.diffusion_model
    layout = layout_of(conditioning)
    session = SamplingSession(features, job, unet, layout, tokenizer_for(p.sd_model))
    hooks = NeoHooks(session, job, layout, getattr(sampler, "model_wrap_cfg", None), conditioning)
    session.ctx.current_rows = hooks.current_rows
    try:
        with session:
            try:
                clone = patcher.clone()
                hooks.install(clone)
            except Exception as exc:  # a host we do not know: generate without us rather than fail
                log.exception("PromptScope: could not patch Forge's UNet")
                session.errors.append(f"PromptScope is off for this pass: could not patch Forge's UNet ({exc})")
            else:
                session.patches.set_attr(forge_objects, "unet", clone)
            return call()
    finally:
        for message in session.errors:
            if hasattr(p, "comment"):
                p.comment(f"PromptScope: {message}")


def close_open_sessions() -> None:
    """on_script_unloaded: nothing of ours may stay installed, even mid-call."""
    for session in SamplingSession.open_sessions():
        session.close(ok=False)


def _lcm_pad(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Cross-attention contexts of different lengths, repeated to their least common multiple (as Neo pads)."""
    length = 1
    for t in tensors:
        length = length * t.shape[1] // math.gcd(length, t.shape[1])
    return [t if t.shape[1] == length else t.repeat(1, length // t.shape[1], 1) for t in tensors]


class NeoHooks:
    """The patches of one sampling pass: conditioning modifier, UNet function wrapper, post-CFG function."""

    def __init__(
        self, session: SamplingSession, job: JobInfo, layout: BatchLayout, denoiser: Any, conditioning: Any = None
    ) -> None:
        self.session = session
        self.job = job
        self.layout = layout
        self.denoiser = denoiser
        self.conditioning = conditioning  # the pass's MulticondLearnedConditioning, for batches of mixed counts
        self.counts = [len(c) for c in layout.conds]
        self.n_leaves = max(self.counts, default=1)
        # Concept rows are ours only when a feature rewrote the prompts (semantic guidance); otherwise Neo's own
        # `AND` stays Neo's (averaged), and a feature sees one cond row per image.
        self.split = bool(job.host_prompts) and self.n_leaves > 1
        self.mixed = self.split and len(set(self.counts)) > 1
        self._rows: list[RowRole] | None = None
        self._concepts: list[dict[str, Any]] = []  # this step's compiled conds of sub-prompts 1.., for our rows
        self._concept_out: list[torch.Tensor] = []
        self._appended = False
        self._saw_uncond = False
        self._cond_chunks_seen = 0
        self._failed = False

    # -- installation ---------------------------------------------------------------------------------------
    def install(self, unet: Any) -> None:
        """Patch the clone (the clone is thrown away after the pass, so nothing on it needs undoing)."""
        unet.add_conditioning_modifier(self.modify_conditioning)
        self._previous_wrapper = unet.model_options.get("model_function_wrapper")
        unet.set_model_unet_function_wrapper(self.unet_wrapper)
        unet.set_model_sampler_post_cfg_function(self.post_cfg)

    def current_rows(self) -> list[RowRole] | None:
        return self._rows

    def _message(self, message: str) -> None:
        if message not in self.session.ctx.messages:
            self.session.ctx.messages.append(message)
        if message not in self.session.errors:
            self.session.errors.append(message)

    # -- per step -------------------------------------------------------------------------------------------
    def modify_conditioning(self, model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        """First thing Neo does at each step: a new step begins; keep sub-prompt 0 for Neo, take the others."""
        self._concepts, self._concept_out = [], []
        self._appended = self._saw_uncond = False
        self._cond_chunks_seen = 0
        self.session.begin_step(self.layout, self._step())
        if not self.split or self._failed:
            return model, x, timestep, uncond, cond, cond_scale, model_options, seed
        if self.mixed:
            concepts = self._concepts_of_mixed_batch(cond)
        elif len(cond) == self.n_leaves:
            concepts = list(cond[1:])
        else:
            concepts = None
            self._message(f"semantic guidance skipped a step: Forge gave {len(cond)} conds for {self.n_leaves} rows")
        if concepts:
            first = dict(cond[0])
            first["strength"] = 1.0  # Neo's cond prediction is then exactly sub-prompt 0's output
            self._concepts = concepts
            cond = [first]
        return model, x, timestep, uncond, cond, cond_scale, model_options, seed

    def _concepts_of_mixed_batch(self, cond: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Sub-prompts 1.. of every image as compiled conds of B rows each (Neo's `zip` drops those past the
        shortest image); an image without sub-prompt j repeats its sub-prompt 0 there (a filler row)."""
        try:
            from backend.sampling.condition import compile_conditions
            from modules.prompt_parser import reconstruct_multicond_batch

            conds_list, stacked = reconstruct_multicond_batch(self.conditioning, self._step())

            def compiled(indices: list[int]) -> dict[str, Any]:
                if isinstance(stacked, dict):  # SDXL: {crossattn, vector}, as Neo's `advanced_indexing` picks
                    return compile_conditions({k: v[indices] for k, v in stacked.items() if torch.is_tensor(v)})[0]
                return compile_conditions(stacked[indices])[0]

            if [len(c) for c in conds_list] != self.counts:
                raise ValueError(f"the step's sub-prompt counts {[len(c) for c in conds_list]} are not the pass's")
            mine = compiled([c[0][0] for c in conds_list])
            if not torch.equal(mine["cross_attn"].to(cond[0]["cross_attn"]), cond[0]["cross_attn"]):
                raise ValueError("Forge's conditioning is not the pass's (a refiner switch?)")
            concepts = []
            for j in range(1, self.n_leaves):
                entry = compiled([c[j][0] if j < len(c) else c[0][0] for c in conds_list])
                concepts.append({**cond[0], **entry, "model_conds": {**cond[0]["model_conds"], **entry["model_conds"]}})
            return concepts
        except Exception as exc:  # our rows must never cost the user the image
            log.exception("PromptScope: could not build the concept rows of a batch with mixed sub-prompt counts")
            self._fail(
                f"semantic guidance is off for this batch: its images have {self.counts} sub-prompts and the concept "
                f"rows could not be built ({exc})"
            )
            return None

    def _step(self) -> int:
        return int(getattr(self.denoiser, "step", 0) or 0)

    def _roles(self, cond_or_uncond: list[int], per_chunk: int, extra: int) -> list[RowRole]:
        roles: list[RowRole] = []
        for kind in cond_or_uncond:
            if kind == UNCOND:
                roles += [RowRole(i, -1, True) for i in range(per_chunk)]
                continue
            if self.split:
                sub = 0
            else:  # Neo runs its conds last to first
                sub = max(0, self.n_leaves - 1 - self._cond_chunks_seen)
            self._cond_chunks_seen += 1
            roles += [RowRole(i, sub, False) for i in range(per_chunk)]
        for j in range(1, extra + 1):
            roles += [RowRole(i, j if j < self._count(i) else FILLER, False) for i in range(per_chunk)]
        return roles

    def _count(self, image: int) -> int:
        return self.counts[image] if image < len(self.counts) else self.n_leaves

    def unet_wrapper(self, apply_model: Callable[..., torch.Tensor], args: dict[str, Any]) -> torch.Tensor:
        inner = self._previous_wrapper
        cond_or_uncond = list(args["cond_or_uncond"])
        x = args["input"]
        per_chunk = x.shape[0] // max(1, len(cond_or_uncond))
        if UNCOND in cond_or_uncond:
            self._saw_uncond = True
        extra_args = None
        if self._concepts and not self._appended and COND in cond_or_uncond:
            self._appended = True
            extra_args = self._with_concepts(args, per_chunk)
        run_args = extra_args or args
        self._rows = self._roles(cond_or_uncond, per_chunk, len(self._concepts) if extra_args else 0)
        try:
            if inner is not None:
                out = inner(apply_model, run_args)
            else:
                out = apply_model(run_args["input"], run_args["timestep"], **run_args["c"])
        finally:
            self._rows = None
        if extra_args is not None:
            n = x.shape[0]
            self._concept_out = list(out[n:].split(per_chunk))
            out = out[:n]
        return out

    def _with_concepts(self, args: dict[str, Any], per_chunk: int) -> dict[str, Any] | None:
        """The call's arguments with one chunk of `per_chunk` rows per concept appended; None if impossible."""
        x, c = args["input"], args["c"]
        n, extra = x.shape[0], len(self._concepts)
        if c.get("control") is not None:
            self._fail("semantic guidance is off for this image: a ControlNet is active on this pass")
            return None
        area = (x.shape[2], x.shape[3], 0, 0)
        new_c: dict[str, Any] = {}
        try:
            for key, value in c.items():
                if key == "transformer_options":
                    new_c[key] = self._transformer_options(value, args["cond_or_uncond"], extra)
                elif isinstance(value, torch.Tensor) and value.shape[0] == n:
                    ours = [
                        e["model_conds"][key].process_cond(batch_size=per_chunk, device=value.device, area=area).cond
                        for e in self._concepts
                    ]
                    parts = [value, *ours]
                    if key == "c_crossattn":
                        parts = _lcm_pad(parts)
                    new_c[key] = torch.cat([t.to(value.dtype) for t in parts])
                else:
                    new_c[key] = value
        except Exception as exc:  # our rows must never cost the user the image
            self._fail(f"semantic guidance is off for this image: cannot batch its concepts with Forge's rows ({exc})")
            return None
        timestep = args["timestep"]
        return {
            "input": torch.cat([x, x[:per_chunk].repeat(extra, *([1] * (x.dim() - 1)))]),
            "timestep": torch.cat([timestep, timestep[:per_chunk].repeat(extra)]),
            "c": new_c,
            "cond_or_uncond": list(args["cond_or_uncond"]) + [COND] * extra,
        }

    @staticmethod
    def _transformer_options(options: dict[str, Any], cond_or_uncond: list[int], extra: int) -> dict[str, Any]:
        out = dict(options)
        kinds = list(cond_or_uncond) + [COND] * extra
        out["cond_or_uncond"] = kinds
        sigmas = out.get("sigmas")
        if isinstance(sigmas, torch.Tensor):
            per = int(sigmas.shape[0])
            out["cond_mark"] = torch.tensor([k for k in kinds for _ in range(per)]).to(sigmas)
            cond_idx = [i * per + r for i, k in enumerate(kinds) if k == COND for r in range(per)]
            uncond_idx = [i * per + r for i, k in enumerate(kinds) if k != COND for r in range(per)]
            out["cond_indices"], out["uncond_indices"] = cond_idx, uncond_idx
        return out

    def _fail(self, message: str) -> None:
        self._failed = True
        self._concepts = []
        self._message(message)

    def post_cfg(self, args: dict[str, Any]) -> torch.Tensor:
        """After Neo's CFG (and any cfg function): offer the step to the features; keep Neo's result if none
        replaces the combination."""
        denoised = args["denoised"]
        if not self.session.ctx.step_hooks:
            return denoised
        try:
            return self._post_cfg(args, denoised)
        except Exception as exc:  # a feature's failure must not cost the user the image
            log.exception("PromptScope: the post-CFG step failed")
            self._fail(f"PromptScope left this step to Forge: {type(exc).__name__}: {exc}")
            return denoised

    def _post_cfg(self, args: dict[str, Any], denoised: torch.Tensor) -> torch.Tensor:
        x, sigma = args["input"], args["sigma"]
        cond_den, uncond_den = args["cond_denoised"], args["uncond_denoised"]
        cond_scale = float(args["cond_scale"])
        n_images = x.shape[0]
        if self.split and not self._failed:
            leaves = [cond_den, *self._concept_out]
            if len(leaves) != self.n_leaves:
                self._message("semantic guidance skipped a step: Forge did not run the concept rows")
                return denoised
            layout = self.layout
        else:
            leaves = [cond_den]
            layout = BatchLayout.from_weights([[1.0]] * n_images)
        skipped = not self._saw_uncond
        uncond_rows = cond_den if skipped else uncond_den  # as A1111 does when it skips uncond (NGMS, CFG 1)
        rows, x_rows = [], []
        for i, conds in enumerate(layout.conds):
            for j in range(len(conds)):
                rows.append(leaves[j][i])
                x_rows.append(x[i])
        x_out = torch.cat([torch.stack(rows), uncond_rows])
        x_in = torch.cat([torch.stack(x_rows), x])
        step = DenoiseStep(
            x_in=x_in,
            x_out=x_out,
            sigma=sigma,
            layout=layout,
            cond_scale=1.0 if skipped else cond_scale,
            step=self._step(),
            total_steps=int(getattr(self.denoiser, "total_steps", 0) or self.job.steps),
            prediction="x0",
            pass_name=self.job.pass_name,
            uncond_skipped=skipped,
            job=self.job,
        )
        out = self.session.combine(step)
        if out is None:
            # Neo's average of the sub-prompt it saw is not the host's AND: combine all rows as A1111 does
            return step.default_combine() if self.split and not self._failed else denoised
        cfg_function = (args.get("model_options") or {}).get("sampler_cfg_function")
        if cfg_function is not None and not skipped and cond_scale != 0:
            # Another CFG function (Neo's Rescale CFG) acts on the guided result: give it the cond prediction
            # whose plain CFG is our combination.
            guided_cond = uncond_den + (out - uncond_den) / cond_scale
            cfg_args = {
                "cond": x - guided_cond,
                "uncond": x - uncond_den,
                "cond_scale": cond_scale,
                "timestep": sigma,
                "input": x,
                "sigma": sigma,
                "cond_denoised": guided_cond,
                "uncond_denoised": uncond_den,
                "model": args.get("model"),
                "model_options": args.get("model_options"),
            }
            return x - cfg_function(cfg_args)
        return out
