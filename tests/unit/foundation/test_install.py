"""install.py installs only what the WebUI's environment lacks and never touches torch, gradio or numpy."""

import importlib.util
import runpy
import sys
import types
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[3] / "install.py"


@pytest.fixture
def fake_launch(monkeypatch):
    calls: list[str] = []
    launch = types.ModuleType("launch")
    launch.run_pip = lambda cmd, desc=None: calls.append(cmd)
    monkeypatch.setitem(sys.modules, "launch", launch)
    return calls


def run_install(monkeypatch, argv, present):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: real(name) if name in present else None)
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(INSTALL), run_name="__main__")


def test_installs_nothing_when_all_present(monkeypatch, fake_launch):
    run_install(monkeypatch, ["install.py"], present={"cv2", "safetensors"})
    assert fake_launch == []


def test_installs_only_the_missing_package(monkeypatch, fake_launch):
    run_install(monkeypatch, ["install.py"], present={"safetensors"})
    assert fake_launch == ["install opencv-python-headless"]
    assert not any(word in cmd for cmd in fake_launch for word in ("torch", "gradio", "numpy"))


def test_skip_install_is_honoured(monkeypatch, fake_launch):
    run_install(monkeypatch, ["launch.py", "--skip-install"], present=set())
    assert fake_launch == []
