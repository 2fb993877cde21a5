"""One sampling call with PromptScope's features active: the part of host glue that does not depend on the host.

A host opens a `SamplingSession` around each sampling call (first pass, hires pass, img2img), tells it when each
denoiser step starts (`begin_step`) and hands it the step's outputs (`combine`). The session tracks which rows each
UNet call holds, lets features install hooks into one PatchSet, and restores that PatchSet when the call ends —
on success, on exception and on interrupt alike.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType

import torch

from .patches import PatchSet
from .seam import BatchLayout, DenoiseStep, Feature, JobInfo, PromptTokens, SamplingContext
from .unet_calls import UNetCallTracker

log = logging.getLogger("promptscope")


class SamplingSession:
    _open_sessions: weakref.WeakSet[SamplingSession] = weakref.WeakSet()

    @classmethod
    def open_sessions(cls) -> list[SamplingSession]:
        return list(cls._open_sessions)

    def __init__(
        self,
        features: Sequence[Feature],
        job: JobInfo,
        unet: torch.nn.Module,
        layout: BatchLayout,
        tokenize: Callable[[str], PromptTokens],
    ) -> None:
        self.features = list(features)
        self.tracker = UNetCallTracker()
        self.patches = PatchSet(f"sampling {job.pass_name}")
        self.ctx = SamplingContext(
            job=job,
            patches=self.patches,
            unet=unet,
            layout=layout,
            tokenize=tokenize,
            current_rows=self.tracker.current,
        )
        self.errors: list[str] = []
        self._open = False

    # -- lifetime -------------------------------------------------------------------------------------------
    def __enter__(self) -> SamplingSession:
        self._open = True
        SamplingSession._open_sessions.add(self)
        try:
            self._track(self.ctx.unet)
            for feature in self.features:
                feature.begin_sampling(self.ctx)
        except BaseException:
            self.close(ok=False)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(ok=exc_type is None)

    def close(self, ok: bool) -> None:
        if not self._open:
            return
        self._open = False
        SamplingSession._open_sessions.discard(self)
        self.patches.restore()
        self.tracker.reset()
        for feature in self.features:
            try:
                feature.end_sampling(self.ctx, ok)
            except Exception as exc:  # a feature's bookkeeping must not turn a finished image into an error
                log.exception("PromptScope: %s failed after sampling", feature.name)
                self.errors.append(f"{feature.name}: {exc}")

    def rebind_unet(self, unet: torch.nn.Module) -> None:
        """The host swapped models mid-call (SDXL refiner): follow the new UNet; features that bind to modules
        get `rebind(ctx)`. Hooks on the old UNet stay recorded and are removed with the rest."""
        if not self._open or unet is self.ctx.unet:
            return
        self.ctx.unet = unet
        self._track(unet)
        for feature in self.features:
            rebind = getattr(feature, "rebind", None)
            if rebind is not None:
                rebind(self.ctx)

    def _track(self, unet: torch.nn.Module) -> None:
        pre = unet.register_forward_pre_hook(self._unet_pre_hook)
        post = unet.register_forward_hook(self._unet_post_hook)
        self.patches.add_handle(pre, key=("unet-pre", id(unet)), what="UNet call tracker")
        self.patches.add_handle(post, key=("unet-post", id(unet)), what="UNet call tracker")

    # -- per step -------------------------------------------------------------------------------------------
    def begin_step(self, layout: BatchLayout, step: int) -> None:
        self.ctx.layout = layout
        self.tracker.begin_step(layout, step)

    def rows_run(self) -> int:
        """Rows the UNet ran this step so far (equals the layout's cond rows when the host skipped uncond)."""
        return self.tracker.rows_run

    def combine(self, step: DenoiseStep) -> torch.Tensor | None:
        """Offer the step to the features' step hooks; the first hook that returns a tensor decides.

        A hook that raises is dropped for the rest of this call with a message, and the host's own combination
        is used: a feature's bug must never cost the user the image."""
        for hook in list(self.ctx.step_hooks):
            try:
                out = hook(step)
            except Exception as exc:
                log.exception("PromptScope: a step hook failed")
                self.ctx.step_hooks.remove(hook)
                message = f"a feature failed during sampling and was switched off for this image: {exc}"
                if message not in self.ctx.messages:
                    self.ctx.messages.append(message)
                self.errors.append(message)
                continue
            if out is not None:
                return out
        return None

    # -- UNet hooks -----------------------------------------------------------------------------------------
    def _unet_pre_hook(self, _module: torch.nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor):
            self.tracker.begin_call(int(x.shape[0]))

    def _unet_post_hook(self, _module: torch.nn.Module, _args: tuple, _out: object) -> None:
        self.tracker.end_call()
