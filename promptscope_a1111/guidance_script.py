"""Semantic guidance in A1111: the accordion, arguments, infotext, settings and X/Y/Z axes.

Per generation: `process` reads the arguments (UI, API or pasted infotext) and X/Y/Z overrides into a switch and
`GuidanceSettings`. The switch is a radio, auto / on / off. "auto" (its default, so also what API calls that leave the
argument out get) turns guidance on when a prompt uses AND_PERP / AND_SALT / AND_TOPK, as neutral-prompt does with
its default setting; API booleans mean on / off. The infotext records which: `Semantic guidance: neutral (auto)`,
`Semantic guidance: neutral` (on), `Semantic guidance: off` (switched off although the prompt uses the keywords), and
a paste sets the radio back (no key: auto). Without keywords (and switched off or auto) nothing of ours runs and
nothing is written. When guidance is on it activates a `GuidanceFeature` for this job; `process_batch` hands the
host the flattened prompts (one cond row per leaf) of this batch, for both passes of hires fix; the sampling session
then lets the feature replace the CFG combination. Nothing is parsed or kept outside the job (neutral-prompt #44).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from modules import extensions, scripts
from promptscope_lib_ext.guidance import GuidanceSettings
from promptscope_lib_ext.guidance.controls import (  # noqa: F401  (KEYWORDS, append_keyword_line: re-exported)
    KEYWORDS,
    append_keyword_line,
    build_controls,
    settings_from_values,
    switch_from_value,
)
from promptscope_lib_ext.guidance.feature import GuidanceFeature, decide, disabled_warning
from promptscope_lib_ext.guidance.settings import INFOTEXT_AUTO, INFOTEXT_MODE, SETTING_KEYS, infotext_switch

from .host import add_infotext, rewrite_batch_prompts
from .sampling import activate
from .webui_bits import (
    add_options,
    add_to_processed,
    add_xyz_axes,
    api_args,
    on_prompt_box,
    option,
    overrides,
    say_once,
    tell_user,
)

TITLE = "PromptScope: Semantic guidance"
FEATURE = "guidance"
ARG_NAMES = ("enabled", *SETTING_KEYS)
FEATURE_ATTR = "promptscope_guidance"

OPT_HANDLER = "promptscope_guidance_handler"
OPT_MODE = "promptscope_guidance_mode"
OPT_TOPK = "promptscope_guidance_topk"
HANDLERS = ("PromptScope", "neutral-prompt")

XYZ_AXES = (
    ("[PromptScope] Guidance mode", str, "mode", ("neutral", "sega")),
    ("[PromptScope] Guidance CFG rescale phi", float, "cfg_rescale", None),
    ("[PromptScope] Guidance top-k fraction", float, "topk_ratio", None),
    ("[PromptScope] SEGA threshold", float, "threshold", None),
    ("[PromptScope] SEGA warm-up", str, "warmup", None),
    ("[PromptScope] SEGA cooldown", str, "cooldown", None),
    ("[PromptScope] SEGA momentum", float, "momentum", None),
    ("[PromptScope] SEGA beta", float, "beta", None),
)


def neutral_prompt_installed() -> bool:
    return any("neutral" in e.name.lower() and "prompt" in e.name.lower() for e in extensions.active())


def we_handle_keywords() -> bool:
    """Exactly one extension handles AND_* keywords: ours unless the user chose neutral-prompt (if installed)."""
    if not neutral_prompt_installed():
        return True
    ours = option(OPT_HANDLER, HANDLERS[0]) == HANDLERS[0]
    say_once(
        "neutral-prompt is installed too; AND_PERP / AND_SALT / AND_TOPK are handled by "
        + ("PromptScope" if ours else "neutral-prompt")
        + f" (Settings → PromptScope → {OPT_HANDLER})"
    )
    return ours


def default_settings() -> dict[str, Any]:
    base = GuidanceSettings().to_dict()
    base["mode"] = option(OPT_MODE, base["mode"])
    base["topk_ratio"] = float(option(OPT_TOPK, base["topk_ratio"]))
    return {"enabled": "auto", **base}


def settings_from_args(args: tuple[Any, ...], extra: dict[str, Any] | None = None) -> tuple[str, GuidanceSettings]:
    """(switch "auto"/"on"/"off", settings) from script args (+ X/Y/Z overrides); ValueError with a clear message
    when bad. The switch: the accordion's radio, or an API value (true = on, false = off, left out = auto)."""
    values = api_args(args, ARG_NAMES, default_settings())
    values.update(extra or {})
    switch = switch_from_value(values.pop("enabled"))
    return switch, settings_from_values(values)


