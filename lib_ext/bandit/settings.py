"""Generation settings of seed-bandit sessions and arms: one validator for both hosts.

A session's settings and an arm's settings are merged (the arm's win) into every job's `GenerationRequest.settings`.
The hosts read these keys (A1111: `promptscope_a1111.host.run_jobs` and `bandit_tab.with_features`; the standalone
app: `ToyHost.run_jobs` and `app.panel_bandit`); everything else they silently ignore, so a typo ("step": 30) would
be a sweep that quietly ran at the defaults. Hence:

- given settings (create/edit a session or an arm, from the tab or the HTTP API) are checked in full: an unknown
  key, a value of the wrong type (strict: `"20"` is not a number, `true` is not 1) or out of range is a ValueError
  naming the key and what is allowed (HTTP 422);
- before a round, each job's merged settings are checked again with unknown keys ignored (settings stored before
  this check existed): a job that fails is not generated and the round reports its arm and why.

Ranges are A1111 v1.10.1's txt2img controls (steps 1–150, CFG 1–30, size 64–2048 in steps of 8); a host narrows
them with `SettingsRules` (the toy model draws only 32×32 images and has its own samplers). The seed is not a
setting: the bandit chooses seeds.

The heatmap and guidance checks import their packages (torch) only when those keys are used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

HEATMAPS_KEY = "heatmaps"  # = lib_ext.heatmaps.controls.SWEEP_KEY (not imported: it pulls in torch)
GUIDANCE_KEY = "semantic_guidance"
SCRIPT_ARGS_KEY = "script_args"  # A1111 only: {always-on script title: its args}
BASE_KEYS = ("steps", "cfg_scale", "sampler_name", "width", "height", HEATMAPS_KEY, GUIDANCE_KEY)
A1111_KEYS = (*BASE_KEYS, "scheduler", "batch_size", "denoising_strength", SCRIPT_ARGS_KEY)


@dataclass(frozen=True)
class SettingsRules:
    """What a host accepts. `samplers`: a function listing the valid sampler names (read at every check:
    extensions may add samplers; it may return None when the host cannot tell), or None to accept any non-empty
    name. `size`: (min, max, multiple)."""

    keys: tuple[str, ...] = A1111_KEYS
    steps: tuple[int, int] = (1, 150)
    cfg_scale: tuple[float, float] = (1.0, 30.0)
    size: tuple[int, int, int] = (64, 2048, 8)
    batch_size: tuple[int, int] = (1, 8)
    samplers: Callable[[], Iterable[str] | None] | None = None


A1111_RULES = SettingsRules()


def _int(key: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"setting {key!r} must be an integer from {lo} to {hi}, got {value!r}")


def _number(key: str, value: Any, lo: float, hi: float) -> None:
    # compared, not converted: float() of a huge JSON integer raises OverflowError; NaN fails the comparison
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValueError(f"setting {key!r} must be a number from {lo:g} to {hi:g}, got {value!r}")


def _size(key: str, value: Any, rules: SettingsRules) -> None:
    lo, hi, step = rules.size
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi or value % step:
        allowed = f"{lo}" if lo == hi else f"a multiple of {step} from {lo} to {hi}"
        raise ValueError(f"setting {key!r} must be {allowed} (pixels), got {value!r}")


def _name(key: str, value: Any, names: Callable[[], Iterable[str] | None] | None) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"setting {key!r} must be a non-empty name, got {value!r}")
    listed = names() if names is not None else None
    if listed is not None:
        known = list(listed)
        if value not in known:
            raise ValueError(f"setting {key!r}: unknown name {value!r}; choose one of {', '.join(known)}")


# The heatmap and guidance parsers convert with float(): a huge JSON integer raises OverflowError, an odd JSON
# type TypeError; to the client all of them are a bad value of that setting.
_BAD_VALUE = (TypeError, ValueError, OverflowError)


def _heatmaps(value: Any) -> None:
    from ..heatmaps.controls import settings_from_values, sweep_values

    try:
        values = sweep_values(value)
        if values is not None:
            settings_from_values(values)
    except _BAD_VALUE as exc:
        message = str(exc)
        raise ValueError(message if HEATMAPS_KEY in message else f"setting {HEATMAPS_KEY!r}: {message}") from None


def _guidance(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"setting {GUIDANCE_KEY!r} must be an object of guidance settings, got {value!r}")
    from ..guidance.settings import GuidanceSettings

    try:
        GuidanceSettings.from_dict(value).validated()
    except _BAD_VALUE as exc:
        raise ValueError(f"setting {GUIDANCE_KEY!r}: {exc}") from None


def _script_args(value: Any) -> None:
    ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, dict | list) for k, v in value.items())
    if not ok:
        raise ValueError(
            f"setting {SCRIPT_ARGS_KEY!r} must be an object of {{script title: list or object of its arguments}}"
        )


def check_value(key: str, value: Any, rules: SettingsRules) -> None:
    """ValueError naming `key` if the host could not use `value` for it."""
    if key == "steps":
        _int(key, value, *rules.steps)
    elif key == "cfg_scale":
        _number(key, value, *rules.cfg_scale)
    elif key in ("width", "height"):
        _size(key, value, rules)
    elif key == "sampler_name":
        _name(key, value, rules.samplers)
    elif key == "scheduler":  # A1111 v1.10 falls back to its automatic scheduler for a name it does not know
        _name(key, value, None)
    elif key == "batch_size":
        _int(key, value, *rules.batch_size)
    elif key == "denoising_strength":
        _number(key, value, 0.0, 1.0)
    elif key == HEATMAPS_KEY:
        _heatmaps(value)
    elif key == GUIDANCE_KEY:
        _guidance(value)
    elif key == SCRIPT_ARGS_KEY:
        _script_args(value)


def check_settings(settings: Mapping[str, Any], rules: SettingsRules, ignore_unknown: bool = False) -> None:
    """ValueError naming the first unusable key of `settings`: unknown to this host (unless `ignore_unknown`, for
    settings stored before this check existed, which the hosts ignore), or a bad value."""
    for key, value in settings.items():
        if key not in rules.keys:
            if ignore_unknown:
                continue
            hint = " (the bandit chooses the seeds)" if key == "seed" else ""
            raise ValueError(f"unknown setting {key!r}{hint}; this host uses: {', '.join(rules.keys)}")
        check_value(key, value, rules)


__all__ = ["A1111_KEYS", "A1111_RULES", "BASE_KEYS", "SettingsRules", "check_settings", "check_value"]
