"""Guidance state that lives for one sampling pass: SEGA momentum per (image, concept) and one-time warnings.

Create one `GuidanceState` per job and pass (first pass, hires pass); never share it between generations. It also
resets itself when the step counter goes backwards (a new pass reusing the object) or a tensor changes shape.
"""

from __future__ import annotations

import torch

MomentumKey = tuple[int, tuple[int, ...], int]  # (image index in the batch, path of the group, child index)


class GuidanceState:
    """Momentum is updated once per sampler step: a second model call of the same step (Heun, DPM2, ...) reads the
    momentum the step started with, and its own update is dropped (the step's first call, at the step's σ as with a
    one-call sampler, sets it), so ν follows the sampler's steps as in SEGA, not the model calls."""

    def __init__(self) -> None:
        self.momentum: dict[MomentumKey, torch.Tensor] = {}
        self.started: dict[MomentumKey, torch.Tensor | None] = {}  # ν when this step began, for its later calls
        self.updated_at: dict[MomentumKey, int] = {}
        self.last_step: int | None = None
        self.messages: list[str] = []

    def begin_step(self, step: int) -> None:
        if self.last_step is not None and step < self.last_step:
            self.momentum.clear()
            self.started.clear()
            self.updated_at.clear()
        self.last_step = step

    def get_momentum(self, key: MomentumKey, like: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """ν for a call of sampler step `step` (None: every call is a step of its own)."""
        if step is not None and self.updated_at.get(key) == step:
            nu = self.started.get(key)
        else:
            nu = self.momentum.get(key)
        if nu is None or nu.shape != like.shape or nu.device != like.device:
            return torch.zeros_like(like)
        return nu.to(like.dtype)

    def set_momentum(self, key: MomentumKey, value: torch.Tensor, step: int | None = None) -> None:
        if step is not None and self.updated_at.get(key) == step:
            return  # a later call of the same sampler step
        self.started[key] = self.momentum.get(key)
        self.momentum[key] = value.detach()
        if step is not None:
            self.updated_at[key] = step

    def warn(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)
