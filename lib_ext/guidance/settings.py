"""The guidance settings of one generation (UI defaults, per-generation choices)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from .tree import SegaParams, StepCount

Mode = Literal["neutral", "sega"]


def default_sega_params() -> SegaParams:
    """SEGA defaults (diffusers: threshold 0.9, warm-up 10 of 50 steps, no cooldown, momentum 0.1, β 0.4)."""
    return SegaParams(threshold=0.9, warmup=StepCount(0.2, relative=True), cooldown=None, momentum=0.1, beta=0.4)


@dataclass(frozen=True)
class GuidanceSettings:
    """UI-level settings of one generation.

    mode "neutral": neutral-prompt's numbers (AND_TOPK keeps the top `topk_ratio` of |delta| over C·H·W jointly);
      a concept's `<sega:...>` threshold/topk, warmup and cooldown still apply to it, momentum does not.
    mode "sega": AND_TOPK concepts follow SEGA (per-channel threshold, warm-up, cooldown, momentum in eps space);
      `sega` holds the defaults for settings a concept does not write.
    cfg_rescale: neutral-prompt's CFG rescale φ (0 = off).
    """

    mode: Mode = "neutral"
    cfg_rescale: float = 0.0
    topk_ratio: float = 0.05
    sega: SegaParams = field(default_factory=default_sega_params)

    def validated(self) -> GuidanceSettings:
        """self, or ValueError naming the bad field (for API arguments and infotext)."""
        if self.mode not in ("neutral", "sega"):
            raise ValueError(f"mode must be 'neutral' or 'sega', not {self.mode!r}")
        if not (math.isfinite(self.cfg_rescale) and 0.0 <= self.cfg_rescale <= 1.0):
            raise ValueError(f"cfg_rescale must be in [0, 1], not {self.cfg_rescale}")
        if not (math.isfinite(self.topk_ratio) and 0.0 <= self.topk_ratio <= 1.0):
            raise ValueError(f"topk_ratio must be in [0, 1], not {self.topk_ratio}")
        s = self.sega
        if s.threshold is None or not (0.0 <= s.threshold <= 1.0):
            raise ValueError(f"sega threshold must be in [0, 1], not {s.threshold}")
        if s.momentum is None or not (math.isfinite(s.momentum) and s.momentum >= 0.0):
            raise ValueError(f"sega momentum must be >= 0, not {s.momentum}")
        if s.beta is None or not (0.0 <= s.beta < 1.0):
            raise ValueError(f"sega beta must be in [0, 1), not {s.beta}")
        if s.warmup is None:
            raise ValueError("sega warmup must be set (0 for none)")
        for name, sc in (("warmup", s.warmup), ("cooldown", s.cooldown)):
            if sc is not None and (sc.value < 0 or (sc.relative and sc.value > 1)):
                raise ValueError(f"sega {name} must be >= 0 steps or a fraction in [0, 1], not {sc}")
        return self
