"""What PromptScope registers with A1111 for the life of the loaded scripts, and how all of it is undone.

Callbacks are registered through a PatchSet, so `on_script_unloaded` (Reload UI, extension disabled) removes them,
closes any sampling session still open, and forgets our modules so the reloaded scripts import the code on disk.

Removal never edits a list of callbacks in place: A1111 v1.10.1 runs the unload callbacks by iterating
`reversed(ordered_callbacks('script_unloaded'))`, the very list `remove_callbacks_for_function` removes from, so
removing ours there made it skip the callbacks registered before ours (the built-in LoRA extension's undo of its
patches, whose next load then failed with "patch for forward is already applied").
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from modules import script_callbacks
from promptscope_lib_ext.patches import PatchSet

from . import forget_modules
from .sampling import close_open_sessions, rebind_open_sessions
from .webui_bits import say_once


class ExtensionLifetime:
    def __init__(self) -> None:
        self.patches = PatchSet("extension")
        self.unloaded = False

    def on(self, event: str, fn: Callable[..., Any]) -> None:
        """Register `fn` for A1111's `on_<event>` once; removed again on unload."""
        key = (event, id(fn))
        if ("call", *key) in self.patches:
            return
        getattr(script_callbacks, f"on_{event}")(fn, name=f"promptscope_{event}")
        self.patches.on_restore(lambda: remove_callbacks_copy_safe(fn), key=key, what=f"on_{event} callback")

    def unload(self) -> None:
        if self.unloaded:
            return
        self.unloaded = True
        close_open_sessions()
        self.patches.restore()
        forget_modules()


def remove_callbacks_copy_safe(fn: Callable[..., Any]) -> None:
    """What A1111's `remove_callbacks_for_function(fn)` does, without mutating a list the host may be iterating:
    every list of `callback_map` and of the ordered cache `ordered_callbacks_map` that holds `fn` is replaced by a
    new list without it. A1111 looks both maps up by key on every call, and the cache stays valid (the lengths of a
    category's two lists still match), while a loop already running over an old list finishes it unchanged."""
    for mapping in (script_callbacks.callback_map, getattr(script_callbacks, "ordered_callbacks_map", {})):
        for key, callbacks in list(mapping.items()):
            if any(c.callback == fn for c in callbacks):
                mapping[key] = [c for c in callbacks if c.callback != fn]


def running_on_forge() -> bool:
    return importlib.util.find_spec("modules_forge") is not None


def start() -> ExtensionLifetime:
    from . import bandit_tab, guidance_script

    if running_on_forge():
        say_once(
            "this looks like Forge, which never calls A1111's CFG combination: PromptScope supports "
            "AUTOMATIC1111 v1.10.x only for now, so its features will do nothing here"
        )

    life = ExtensionLifetime()
    life.on("model_loaded", rebind_open_sessions)
    life.on("ui_settings", guidance_script.register_settings)
    life.on("before_ui", guidance_script.register_xyz_axes)
    life.on("ui_settings", bandit_tab.register_settings)  # seed-bandit tab, its data folder and HTTP routes
    life.on("ui_tabs", bandit_tab.on_ui_tabs)
    life.on("app_started", bandit_tab.on_app_started)
    life.on("script_unloaded", bandit_tab.on_unloaded)
    life.on("script_unloaded", life.unload)
    return life
