"""Guidance state that lives for one sampling pass: SEGA momentum per (image, concept) and one-time warnings.

Create one `GuidanceState` per job and pass (first pass, hires pass); never share it between generations. It also
resets itself when the step counter goes backwards (a new pass reusing the object) or a tensor changes shape.
"""

from __future__ import annotations

import torch

MomentumKey = tuple[int, tuple[int, ...], int]  # (image index in the batch, path of the group, child index)


class GuidanceState:
    def __init__(self) -> None:
        self.momentum: dict[MomentumKey, torch.Tensor] = {}
        self.last_step: int | None = None
        self.messages: list[str] = []

    def begin_step(self, step: int) -> None:
        if self.last_step is not None and step < self.last_step:
            self.momentum.clear()
        self.last_step = step

    def get_momentum(self, key: MomentumKey, like: torch.Tensor) -> torch.Tensor:
        nu = self.momentum.get(key)
        if nu is None or nu.shape != like.shape or nu.device != like.device:
            return torch.zeros_like(like)
        return nu.to(like.dtype)

    def set_momentum(self, key: MomentumKey, value: torch.Tensor) -> None:
        self.momentum[key] = value.detach()

    def warn(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)
