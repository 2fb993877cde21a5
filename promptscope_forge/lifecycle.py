"""What PromptScope registers with Forge for the life of the loaded scripts (as in A1111), and its undoing."""

from __future__ import annotations

from promptscope_a1111 import bandit_tab, guidance_script
from promptscope_a1111.lifecycle import ExtensionLifetime

from . import forget_modules
from .sampling import close_open_sessions


class ForgeLifetime(ExtensionLifetime):
    def unload(self) -> None:
        if self.unloaded:
            return
        self.unloaded = True
        close_open_sessions()
        self.patches.restore()
        forget_modules()


def start() -> ForgeLifetime:
    life = ForgeLifetime()
    life.on("ui_settings", guidance_script.register_settings)
    life.on("before_ui", guidance_script.register_xyz_axes)
    life.on("ui_settings", bandit_tab.register_settings)
    life.on("ui_tabs", bandit_tab.on_ui_tabs)
    life.on("app_started", bandit_tab.on_app_started)
    life.on("script_unloaded", bandit_tab.on_unloaded)
    life.on("script_unloaded", life.unload)
    return life
