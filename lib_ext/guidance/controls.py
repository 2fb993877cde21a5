"""The semantic-guidance accordion, shared by the A1111 script and the standalone app.

`build_controls` creates the components (gradio 3.41 API that gradio 4 keeps) inside the caller's Blocks and
returns them by name; each host decides how the values reach `settings_from_values` (A1111: script args in
`SETTINGS_ORDER`; the app: its Generate inputs). The prompt helper appends one keyword line to the host's prompt box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .settings import SWITCHES, GuidanceSettings, Switch

KEYWORDS = ("AND_TOPK", "AND_PERP", "AND_SALT", "AND")
MODES = ("neutral", "sega")
# The settings controls in the order hosts pass their values (A1111's script args after "enabled").
SETTINGS_ORDER = ("mode", "cfg_rescale", "topk_ratio", "threshold", "warmup", "cooldown", "momentum", "beta")
ENABLE_LABEL = "Semantic guidance (auto: on when the prompt uses AND_TOPK / AND_PERP / AND_SALT)"
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def switch_from_value(value: Any) -> Switch:
    """The "enabled" argument as "auto", "on" or "off".

    The control is a radio (auto / on / off; auto is its default, so API calls that leave the argument out get it).
    Older callers pass a checkbox value: true means on, false means off — an explicit choice, as before. None (an
    argument the API left unset) is auto. Anything else is a ValueError naming the argument.
    """
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float) and value in (0, 1):
        return "on" if value else "off"
    if isinstance(value, str):
        word = value.strip().lower()
        if word in SWITCHES:
            return word  # type: ignore[return-value]
        if word in _TRUE + _FALSE:
            return "on" if word in _TRUE else "off"
    raise ValueError(f"enabled must be one of {', '.join(SWITCHES)} (or true / false), not {value!r}")


def append_keyword_line(prompt: str, keyword: str, text: str, weight: float) -> str:
    """The prompt helper: add `\\n<keyword> <text> :<weight>` to the prompt (as neutral-prompt's formatter)."""
    text = (text or "").strip()
    prompt = prompt or ""
    if not text:
        return prompt
    line = f"{keyword} {text} :{float(weight):g}"
    return f"{prompt.rstrip()}\n{line}" if prompt.strip() else line


def default_values() -> dict[str, Any]:
    """The UI's initial values: `enabled` "auto" plus `GuidanceSettings()` as a flat dict."""
    return {"enabled": "auto", **GuidanceSettings().to_dict()}


def settings_from_values(values: Mapping[str, Any]) -> GuidanceSettings:
    """Validated settings from the controls' values (an empty or "none"/"off" warm-up/cooldown box means none);
    ValueError names the bad field."""
    values = dict(values)
    for key in ("warmup", "cooldown"):
        if isinstance(values.get(key), str) and values[key].strip().lower() in ("", "none", "off"):
            values[key] = None
    return GuidanceSettings.from_dict(values)


@dataclass
class GuidanceControls:
    enabled: Any
    mode: Any
    cfg_rescale: Any
    topk_ratio: Any
    threshold: Any
    warmup: Any
    cooldown: Any
    momentum: Any
    beta: Any
    helper_keyword: Any
    helper_text: Any
    helper_weight: Any
    helper_add: Any

    @property
    def values(self) -> list[Any]:
        """`enabled` then the settings in `SETTINGS_ORDER`: the components whose values make the settings."""
        return [self.enabled, *(getattr(self, name) for name in SETTINGS_ORDER)]


def build_controls(
    title: str,
    defaults: Mapping[str, Any] | None = None,
    *,
    elem_id: str | None = None,
    add_elem_id: str | None = None,
    elem_classes: Sequence[str] = ("promptscope-panel",),
    prompt_box: Any = None,
) -> GuidanceControls:
    """The accordion (closed) with its controls, inside the current Blocks context. With `prompt_box`, the helper's
    "Add to prompt" button appends a keyword line to it."""
    import gradio as gr

    d = {**default_values(), **(defaults or {})}
    with gr.Accordion(title, open=False, elem_id=elem_id, elem_classes=list(elem_classes)):
        enabled = gr.Radio(list(SWITCHES), value=switch_from_value(d["enabled"]), label=ENABLE_LABEL)
        with gr.Row():
            mode = gr.Radio(list(MODES), value=d["mode"], label="Mode (neutral = neutral-prompt's numbers)")
            cfg_rescale = gr.Slider(0.0, 1.0, step=0.05, value=d["cfg_rescale"], label="CFG rescale φ")
            topk = gr.Slider(0.0, 1.0, step=0.01, value=d["topk_ratio"], label="AND_TOPK: fraction kept")
        with gr.Row():
            threshold = gr.Slider(0.0, 1.0, step=0.005, value=d["threshold"], label="SEGA threshold (quantile)")
            warmup = gr.Textbox(value=str(d["warmup"]), label="SEGA warm-up (steps or %)")
            cooldown = gr.Textbox(value=str(d["cooldown"] or ""), label="SEGA cooldown (steps or %, empty = none)")
            momentum = gr.Slider(0.0, 1.0, step=0.05, value=d["momentum"], label="SEGA momentum")
            beta = gr.Slider(0.0, 0.95, step=0.05, value=d["beta"], label="SEGA momentum β")
        with gr.Row():
            helper_kw = gr.Dropdown(list(KEYWORDS), value="AND_TOPK", label="Keyword")
            helper_text = gr.Textbox(label="Concept", placeholder="e.g. (glasses:1.2)")
            helper_weight = gr.Slider(-3.0, 3.0, step=0.05, value=0.4, label="Weight")
            helper_add = gr.Button("Add to prompt", elem_id=add_elem_id)
        if prompt_box is not None:
            helper_add.click(
                fn=append_keyword_line,
                inputs=[prompt_box, helper_kw, helper_text, helper_weight],
                outputs=[prompt_box],
            )
    return GuidanceControls(
        enabled, mode, cfg_rescale, topk, threshold, warmup, cooldown, momentum, beta,
        helper_kw, helper_text, helper_weight, helper_add,
    )  # fmt: skip
