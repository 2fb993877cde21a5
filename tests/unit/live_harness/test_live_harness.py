"""The live tier's harness, tested without a WebUI: a stand-in `launch.py` (a stdlib HTTP server) plays the
server, so start, readiness, every stop path and the extension link are exercised for real."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.live.webui_harness import (
    REPO_ROOT,
    ExtensionLink,
    HarnessError,
    WebUIConfig,
    WebUIServer,
    errors_mentioning,
    launch_command,
    png_size,
    traceback_blocks,
)

FAKE_LAUNCH = textwrap.dedent(
    """
    import http.server, json, os, sys, threading
    mode = os.environ.get("FAKE_WEBUI_MODE", "")
    print("args:", " ".join(sys.argv[1:]), flush=True)
    if mode == "crash":
        raise SystemExit("boom: no model")
    if mode == "ignore-term":
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    port = int(sys.argv[sys.argv.index("--port") + 1])

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if not ready:
                print("Cannot add middleware after an application has started", flush=True)
                os._exit(3)
            self._send({"path": self.path})

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n) or b"{}")
            if self.path == "/sdapi/v1/server-stop" and mode not in ("ignore-stop", "ignore-term"):
                # A1111 answers with a bare text body, not JSON.
                self.send_response(200)
                self.send_header("Content-Length", "9")
                self.end_headers()
                self.wfile.write(b"Stopping.")
                threading.Thread(target=srv.shutdown).start()
                return
            self._send({"echo": body})

    ready = False
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    if mode == "slow-ready":
        # Like A1111: the port answers before the API exists, and an early request kills the start.
        serving = threading.Thread(target=srv.serve_forever, daemon=True)
        serving.start()
        import time
        time.sleep(1.5)
        ready = True
        print("Startup time: 1.5s", flush=True)
        serving.join()
        raise SystemExit(0)
    ready = True
    print("Startup time: 0.0s", flush=True)
    srv.serve_forever()
    """
)


def fake_checkout(tmp_path: Path) -> Path:
    checkout = tmp_path / "webui"
    (checkout / "extensions").mkdir(parents=True)
    (checkout / "launch.py").write_text(FAKE_LAUNCH)
    return checkout


def config_for(checkout: Path, **kw: object) -> WebUIConfig:
    return WebUIConfig(checkout, Path(sys.executable), start_timeout=30.0, **kw)  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_config_from_env() -> None:
    assert WebUIConfig.from_env({}) is None
    assert WebUIConfig.from_env({"PROMPTSCOPE_WEBUI": "  "}) is None
    c = WebUIConfig.from_env({"PROMPTSCOPE_WEBUI": "/x/sdw", "PROMPTSCOPE_WEBUI_ARGS": "--ckpt 'a b.safetensors'"})
    assert c is not None
    assert c.checkout == Path("/x/sdw") and c.python == Path("/x/sdw/venv/bin/python")
    assert c.extra_args == ("--ckpt", "a b.safetensors") and c.port is None and c.data_dir == Path("/x/sdw")
    c = WebUIConfig.from_env(
        {
            "PROMPTSCOPE_WEBUI": "/x/sdw",
            "PROMPTSCOPE_WEBUI_PYTHON": "/py",
            "PROMPTSCOPE_WEBUI_PORT": "7999",
            "PROMPTSCOPE_WEBUI_ARGS": "--data-dir=/d",
        }
    )
    assert c is not None and c.python == Path("/py") and c.port == 7999 and c.data_dir == Path("/d")


def test_config_refuses_public_binding_and_missing_checkout(tmp_path: Path) -> None:
    c = WebUIConfig(tmp_path, tmp_path / "nopython", extra_args=("--listen", "--server-name=0.0.0.0"))
    problems = c.problems()
    assert any("launch.py" in p for p in problems)
    assert any("interpreter" in p for p in problems)
    assert sum("127.0.0.1 only" in p for p in problems) == 2


def test_launch_command_binds_loopback_with_api() -> None:
    cmd = launch_command(WebUIConfig(Path("/w"), Path("/py"), extra_args=("--ckpt", "m.safetensors")), 7901)
    assert cmd[:2] == ["/py", "launch.py"]
    assert "--api" in cmd and "--use-cpu" in cmd and "--no-half" in cmd
    assert cmd[cmd.index("--port") + 1] == "7901" and cmd[-2:] == ["--ckpt", "m.safetensors"]
    assert not {"--listen", "--share", "--server-name"} & set(cmd)


def test_extension_link_lifecycle(tmp_path: Path) -> None:
    ext = tmp_path / "extensions"
    link = ExtensionLink(ext)
    link.install()
    assert link.path.is_symlink() and link.path.resolve() == REPO_ROOT
    link.install()  # idempotent
    link.remove()
    assert not link.path.exists() and not link.path.is_symlink()

    # A link someone else made is reused and left in place.
    ext.mkdir(exist_ok=True)
    (ext / "promptscope").symlink_to(REPO_ROOT)
    other = ExtensionLink(ext)
    other.install()
    other.remove()
    assert (ext / "promptscope").is_symlink()

    # A foreign folder of that name is never touched.
    (ext / "promptscope").unlink()
    (ext / "promptscope").mkdir()
    with pytest.raises(HarnessError, match="not a link"):
        ExtensionLink(ext).install()
    assert (ext / "promptscope").is_dir()


def test_traceback_blocks_and_errors_mentioning() -> None:
    log = textwrap.dedent(
        """\
        Loading weights
        *** Error running process: /w/extensions/promptscope/scripts/promptscope.py
            Traceback (most recent call last):
              File "/w/modules/scripts.py", line 825, in process
                script.process(p, *script_args)
              File "/w/extensions/promptscope/promptscope_a1111/base_script.py", line 9, in process
                raise ValueError("bad")
            ValueError: bad

        ---
        Traceback (most recent call last):
          File "/w/modules/other.py", line 1, in f
            x()
        KeyError: 'other'
        done
        *** Error loading script: promptscope_extra.py
        """
    )
    blocks = traceback_blocks(log)
    assert len(blocks) == 2
    assert blocks[0].startswith("*** Error running process") and blocks[0].endswith("ValueError: bad")
    assert blocks[1].endswith("KeyError: 'other'")
    found = errors_mentioning(log, "PromptScope")
    assert len(found) == 2 and found[0] == blocks[0] and found[1] == "*** Error loading script: promptscope_extra.py"
    assert errors_mentioning("Startup time: 3s\nall good\n", "promptscope") == []
    assert errors_mentioning(log, "promptscope", ignore=("promptscope_extra",)) == [blocks[0]]


def test_png_size() -> None:
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (64).to_bytes(4, "big") + (32).to_bytes(4, "big")
    assert png_size(header) == (64, 32)
    with pytest.raises(AssertionError):
        png_size(b"GIF89a" + b"\x00" * 20)


def test_server_starts_answers_and_stops_via_api(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path)
    server = WebUIServer(config_for(checkout), tmp_path / "console.log")
    with server:
        assert server.client.get("/sdapi/v1/options") == {"path": "/sdapi/v1/options"}
        assert server.client.post("/x", {"a": 1}) == {"echo": {"a": 1}}
        assert (checkout / "extensions" / "promptscope").is_symlink()
        pid = server.proc.pid  # type: ignore[union-attr]
        assert server.start_seconds is not None
    assert server.proc is not None and server.proc.returncode == 0  # it stopped itself through server-stop
    assert not alive(pid)
    assert not (checkout / "extensions" / "promptscope").exists()
    log = server.client.log()
    assert "--api" in log and f"--port {server.port}" in log and "--listen" not in log


def test_no_request_before_the_server_says_it_is_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_WEBUI_MODE", "slow-ready")
    server = WebUIServer(config_for(fake_checkout(tmp_path)), tmp_path / "console.log")
    with server:
        assert server.start_seconds is not None and server.start_seconds >= 1.5
        assert server.client.get("/sdapi/v1/options") == {"path": "/sdapi/v1/options"}
    assert "Cannot add middleware" not in server.client.log()


@pytest.mark.parametrize("mode, code", [("ignore-stop", -signal.SIGTERM), ("ignore-term", -signal.SIGKILL)])
def test_server_is_ended_when_it_ignores_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, code: int
) -> None:
    monkeypatch.setenv("FAKE_WEBUI_MODE", mode)
    server = WebUIServer(config_for(fake_checkout(tmp_path)), tmp_path / "console.log")
    server.start()
    t0 = time.monotonic()
    server.stop(grace=1.0)
    assert server.proc is not None and server.proc.returncode == code
    assert time.monotonic() - t0 < 25.0
    assert not server.link.path.exists()


def test_server_that_dies_while_starting_reports_its_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_WEBUI_MODE", "crash")
    checkout = fake_checkout(tmp_path)
    with pytest.raises(HarnessError, match="boom: no model"), WebUIServer(config_for(checkout), tmp_path / "c.log"):
        pass
    assert not (checkout / "extensions" / "promptscope").exists()  # the link is gone after a failed start too


def test_busy_port_is_refused(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        checkout = fake_checkout(tmp_path)
        with pytest.raises(HarnessError, match="already in use"):
            WebUIServer(config_for(checkout, port=port), tmp_path / "c.log").start()
        assert not (checkout / "extensions" / "promptscope").exists()


def test_server_without_promptscope_links_nothing_of_ours(tmp_path: Path) -> None:
    """The reference run of `bench forge_neo` (feature-off images vs the WebUI alone)."""
    checkout = fake_checkout(tmp_path)
    probe = tmp_path / "probe"
    probe.mkdir()
    with WebUIServer(config_for(checkout), tmp_path / "c.log", {"probe": probe}, promptscope=False) as server:
        assert server.client.get("/sdapi/v1/options") == {"path": "/sdapi/v1/options"}
        assert not (checkout / "extensions" / "promptscope").exists()
        assert (checkout / "extensions" / "probe").is_symlink()
    assert not (checkout / "extensions" / "probe").exists()


def test_server_without_promptscope_refuses_a_checkout_that_has_it(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path)
    (checkout / "extensions" / "promptscope").mkdir(parents=True)
    with pytest.raises(HarnessError, match="without PromptScope"):
        WebUIServer(config_for(checkout), tmp_path / "c.log", promptscope=False).start()
