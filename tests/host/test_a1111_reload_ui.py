"""Settings → Reload UI with another extension installed next to PromptScope, as A1111 v1.10.1 does it
(webui.py: `app_reload_callback()`, `script_unloaded_callback()`, then the scripts are loaded again).

The other extension is shaped like A1111's built-in LoRA (extensions-builtin/Lora/scripts/lora_script.py): it
patches `torch.nn.Linear.forward` through `modules.patches` when its script loads and undoes that in its
`on_script_unloaded` callback. If its callback is skipped, its next load fails with "patch for forward is already
applied" — what users saw after Reload UI with PromptScope installed.
"""

from __future__ import annotations

import torch
from promptscope_webui import REPO, unload_promptscope

LORA_LIKE = """
import torch
from modules import patches, script_callbacks

KEY = "lora_patches"  # LoRA keys its patches by a module that stays imported across reloads


def forward(self, x):
    return patches.original(KEY, torch.nn.Linear, "forward")(self, x)


patches.patch(KEY, torch.nn.Linear, "forward", forward)
script_callbacks.on_script_unloaded(lambda: patches.undo(KEY, torch.nn.Linear, "forward"))
"""


def _counts(m) -> dict[str, int]:
    return {k: len(v) for k, v in m.script_callbacks.callback_map.items()}


def test_reload_ui_runs_every_other_extensions_unload_callback(fake_webui, tmp_path):
    m = fake_webui
    builtin = tmp_path / "extensions-builtin" / "Lora"
    (builtin / "scripts").mkdir(parents=True)
    (builtin / "scripts" / "lora_script.py").write_text(LORA_LIKE)
    plain_forward = torch.nn.Linear.forward
    try:
        m.scripts.load_scripts(str(builtin), str(REPO))  # built-in extensions load first, as in the WebUI
        assert torch.nn.Linear.forward is not plain_forward
        counts = _counts(m)
        for _ in range(2):  # Reload UI, twice
            m.script_callbacks.app_reload_callback()
            m.script_callbacks.script_unloaded_callback()
            assert torch.nn.Linear.forward is plain_forward  # the other extension's undo ran
            m.scripts.load_scripts(str(builtin), str(REPO))
            assert _counts(m) == counts
        problems = [(msg, str(e)) for msg, e in m.errors.reported]
        assert problems == [], problems
    finally:
        unload_promptscope(m)
        if torch.nn.Linear.forward is not plain_forward:  # the bug: nobody undid it; leave torch as found
            m.patches.originals.clear()
            torch.nn.Linear.forward = plain_forward
    assert torch.nn.Linear.forward is plain_forward


def test_unload_runs_promptscopes_own_unload_callbacks_too(fake_webui, monkeypatch):
    m = fake_webui
    m.scripts.load_scripts(str(REPO))
    import promptscope_a1111.bandit_tab as bandit_tab  # loaded by our scripts under this name

    closed = []
    monkeypatch.setattr(bandit_tab.provider, "close", lambda: closed.append(True))
    unload_promptscope(m)
    assert closed == [True]  # the seed bandit's store is closed: its callback was not skipped either
    names = [c.name for cbs in m.script_callbacks.callback_map.values() for c in cbs]
    assert not any("promptscope" in n for n in names), names
    ordered = [c.name for cbs in m.script_callbacks.ordered_callbacks_map.values() for c in cbs]
    assert not any("promptscope" in n for n in ordered), ordered
