"""Fixtures that mount the fake A1111 ``modules`` package (tests/host/fake_webui) for one test at a time."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

FAKE_WEBUI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_webui")
_FAKE_PACKAGES = ("modules", "ldm", "sgm")


def _is_fake(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _FAKE_PACKAGES)


def _purge_fake_modules() -> None:
    for name in [n for n in sys.modules if _is_fake(n)]:
        del sys.modules[name]


@pytest.fixture
def fake_webui(tmp_path):
    """The fake ``modules`` package with fresh settings, state, callbacks and no scripts; removed afterwards.

    Every ``modules*``/``ldm*``/``sgm*`` entry is dropped from ``sys.modules`` on teardown (and before set-up, in
    case a test imported them by hand), so no other test can see the double.
    """
    _purge_fake_modules()
    sys.path.insert(0, FAKE_WEBUI)
    # tiny models: one thread is ~20x faster than two fighting over a loaded 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import modules
        import modules.call_queue
        import modules.errors
        import modules.extensions
        import modules.images
        import modules.infotext_utils
        import modules.paths
        import modules.processing
        import modules.prompt_parser
        import modules.script_callbacks
        import modules.scripts
        import modules.sd_hijack
        import modules.sd_hijack_clip
        import modules.sd_models
        import modules.sd_samplers
        import modules.sd_samplers_cfg_denoiser
        import modules.sd_samplers_common
        import modules.shared

        modules.paths.data_path = str(tmp_path)
        modules.shared.reset()
        yield modules
    finally:
        torch.set_num_threads(threads)
        while FAKE_WEBUI in sys.path:
            sys.path.remove(FAKE_WEBUI)
        _purge_fake_modules()


@pytest.fixture
def sd_model(fake_webui):
    """A loaded SD1-like model (``shared.sd_model``), hijacked with the attention optimisation applied."""
    return fake_webui.sd_models.load_model("sd1")


@pytest.fixture
def sdxl_model(fake_webui):
    """A loaded SDXL-like model: dict conds {crossattn, vector}; ``cond_stage_model`` is the conditioner."""
    return fake_webui.sd_models.load_model("sdxl")


@pytest.fixture
def booted_webui(fake_webui):
    """The double's whole start-up (UI, tabs, on_app_started routes) with PromptScope installed: (double, demo, app);
    PromptScope unloaded and forgotten afterwards."""
    from modules import initialize
    from promptscope_webui import unload_promptscope

    demo, app = initialize.boot(str(Path(__file__).resolve().parents[2]))
    yield fake_webui, demo, app
    unload_promptscope(fake_webui)


@pytest.fixture
def webui(fake_webui):
    """The double with PromptScope's scripts loaded as A1111 loads them; unloaded (and forgotten) afterwards."""
    from promptscope_webui import load_promptscope, unload_promptscope

    load_promptscope(fake_webui)
    yield fake_webui
    unload_promptscope(fake_webui)
