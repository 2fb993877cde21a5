"""The live tier's server reads a temporary copy of the WebUI's settings, with the output folders outside the
checkout, and leaves the checkout's own settings file as it was."""

from __future__ import annotations

import json
from pathlib import Path

from tests.live.webui_harness import SCRATCH_OUTDIRS, SETTINGS_ARG, WebUIConfig, launch_command, scratch_settings


def _checkout(tmp_path: Path) -> Path:
    checkout = tmp_path / "webui"
    checkout.mkdir()
    (checkout / "launch.py").write_text("")
    return checkout


def test_copy_of_the_checkouts_settings_with_outputs_in_the_scratch_folder(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    original = {"disabled_extensions": ["x"], "outdir_samples": "", "samples_format": "png"}
    text = json.dumps(original)
    (checkout / "config.json").write_text(text)
    config = WebUIConfig(checkout, checkout / "python", ("--ckpt", "m.safetensors"))
    scratch = tmp_path / "scratch"
    out = scratch_settings(config, scratch)
    assert (checkout / "config.json").read_text() == text  # only read
    args = list(out.extra_args)
    assert args[:2] == ["--ckpt", "m.safetensors"] and "--no-prompt-history" in args
    settings_file = Path(args[args.index(SETTINGS_ARG) + 1])
    assert settings_file.parent == scratch
    settings = json.loads(settings_file.read_text())
    assert settings["disabled_extensions"] == ["x"] and settings["samples_format"] == "png"
    for key in SCRATCH_OUTDIRS:
        assert scratch in Path(settings[key]).parents, (key, settings[key])
    cmd = launch_command(out, 7860)
    assert cmd[cmd.index(SETTINGS_ARG) + 1] == str(settings_file)


def test_a_settings_file_given_in_the_args_is_the_one_copied(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)
    (checkout / "mine.json").write_text(json.dumps({"samples_format": "jpg"}))
    for given in (("--ui-settings-file", "mine.json"), ("--ui-settings-file=mine.json",)):
        config = WebUIConfig(checkout, checkout / "python", (*given, "--no-prompt-history"))
        out = scratch_settings(config, tmp_path / f"s{len(given)}")
        args = list(out.extra_args)
        assert args.count(SETTINGS_ARG) == 1 and args.count("--no-prompt-history") == 1
        assert not any(a.startswith(SETTINGS_ARG + "=") for a in args)
        settings = json.loads(Path(args[args.index(SETTINGS_ARG) + 1]).read_text())
        assert settings["samples_format"] == "jpg" and "outdir_samples" in settings


def test_no_settings_file_yet(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path)  # a fresh checkout has no config.json until settings are saved once
    out = scratch_settings(WebUIConfig(checkout, checkout / "python"), tmp_path / "s")
    settings = json.loads((tmp_path / "s" / "config.json").read_text())
    assert set(settings) == set(SCRATCH_OUTDIRS) and not (checkout / "config.json").exists()
    assert SETTINGS_ARG in out.extra_args
