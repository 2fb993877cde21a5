"""The attention-heatmaps accordion, shared by the A1111 script and the standalone app.

`build_controls` creates the components (gradio 3.41 API that gradio 4 keeps) inside the caller's Blocks and
returns them by name; `settings_from_values` turns their values (or API arguments) into `HeatmapSettings` and the
host-side options (`show_pass`, `save`, `export_raw`), with ValueError naming what is wrong. A host without hires
fix leaves out the pass choice; a host that cannot save leaves out the save boxes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..arguments import as_bool
from .feature import HeatmapSettings
from .render import COLORMAPS

ARG_NAMES = (
    "enabled",
    "words",
    "mode",
    "time_start",
    "time_end",
    "per_layer",
    "alpha",
    "colormap",
    "show_pass",
    "save",
    "export_raw",
)
DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "words": "",
    "mode": "positive",
    "time_start": 0.0,
    "time_end": 1.0,
    "per_layer": False,
    "alpha": 0.5,
    "colormap": "jet",
    "show_pass": "hires",
    "save": False,
    "export_raw": False,
}
PASSES = ("first", "hires")
MODES = ("positive", "negative", "delta")


def split_words(text: str) -> tuple[str, ...]:
    """Words to show: comma-separated (a 'word' may hold spaces, e.g. 'red hat'); empty = every word."""
    return tuple(w.strip() for w in (text or "").split(",") if w.strip())


def settings_from_values(
    values: Mapping[str, Any], as_bool: Callable[[str, Any], bool] = as_bool
) -> tuple[bool, HeatmapSettings, dict[str, Any]]:
    """(enabled, settings, host options) from the controls' values; missing keys take `DEFAULTS`."""
    values = {**DEFAULTS, **values}
    enabled = as_bool("enabled", values["enabled"])
    try:
        start, end = float(values["time_start"]), float(values["time_end"])
        alpha = float(values["alpha"])
    except (TypeError, ValueError):
        raise ValueError("time_start, time_end and alpha must be numbers") from None
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    if values["show_pass"] not in PASSES:
        raise ValueError(f"show_pass must be one of {', '.join(PASSES)}, not {values['show_pass']!r}")
    settings = HeatmapSettings(
        words=split_words(str(values["words"])),
        mode=str(values["mode"]),  # type: ignore[arg-type]
        time_focus=(start, end),
        per_layer=as_bool("per_layer", values["per_layer"]),
        alpha=alpha,
        colormap=str(values["colormap"]).lower(),
    )
    settings.validate()
    extra = {
        "show_pass": values["show_pass"],
        "save": as_bool("save", values["save"]),
        "export_raw": as_bool("export_raw", values["export_raw"]),
    }
    return enabled, settings, extra


# The seed-bandit sweep's session/arm setting (both hosts): true, false/absent, or an object of these names.
SWEEP_KEY = "heatmaps"
SWEEP_NAMES = ("enabled", "words", "mode", "alpha", "colormap", "time_start", "time_end")


def sweep_values(value: Any) -> dict[str, Any] | None:
    """The sweep's `heatmaps` setting → the controls' values (enabled, the rest as given), or None when off;
    ValueError naming the setting and what is wrong. `settings_from_values` turns them into HeatmapSettings."""
    if value is None or value is False:
        return None
    if value is True:
        return {"enabled": True}
    if not isinstance(value, dict):
        raise ValueError(f"setting {SWEEP_KEY!r} must be true, false or an object, not {value!r}")
    unknown = sorted(set(value) - set(SWEEP_NAMES))
    if unknown:
        raise ValueError(f"setting {SWEEP_KEY!r}: unknown key(s) {unknown}; known: {', '.join(SWEEP_NAMES)}")
    if not as_bool("enabled", value.get("enabled", True)):
        return None
    values = {**value, "enabled": True}
    if isinstance(values.get("words"), list | tuple):
        values["words"] = ", ".join(str(w) for w in values["words"])
    return values


@dataclass
class HeatmapControls:
    enabled: Any
    words: Any
    mode: Any
    time_start: Any
    time_end: Any
    per_layer: Any
    alpha: Any
    colormap: Any
    show_pass: Any = None  # None when the host has no hires fix
    save: Any = None  # None when the host cannot save
    export_raw: Any = None

    def named(self) -> list[tuple[str, Any]]:
        """(argument name, component) in `ARG_NAMES` order, for the controls this host built."""
        return [(n, getattr(self, n)) for n in ARG_NAMES if getattr(self, n) is not None]


def build_controls(
    title: str,
    *,
    elem_id: str | None = None,
    elem_classes: Sequence[str] = ("promptscope-panel",),
    hires: bool = True,
    saving: bool = True,
) -> HeatmapControls:
    """The accordion (closed) with its controls, inside the current Blocks context."""
    import gradio as gr

    d = DEFAULTS
    show_pass = save = export_raw = None
    with gr.Accordion(title, open=False, elem_id=elem_id, elem_classes=list(elem_classes)):
        enabled = gr.Checkbox(value=False, label="Show a heatmap per word after each generation")
        words = gr.Textbox(value="", label="Words (comma-separated; empty = every word of the prompt)")
        with gr.Row():
            mode = gr.Radio(list(MODES), value=d["mode"], label="Prompt")
            colormap = gr.Dropdown(sorted(COLORMAPS), value=d["colormap"], label="Colormap")
            alpha = gr.Slider(0.0, 1.0, step=0.05, value=d["alpha"], label="Overlay opacity")
        with gr.Row():
            time_start = gr.Slider(0.0, 1.0, step=0.05, value=0.0, label="Time focus: from (fraction of steps)")
            time_end = gr.Slider(0.0, 1.0, step=0.05, value=1.0, label="Time focus: to")
            if hires:
                show_pass = gr.Radio(list(PASSES), value=d["show_pass"], label="Hires fix: show the pass")
        with gr.Row():
            per_layer = gr.Checkbox(value=False, label="Also per layer (IN/MID/OUT)")
            if saving:
                save = gr.Checkbox(value=False, label="Save the grids beside the images")
                export_raw = gr.Checkbox(value=False, label="Export raw maps (.safetensors)")
    return HeatmapControls(
        enabled, words, mode, time_start, time_end, per_layer, alpha, colormap, show_pass, save, export_raw
    )
