"""Helpers for tests that run PromptScope's scripts inside the v1.10.1 double (fixture `webui` in conftest)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUR_PACKAGES = ("promptscope_a1111", "promptscope_forge", "promptscope_adapter", "promptscope_lib_ext")


def load_promptscope(m: Any) -> None:
    """Load our scripts the way A1111 does (each `scripts/*.py` as its own module, our folder on sys.path)."""
    m.scripts.load_scripts(str(REPO))


def unload_promptscope(m: Any) -> None:
    m.script_callbacks.script_unloaded_callback()
    for name in [n for n in sys.modules if n.split(".")[0] in OUR_PACKAGES]:
        del sys.modules[name]


def alwayson(m: Any, title: str, runner: Any = None) -> Any:
    runner = runner or m.scripts.scripts_txt2img
    return next(s for s in runner.alwayson_scripts if s.title() == title)


def txt2img(m: Any, scripts_args: dict[str, list[Any]] | None = None, **kw: Any) -> Any:
    """A txt2img job with our scripts attached; `scripts_args` maps a script title to its leading arguments
    (the rest take the UI defaults, as the API fills them)."""
    params = dict(
        prompt="a cat",
        negative_prompt="ugly",
        steps=3,
        width=64,
        height=64,
        sampler_name="Euler",
        seed=7,
        do_not_save_samples=True,
        do_not_save_grid=True,
    )
    params.update(kw)
    p = m.processing.StableDiffusionProcessingTxt2Img(**params)
    runner = m.scripts.scripts_txt2img
    p.scripts = runner
    p.script_args = [0] * max([s.args_to for s in runner.scripts] + [1])
    for s in runner.alwayson_scripts:  # every script's UI defaults, as the API fills them
        p.script_args[s.args_from : s.args_to] = [getattr(c, "value", None) for c in s.controls or []]
    for title, values in (scripts_args or {}).items():
        s = alwayson(m, title, runner)
        p.script_args[s.args_from : s.args_to] = list(values) + [c.value for c in s.controls[len(values) :]]
    return p
