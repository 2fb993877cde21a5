"""Semantic guidance in the standalone app: the A1111 accordion (`guidance.controls`) under the txt2img settings.

Per Generate, as A1111's script (`feature.decide`): switch "auto" (the default) and the prompt uses AND_PERP /
AND_SALT / AND_TOPK, or "on" and it uses them or a `<sega:...>` tag → a `GuidanceFeature` with the panel's settings,
whose keys go into the infotext (`(auto)` after the mode when the keywords switched it on); "off" but the prompt uses
the keywords → a disabled `GuidanceFeature`, which only puts the one-line warning under the images and
`Semantic guidance: off` into the infotext (the host then treats the prompt exactly as without us). Bad settings
(e.g. warm-up "abc") stop the generation with a clear error.
"""

from __future__ import annotations

from typing import Any

from ..guidance.controls import SETTINGS_ORDER, build_controls, settings_from_values, switch_from_value
from ..guidance.feature import GuidanceFeature, decide
from .panels import PanelRegistry, Txt2ImgContext, Txt2ImgPanel

TITLE = "Semantic guidance"
ELEM_ID = "ps_guidance"


def make_feature(prompt: str, enabled: Any, *values: Any) -> GuidanceFeature | None:
    """The feature for one generation from the prompt box, the switch (auto / on / off, or a checkbox's bool) and the
    panel's values (`SETTINGS_ORDER`)."""
    if len(values) != len(SETTINGS_ORDER):
        raise TypeError(f"semantic guidance takes {len(SETTINGS_ORDER)} settings, got {len(values)}")
    prompt = prompt or ""
    try:
        action = decide(switch_from_value(enabled), [prompt])
    except ValueError as exc:
        raise ValueError(f"semantic guidance settings: {exc}") from None
    if action is None:
        return None
    if action == "off":
        # The feature in its disabled state only warns (A1111 alone would weight the whole sub-prompt by the last :w).
        return GuidanceFeature(enabled=False)
    try:
        settings = settings_from_values(dict(zip(SETTINGS_ORDER, values)))
    except ValueError as exc:
        raise ValueError(f"semantic guidance settings: {exc}") from None
    return GuidanceFeature(settings, auto=action == "auto")


def after(host: Any, processed: Any, feature: Any) -> None:
    if isinstance(feature, GuidanceFeature):
        for key, value in feature.infotext().items():
            host.add_infotext(processed, key, value)


def build(ctx: Txt2ImgContext) -> Txt2ImgPanel:
    controls = build_controls(TITLE, elem_id=ELEM_ID, add_elem_id=f"{ELEM_ID}_add", prompt_box=ctx.prompt)
    return Txt2ImgPanel(inputs=[ctx.prompt, *controls.values], make_feature=make_feature, after=after)


def register(registry: PanelRegistry) -> None:
    registry.txt2img_panel("guidance", build, order=10)
