"""Where PromptScope's features plug into the standalone app: a registry of txt2img panels and tabs.

A feature adds a module `lib_ext/app/panel_<name>.py` with a function `register(registry: PanelRegistry) -> None`;
the app imports every such module at start-up (no shared file to edit). Two kinds of contribution:

- a txt2img panel: `build(ctx: Txt2ImgContext) -> Txt2ImgPanel | None`, called inside the txt2img column (wrap
  your controls in a `gr.Accordion`). The panel names its input components; at each Generate their values go to
  `make_feature(*values)`, which returns the `Feature` to activate for that generation (or None when off), and
  `after(host, processed, feature)` runs once the images exist (attach extra images, add infotext keys).
- a tab: `build(ctx: TabContext) -> None`, called inside its own `gr.Tab`; it generates through
  `ctx.host.run_jobs(...)` (and `ctx.host.interrupt()`).

Only gradio 3.41 API that gradio 4 keeps may be used here (no `gr.Box`, no `Component.update`, no `_js`).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..seam import Feature

log = logging.getLogger("promptscope")


@dataclass
class Txt2ImgContext:
    """The txt2img panel's components a feature panel may read or wire events to."""

    host: Any  # ToyHost
    prompt: Any
    negative_prompt: Any
    seed: Any
    steps: Any
    cfg_scale: Any
    sampler_name: Any
    batch_size: Any
    gallery: Any
    infotext: Any


@dataclass
class Txt2ImgPanel:
    inputs: Sequence[Any] = ()
    make_feature: Callable[..., Feature | None] | None = None
    after: Callable[[Any, Any, Feature | None], None] | None = None


@dataclass
class TabContext:
    host: Any  # ToyHost
    data_dir: Any = None  # the app's --data-dir (None: the feature's default folder)
    # callables (demo, app) run once the server is up, e.g. to mount HTTP routes on the FastAPI `app`
    app_hooks: list[Callable[[Any, Any], None]] = field(default_factory=list)
    # callables run when the app stops (background threads joined, stores closed)
    close_hooks: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Registration:
    name: str
    kind: str  # "txt2img" or "tab"
    build: Callable[..., Any]
    title: str = ""
    order: int = 100


@dataclass
class PanelRegistry:
    entries: list[Registration] = field(default_factory=list)

    def txt2img_panel(self, name: str, build: Callable[[Txt2ImgContext], Txt2ImgPanel | None], order: int = 100):
        self._add(Registration(name, "txt2img", build, name, order))

    def tab(self, name: str, title: str, build: Callable[[TabContext], None], order: int = 100) -> None:
        self._add(Registration(name, "tab", build, title, order))

    def _add(self, reg: Registration) -> None:
        # Registering the same name and kind again replaces the entry (module reloads stay idempotent).
        self.entries = [e for e in self.entries if (e.name, e.kind) != (reg.name, reg.kind)]
        self.entries.append(reg)

    def of_kind(self, kind: str) -> list[Registration]:
        return sorted((e for e in self.entries if e.kind == kind), key=lambda e: (e.order, e.name))


def discover(registry: PanelRegistry | None = None, package: str | None = None) -> PanelRegistry:
    """Import every `panel_*` module of this package and let it register; a broken panel is logged and skipped."""
    registry = PanelRegistry() if registry is None else registry
    package = package or __name__.rsplit(".", 1)[0]
    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("panel_"):
            continue
        try:
            module = importlib.import_module(f"{package}.{info.name}")
            module.register(registry)
        except Exception:
            log.exception("PromptScope: could not load app panel %s", info.name)
    return registry
