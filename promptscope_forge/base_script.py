"""The always-on script that puts PromptScope's sampling session around every Forge sampling pass."""

from __future__ import annotations

from typing import Any

from modules import scripts

from .sampling import prepare_sampling


class PromptScopeScript(scripts.Script):
    """No UI of its own. Feature scripts mark themselves active on `p` in `process`; Forge calls this script's
    `process_before_every_sampling` right before each sampler call (first pass, hires pass, img2img)."""

    def title(self) -> str:
        return "PromptScope"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        return []

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        prepare_sampling(p)
