"""The live harness's Forge Neo mode: chosen from the checkout's own version module, loopback only."""

from __future__ import annotations

from pathlib import Path

from tests.live.webui_harness import WebUIConfig, is_forge_neo, launch_command


def _checkout(tmp_path: Path, version: str) -> Path:
    (tmp_path / "modules_forge").mkdir()
    (tmp_path / "modules_forge" / "forge_version.py").write_text(f'version = "{version}"\nrelease = "2.26"\n')
    return tmp_path


def test_neo_is_recognised_by_its_version_module(tmp_path: Path) -> None:
    assert not is_forge_neo(tmp_path)
    assert is_forge_neo(_checkout(tmp_path, "neo"))


def test_other_forge_versions_keep_the_a1111_flags(tmp_path: Path) -> None:
    assert not is_forge_neo(_checkout(tmp_path, "2.0.1"))


def test_neo_launch_command_is_cpu_api_and_loopback(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path, "neo")
    cmd = launch_command(WebUIConfig(checkout, Path("/py"), extra_args=("--ckpt-dirs", "/m")), 7902)
    assert cmd[:2] == ["/py", "launch.py"]
    for flag in ("--skip-python-version-check", "--skip-torch-cuda-test", "--skip-prepare-environment", "--cpu",
                 "--api"):  # fmt: skip
        assert flag in cmd
    assert cmd[cmd.index("--server-name") + 1] == "127.0.0.1"
    assert "--use-cpu" not in cmd and "--listen" not in cmd
    assert cmd[cmd.index("--port") + 1] == "7902" and cmd[-2:] == ["--ckpt-dirs", "/m"]