class SemanticGuidanceScript(scripts.Script):
    def __init__(self) -> None:
        super().__init__()
        self.prompt_box: Any = None
        on_prompt_box(self, self._store_prompt_box)

    def _store_prompt_box(self, component: Any) -> None:
        self.prompt_box = component

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        c = build_controls(
            TITLE,
            default_settings(),
            elem_id=self.elem_id("promptscope_guidance"),
            add_elem_id=self.elem_id("promptscope_guidance_add"),
            prompt_box=self.prompt_box,
        )
        enabled, mode, cfg_rescale, topk = c.enabled, c.mode, c.cfg_rescale, c.topk_ratio
        threshold, warmup, cooldown, momentum, beta = c.threshold, c.warmup, c.cooldown, c.momentum, c.beta
        controls = [enabled, mode, cfg_rescale, topk, threshold, warmup, cooldown, momentum, beta]
        self.infotext_fields = [
            (enabled, infotext_switch),
            (mode, _mode_field),
            (cfg_rescale, "Semantic guidance CFG rescale phi"),
            (topk, "Semantic guidance top-k"),
            (threshold, lambda params: _sega_field(params, "threshold")),
            (warmup, lambda params: _sega_field(params, "warmup")),
            (cooldown, lambda params: _sega_field(params, "cooldown")),
            (momentum, lambda params: _sega_field(params, "momentum")),
            (beta, lambda params: _sega_field(params, "beta")),
        ]
        return controls

    def process(self, p: Any, *args: Any) -> None:
        p.__dict__.pop(FEATURE_ATTR, None)
        try:
            switch, settings = settings_from_args(args, overrides(p, FEATURE))
        except ValueError as exc:
            tell_user(p, f"semantic guidance arguments rejected: {exc}. Generating without it.")
            return
        prompts = list(getattr(p, "all_prompts", None) or [p.prompt])
        prompts += list(getattr(p, "all_hr_prompts", None) or [])
        action = decide(switch, prompts)
        if action == "off" and neutral_prompt_installed():
            # Our guidance is off for this job, so neutral-prompt (not the host) reads the keywords.
            say_once(
                "semantic guidance is off: AND_PERP / AND_SALT / AND_TOPK are handled by neutral-prompt "
                "(while its own switch is on)"
            )
            return
        if action is None or (action != "off" and not we_handle_keywords()):  # no keyword, or neutral-prompt's
            return
        feature = GuidanceFeature(settings, enabled=action != "off", auto=action == "auto")
        for key, value in feature.infotext().items():
            add_infotext(p, key, value)
        if action == "off":
            tell_user(p, disabled_warning(prompts) or "semantic guidance is off")
            return
        p.__dict__[FEATURE_ATTR] = feature
        activate(p, feature)

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        feature = p.__dict__.get(FEATURE_ATTR)
        if feature is not None:
            rewrite_batch_prompts(p, feature.rewrite_prompts)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        feature = p.__dict__.get(FEATURE_ATTR)
        if feature is not None and feature.messages:
            add_to_processed(processed, feature.messages)


def _mode_field(params: dict[str, str]) -> Any:
    """The mode from `Semantic guidance: sega` or `... (auto)`; None (leave the radio) for `off` or no key."""
    if infotext_switch(params) == "off" or INFOTEXT_MODE not in params:
        return None
    mode = str(params[INFOTEXT_MODE]).strip()
    return mode[: -len(INFOTEXT_AUTO)] if mode.endswith(INFOTEXT_AUTO) else mode


def _sega_field(params: dict[str, str], name: str) -> Any:
    try:
        settings = GuidanceSettings.from_infotext(params)
    except ValueError:
        settings = None
    if settings is None:
        return None
    value = settings.to_dict()[name]
    return "" if value is None else value


def register_settings() -> None:
    add_options(
        {
            OPT_HANDLER: (
                HANDLERS[0],
                "Who handles AND_PERP / AND_SALT / AND_TOPK when neutral-prompt is installed too",
                gr.Radio,
                {"choices": list(HANDLERS)},
            ),
            OPT_MODE: ("neutral", "Semantic guidance: default mode", gr.Radio, {"choices": ["neutral", "sega"]}),
            OPT_TOPK: (
                0.05,
                "Semantic guidance: default AND_TOPK fraction kept",
                gr.Slider,
                {"minimum": 0.0, "maximum": 1.0, "step": 0.01},
            ),
        }
    )


def register_xyz_axes() -> None:
    add_xyz_axes(FEATURE, XYZ_AXES)
