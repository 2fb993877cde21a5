"""The always-on script that opens PromptScope's sampling session for every feature active in a job."""

from __future__ import annotations

from typing import Any

from modules import scripts

from .sampling import prepare_sampling


class PromptScopeScript(scripts.Script):
    """Has no UI of its own. Feature scripts mark themselves active on `p` in `process`; this script, which
    A1111 calls right before each sampler call, puts the session around that call."""

    def title(self) -> str:
        return "PromptScope"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        return []

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        prepare_sampling(p)
