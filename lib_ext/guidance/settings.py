"""The guidance settings of one generation (UI defaults, per-generation choices)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .tree import SegaParams, StepCount, format_plain_float

Mode = Literal["neutral", "sega"]
Switch = Literal["auto", "on", "off"]
SWITCHES: tuple[Switch, ...] = ("auto", "on", "off")


def default_sega_params() -> SegaParams:
    """SEGA defaults: diffusers' threshold 0.9, momentum 0.1, β 0.4, no cooldown; warm-up 40% of the steps (diffusers:
    10 of 50), the earliest that kept the composition on the toy world (`python -m bench semantic_guidance`: at
    20–30% the object moved, IoU 0.61–0.78; at 40% colour success 1.0 and IoU 0.90)."""
    return SegaParams(threshold=0.9, warmup=StepCount(0.4, relative=True), cooldown=None, momentum=0.1, beta=0.4)


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

    # -- conversions ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        """Flat JSON-able form (API arguments, UI state): steps as ints, percentages as "20%"."""
        s = self.sega
        return {
            "mode": self.mode,
            "cfg_rescale": self.cfg_rescale,
            "topk_ratio": self.topk_ratio,
            "threshold": s.threshold,
            "warmup": _step_value(s.warmup),
            "cooldown": _step_value(s.cooldown),
            "momentum": s.momentum,
            "beta": s.beta,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> GuidanceSettings:
        """Validated settings from a flat mapping (missing keys take the defaults); ValueError names the bad key."""
        unknown = set(values) - set(SETTING_KEYS)
        if unknown:
            raise ValueError(f"unknown guidance setting(s) {sorted(unknown)}; known: {', '.join(SETTING_KEYS)}")
        base = cls()
        d = base.sega

        def number(key: str, default: float | None) -> float | None:
            v = values.get(key, default)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, int | float | str):
                raise ValueError(f"{key} must be a number, not {v!r}")
            try:
                x = float(v)
            except ValueError:
                raise ValueError(f"{key} must be a number, not {v!r}") from None
            if not math.isfinite(x):
                raise ValueError(f"{key} must be finite, not {v!r}")
            return x

        def steps(key: str, default: StepCount | None) -> StepCount | None:
            if key not in values:
                return default
            v = values[key]
            if v is None or v == "":
                return None
            text = str(v).strip()
            try:
                if text.endswith("%"):
                    return StepCount(float(text[:-1]) / 100.0, relative=True)
                x = float(text)
            except ValueError:
                raise ValueError(f"{key} must be a number of steps or a percentage like 20%, not {v!r}") from None
            if x != int(x):
                raise ValueError(f"{key} must be a whole number of steps or a percentage like 20%, not {v!r}")
            return StepCount(int(x))

        mode = values.get("mode", base.mode)
        settings = cls(
            mode=mode,  # type: ignore[arg-type]
            cfg_rescale=number("cfg_rescale", base.cfg_rescale),  # type: ignore[arg-type]
            topk_ratio=number("topk_ratio", base.topk_ratio),  # type: ignore[arg-type]
            sega=SegaParams(
                threshold=number("threshold", d.threshold),
                warmup=steps("warmup", d.warmup),
                cooldown=steps("cooldown", d.cooldown),
                momentum=number("momentum", d.momentum),
                beta=number("beta", d.beta),
            ),
        )
        return settings.validated()

    def to_infotext(self, auto: bool = False) -> dict[str, str]:
        """Infotext keys (values hold no comma, colon or newline, so A1111 writes them unquoted). `auto`: the
        guidance came on because the prompt uses the keywords (`Semantic guidance: neutral (auto)`)."""
        out = {INFOTEXT_MODE: self.mode + (INFOTEXT_AUTO if auto else "")}
        if self.cfg_rescale:
            out[INFOTEXT_PHI] = format_plain_float(self.cfg_rescale)
        if self.mode == "neutral":
            out[INFOTEXT_TOPK] = format_plain_float(self.topk_ratio)
        else:
            out[INFOTEXT_SEGA] = self.sega.to_tag()[len("<sega:") : -1].replace(",", " ")
        return out

    @classmethod
    def from_infotext(cls, params: Mapping[str, str]) -> GuidanceSettings | None:
        """Settings from pasted infotext keys; None when the image was made without semantic guidance."""
        if infotext_switch(params) == "off" or INFOTEXT_MODE not in params:
            return None
        mode = str(params[INFOTEXT_MODE]).strip()
        values: dict[str, object] = {"mode": mode[: -len(INFOTEXT_AUTO)] if mode.endswith(INFOTEXT_AUTO) else mode}
        if INFOTEXT_PHI in params:
            values["cfg_rescale"] = params[INFOTEXT_PHI]
        if INFOTEXT_TOPK in params:
            values["topk_ratio"] = params[INFOTEXT_TOPK]
        if INFOTEXT_SEGA in params:
            from .parser import parse_sega_args

            p = parse_sega_args(str(params[INFOTEXT_SEGA]), where="infotext")
            values.update({k: v for k, v in _params_dict(p).items() if v is not None})
            if p.cooldown is None:
                values["cooldown"] = None
        return cls.from_dict(values)


SETTING_KEYS = ("mode", "cfg_rescale", "topk_ratio", "threshold", "warmup", "cooldown", "momentum", "beta")
INFOTEXT_MODE = "Semantic guidance"
INFOTEXT_AUTO = " (auto)"  # suffix of the mode when the keywords turned the guidance on by themselves
INFOTEXT_OFF = "off"  # the mode key's value when the user switched guidance off although the prompt uses keywords
INFOTEXT_PHI = "Semantic guidance CFG rescale phi"
INFOTEXT_TOPK = "Semantic guidance top-k"
INFOTEXT_SEGA = "Semantic guidance SEGA"


def infotext_switch(params: Mapping[str, str]) -> Switch:
    """How the image's guidance was switched: `... (auto)` or no key → "auto" (no key: made without PromptScope's
    guidance, e.g. by neutral-prompt, or without keywords), `off` → "off", a mode → "on"."""
    value = str(params.get(INFOTEXT_MODE, "")).strip()
    if not value or value.endswith(INFOTEXT_AUTO):
        return "auto"
    return "off" if value == INFOTEXT_OFF else "on"


def _step_value(sc: StepCount | None) -> object:
    if sc is None:
        return None
    return str(sc) if sc.relative else int(sc.value)


def _params_dict(p: SegaParams) -> dict[str, object]:
    return {
        "threshold": p.threshold,
        "warmup": _step_value(p.warmup),
        "cooldown": _step_value(p.cooldown),
        "momentum": p.momentum,
        "beta": p.beta,
    }
