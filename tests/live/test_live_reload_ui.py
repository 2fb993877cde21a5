"""Settings → Reload UI with PromptScope installed (issue 11): A1111 runs every script_unloaded callback and loads
all scripts again. Before the fix, our unload removed callbacks from the list A1111 was iterating, so the built-in
LoRA extension's unload was skipped and its script then failed to load ("patch for forward is already applied")."""

from __future__ import annotations

import re

import pytest

from tests.live.conftest import running_neo
from tests.live.webui_harness import READY_LINE, WebUIClient, decode_image, wait_for_reload

pytestmark = pytest.mark.live

SCRIPT_LOAD_ERROR = re.compile(r"^\*\*\* Error loading script: .*$|^.*patch for \w+ is already applied.*$", re.M)


def test_reload_ui_keeps_callbacks_other_extensions_and_images(webui: WebUIClient) -> None:
    before_image = webui.txt2img("a red cube on a table")["images"][0]
    before = webui.get("/ps-live-probe/callbacks")
    assert any("promptscope" in n for n in before["callbacks_script_unloaded"]), before["callbacks_script_unloaded"]
    if not running_neo():  # Forge Neo's LoRA lives in its backend and registers no unload callback
        assert any("lora" in n.lower() for n in before["callbacks_script_unloaded"]), "no built-in LoRA to check"
    log_start = len(webui.log())
    ready = webui.log().count(READY_LINE)
    for _ in range(2):  # the second reload shows that the first left nothing behind
        webui.post("/ps-live-probe/reload-ui")
        wait_for_reload(webui, ready)
        ready += 1
    console = webui.log()[log_start:]
    assert "Restarting UI..." in console
    assert not SCRIPT_LOAD_ERROR.findall(console), SCRIPT_LOAD_ERROR.findall(console)
    after_image = webui.txt2img("a red cube on a table")["images"][0]
    after = webui.get("/ps-live-probe/callbacks")
    assert {k: len(v) for k, v in after.items()} == {k: len(v) for k, v in before.items()}, (before, after)
    assert decode_image(after_image) == decode_image(before_image)
