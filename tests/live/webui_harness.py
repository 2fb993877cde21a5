"""Runs a real A1111 WebUI checkout for the live tests: links our extension in, starts the server on 127.0.0.1,
talks to its API with the standard library only, and always stops it again.

Nothing here imports the WebUI: the server is a separate process with its own interpreter (its venv).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

ENV_CHECKOUT = "PROMPTSCOPE_WEBUI"
ENV_PYTHON = "PROMPTSCOPE_WEBUI_PYTHON"
ENV_ARGS = "PROMPTSCOPE_WEBUI_ARGS"
ENV_PORT = "PROMPTSCOPE_WEBUI_PORT"
ENV_START_TIMEOUT = "PROMPTSCOPE_WEBUI_START_TIMEOUT"
ENV_LOG = "PROMPTSCOPE_WEBUI_LOG"

# CPU, offline, API on, no environment preparation (no git clones, no pip, no install.py runs).
BASE_ARGS = (
    "--skip-prepare-environment",
    "--skip-install",
    "--skip-torch-cuda-test",
    "--skip-version-check",
    "--no-download-sd-model",
    "--use-cpu",
    "all",
    "--no-half",
    "--precision",
    "full",
    "--api",
    "--api-server-stop",
)
# Forge Neo (detected from its own `modules_forge/forge_version.py`): its launcher's flags for CPU, offline, API on;
# `--server-name 127.0.0.1` because Neo binds 0.0.0.0 otherwise in some modes.
NEO_BASE_ARGS = ("--skip-python-version-check", "--skip-torch-cuda-test", "--skip-prepare-environment", "--cpu",
                 "--api", "--api-server-stop", "--server-name", "127.0.0.1")  # fmt: skip
# The server must stay on the loopback interface: these would expose it.
FORBIDDEN_ARGS = ("--listen", "--share", "--server-name", "--ngrok", "--cors-allow-origins-regex")
# A1111 (and Forge) print this once the API routes exist and on_app_started callbacks have run.
READY_LINE = "Startup time:"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


class HarnessError(RuntimeError):
    """The WebUI could not be prepared or started; the message says why."""


@dataclass(frozen=True)
class WebUIConfig:
    checkout: Path
    python: Path
    extra_args: tuple[str, ...] = ()
    port: int | None = None
    start_timeout: float = 600.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WebUIConfig | None:
        """None when PROMPTSCOPE_WEBUI is unset or empty (the live tier is then skipped)."""
        env = dict(os.environ if env is None else env)
        raw = env.get(ENV_CHECKOUT, "").strip()
        if not raw:
            return None
        checkout = Path(raw).expanduser().resolve()
        python = Path(env.get(ENV_PYTHON) or checkout / "venv" / "bin" / "python").expanduser()
        port = int(env[ENV_PORT]) if env.get(ENV_PORT) else None
        timeout = float(env.get(ENV_START_TIMEOUT) or 600.0)
        return cls(checkout, python, tuple(shlex.split(env.get(ENV_ARGS, ""))), port, timeout)

    def problems(self) -> list[str]:
        out = []
        if not (self.checkout / "launch.py").is_file():
            out.append(f"{self.checkout} has no launch.py: {ENV_CHECKOUT} must name an A1111 WebUI checkout")
        if not os.access(self.python, os.X_OK):
            out.append(f"no interpreter at {self.python}: set {ENV_PYTHON}")
        for arg in self.extra_args:
            if arg.split("=", 1)[0] in FORBIDDEN_ARGS:
                out.append(f"{ENV_ARGS} may not contain {arg}: the test server binds 127.0.0.1 only")
        return out

    @property
    def data_dir(self) -> Path:
        """Where the WebUI looks for extensions: `--data-dir` if the extra args give one, else the checkout."""
        args = list(self.extra_args)
        for i, arg in enumerate(args):
            if arg == "--data-dir" and i + 1 < len(args):
                return Path(args[i + 1]).expanduser().resolve()
            if arg.startswith("--data-dir="):
                return Path(arg.split("=", 1)[1]).expanduser().resolve()
        return self.checkout


SETTINGS_ARG = "--ui-settings-file"  # A1111's settings (config.json): output folders, disabled extensions, ...
# A1111 v1.10's output folders. The UI's jobs use `outdir_samples`/`outdir_grids` when set, but its API's jobs
# always take the per-tab ones (`p.outpath_samples = opts.outdir_txt2img_samples`), whose defaults are under
# <checkout>/outputs: every one is redirected, or an API job that saves (heatmap exports) writes into the checkout.
SCRATCH_OUTDIRS = {"outdir_samples": "samples", "outdir_grids": "grids", "outdir_save": "saved",
                   "outdir_init_images": "init-images", "outdir_txt2img_samples": "txt2img-images",
                   "outdir_img2img_samples": "img2img-images", "outdir_extras_samples": "extras-images",
                   "outdir_txt2img_grids": "txt2img-grids", "outdir_img2img_grids": "img2img-grids"}  # fmt: skip


def scratch_settings(config: WebUIConfig, folder: Path) -> WebUIConfig:
    """`config` with the server's settings file replaced by a copy in `folder` (of the checkout's config.json, or of
    the file the extra args name) whose output folders are inside `folder`, and without params.txt
    (`--no-prompt-history`): what the server generates or saves, and any settings it writes, stay out of the
    checkout. The original file is only read."""
    args = list(config.extra_args)
    source = config.data_dir / "config.json"
    for i, arg in enumerate(args):
        if arg == SETTINGS_ARG and i + 1 < len(args):
            source = config.checkout / args[i + 1]  # the server's working directory is the checkout
            del args[i : i + 2]
            break
        if arg.startswith(SETTINGS_ARG + "="):
            source = config.checkout / arg.split("=", 1)[1]
            del args[i]
            break
    settings = json.loads(source.read_text(encoding="utf8")) if source.is_file() else {}
    folder.mkdir(parents=True, exist_ok=True)
    settings.update({key: str(folder / "outputs" / name) for key, name in SCRATCH_OUTDIRS.items()})
    target = folder / "config.json"
    target.write_text(json.dumps(settings, indent=4), encoding="utf8")
    args += [SETTINGS_ARG, str(target)]
    if "--no-prompt-history" not in args:
        args.append("--no-prompt-history")
    return dataclasses.replace(config, extra_args=tuple(args))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def is_forge_neo(checkout: Path) -> bool:
    """The checkout is Forge Neo: its version module says `version = "neo"`."""
    version = checkout / "modules_forge" / "forge_version.py"
    return version.is_file() and re.search(r"^version\s*=\s*[\"']neo[\"']", version.read_text("utf8"), re.M) is not None


def launch_command(config: WebUIConfig, port: int) -> list[str]:
    base = NEO_BASE_ARGS if is_forge_neo(config.checkout) else BASE_ARGS
    return [str(config.python), "launch.py", *base, "--port", str(port), *config.extra_args]


@dataclass
class ExtensionLink:
    """`<data dir>/extensions/<name>` pointing at our repository. Removed afterwards only if we made it."""

    extensions_dir: Path
    name: str = "promptscope"
    target: Path = REPO_ROOT
    created: bool = field(default=False, init=False)

    @property
    def path(self) -> Path:
        return self.extensions_dir / self.name

    def install(self) -> None:
        link = self.path
        if link.is_symlink() or link.exists():
            if link.resolve() == self.target.resolve():
                return  # someone linked it already: leave it as we found it
            raise HarnessError(f"{link} exists and is not a link to {self.target}; move it away to run the live tests")
        self.extensions_dir.mkdir(parents=True, exist_ok=True)
        link.symlink_to(self.target, target_is_directory=True)
        self.created = True

    def remove(self) -> None:
        if self.created and self.path.is_symlink():
            self.path.unlink()
        self.created = False


_TRACEBACK_START = re.compile(r"^\s*Traceback \(most recent call last\):", re.MULTILINE)
# A1111 prints `*** Error running process: <file>` (modules/errors.py report) before a traceback.
_A1111_ERROR = re.compile(r"^\*\*\* .*$", re.MULTILINE)
# Not ours: A1111 reads the git remote of every extension, and a checkout without an `origin` makes it print this.
HOST_NOISE = ("*** Failed reading extension data from Git repository",)


def traceback_blocks(log: str) -> list[str]:
    """Each traceback in a console log, from its 'Traceback' line (plus A1111's '*** Error ...' line before it)
    to the exception line: the first later line that is not indented."""
    blocks = []
    lines = log.splitlines()
    i = 0
    while i < len(lines):
        if _TRACEBACK_START.match(lines[i]):
            start = i
            if i > 0 and _A1111_ERROR.match(lines[i - 1]):
                start = i - 1
            j = i + 1
            indent = len(lines[i]) - len(lines[i].lstrip())
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
                j += 1
            end = min(j + 1, len(lines))  # include the exception line itself
            blocks.append("\n".join(lines[start:end]))
            i = end
        else:
            i += 1
    return blocks


def errors_mentioning(log: str, needle: str, ignore: Sequence[str] = ()) -> list[str]:
    """Tracebacks and A1111 '*** Error' lines of `log` that mention `needle` (case-insensitive), except those
    containing one of the `ignore` strings."""
    needle = needle.lower()
    found = [b for b in traceback_blocks(log) if needle in b.lower()]
    seen = "\n".join(found).lower()
    for m in _A1111_ERROR.finditer(log):
        line = m.group(0)
        if needle in line.lower() and line.lower() not in seen:
            found.append(line)
    return [f for f in found if not any(i in f for i in ignore)]


class WebUIClient:
    """Small JSON client for the WebUI's API. Ignores proxy settings: the server is on 127.0.0.1."""

    def __init__(self, base_url: str, log_path: Path | None = None, request_timeout: float = 900.0):
        self.base_url = base_url.rstrip("/")
        self.log_path = log_path
        self.request_timeout = request_timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(req, timeout=timeout or self.request_timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:2000]
            raise AssertionError(f"{method} {path} -> HTTP {e.code}: {detail}") from e
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")  # e.g. server-stop answers a bare "Stopping."

    def get(self, path: str, timeout: float | None = None) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any = None, timeout: float | None = None) -> Any:
        return self.request("POST", path, body if body is not None else {}, timeout=timeout)

    def txt2img(
        self, prompt: str = "a red cube on a table", alwayson: dict[str, Sequence[Any]] | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """A deliberately tiny generation (64x64, 2 steps, Euler, fixed seed); `alwayson` maps a script title
        to its args in `ui()` order. Returns the API answer with 'info' parsed from JSON."""
        return self._generate("/sdapi/v1/txt2img", prompt, alwayson, overrides)

    def img2img(
        self,
        init_image: str,
        prompt: str = "a red cube on a table",
        alwayson: dict[str, Sequence[Any]] | None = None,
        **overrides: Any,
    ) -> dict[str, Any]:
        """Like txt2img from a base64 image (e.g. one txt2img returned), denoising strength 0.5."""
        body = {"init_images": [init_image], "denoising_strength": 0.5, **overrides}
        return self._generate("/sdapi/v1/img2img", prompt, alwayson, body)

    def _generate(
        self, path: str, prompt: str, alwayson: dict[str, Sequence[Any]] | None, overrides: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": prompt,
            "negative_prompt": "",
            "width": 64,
            "height": 64,
            "steps": 2,
            "cfg_scale": 5.0,
            "sampler_name": "Euler",
            "seed": 1234,
            "batch_size": 1,
            "n_iter": 1,
            "send_images": True,
            "save_images": False,
        }
        if alwayson:
            body["alwayson_scripts"] = {title: {"args": list(args)} for title, args in alwayson.items()}
        body.update(overrides)
        res = self.post(path, body)
        if isinstance(res.get("info"), str):
            res["info"] = json.loads(res["info"])
        return res

    def log(self) -> str:
        """The server's console output so far (stdout and stderr)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_since(self, offset: int) -> str:
        return self.log()[offset:]


def wait_for_reload(client: WebUIClient, ready_lines_before: int, timeout: float = 600.0) -> float:
    """After a Reload UI request: waits until the console shows one more READY_LINE than `ready_lines_before` (the
    scripts were loaded again and on_app_started ran) and the API answers. Returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if client.log().count(READY_LINE) > ready_lines_before:
            try:
                client.get("/sdapi/v1/options", timeout=5)
                return time.monotonic() - t0
            except (OSError, AssertionError):
                pass
        time.sleep(0.5)
    raise AssertionError(f"the WebUI did not come back from Reload UI in {timeout:.0f} s")


def decode_image(b64: str) -> bytes:
    """The PNG bytes of an image the API returned (base64, maybe with a data: prefix)."""
    if b64.startswith("data:"):
        b64 = b64.split(",", 1)[1]
    return base64.b64decode(b64)


def png_size(png: bytes) -> tuple[int, int]:
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


class WebUIServer:
    """One WebUI process in its own process group. Use as a context manager: stopping always happens."""

    def __init__(
        self,
        config: WebUIConfig,
        log_path: Path,
        extra_extensions: dict[str, Path] | None = None,
        extra_env: dict[str, str] | None = None,
        promptscope: bool = True,
    ):
        """`extra_extensions` maps a folder name under extensions/ to a directory to link there for the run
        (test-only extensions); `extra_env` is added to the server's environment; `promptscope=False` runs the
        WebUI without our extension (the reference a feature-off image must equal)."""
        self.config = config
        self.log_path = log_path
        self.port = config.port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        ext_dir = config.data_dir / "extensions"
        self.link = ExtensionLink(ext_dir)
        self.links = [self.link] if promptscope else []
        self.extra_links = [ExtensionLink(ext_dir, name, target) for name, target in (extra_extensions or {}).items()]
        self.extra_env = dict(extra_env or {})
        self.start_seconds: float | None = None
        self.client = WebUIClient(f"http://127.0.0.1:{self.port}", log_path)

    def __enter__(self) -> WebUIServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        problems = self.config.problems()
        if problems:
            raise HarnessError("; ".join(problems))
        if port_in_use(self.port):
            raise HarnessError(f"port {self.port} on 127.0.0.1 is already in use")
        if not self.links and self.link.path.exists():
            raise HarnessError(f"{self.link.path} exists: cannot run the WebUI without PromptScope")
        for link in (*self.links, *self.extra_links):
            link.install()
        env = {**os.environ, **OFFLINE_ENV, **self.extra_env}
        env.pop("PYTHONPATH", None)  # pytest's path must not leak into the WebUI's interpreter
        env.pop("WEBUI_RICH_EXCEPTIONS", None)  # keep A1111's plain '*** Error' + traceback format for the checks
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                launch_command(self.config, self.port),
                cwd=self.config.checkout,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() can end it and every child
            )
        atexit.register(self._kill_group)
        self._wait_ready(t0)
        self.start_seconds = time.monotonic() - t0

    def _wait_ready(self, t0: float) -> None:
        # No request may reach the server before A1111 has added its API: the first request makes starlette build
        # its middleware stack, and A1111's create_api() then dies with "Cannot add middleware after an
        # application has started". So wait for the line it prints after that (and after on_app_started).
        deadline = t0 + self.config.start_timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise HarnessError(f"WebUI exited with code {self.proc.returncode} while starting:\n{self._tail()}")
            if READY_LINE in self.client.log():
                try:
                    self.client.get("/sdapi/v1/options", timeout=5)
                    return
                except (OSError, AssertionError):
                    pass
            time.sleep(0.5)
        waited = f"{self.config.start_timeout:.0f} s"
        raise HarnessError(f"WebUI was not ready ({READY_LINE!r}, /sdapi/v1/options) in {waited}:\n{self._tail()}")

    def _tail(self, n: int = 60) -> str:
        return "\n".join(self.client.log().splitlines()[-n:])

    def stop(self, grace: float = 30.0) -> None:
        try:
            proc = self.proc
            if proc is not None and proc.poll() is None:
                if "--api-server-stop" in launch_command(self.config, self.port):
                    # The server may drop the connection while it stops; nothing here may keep us from ending it.
                    with contextlib.suppress(Exception):
                        self.client.post("/sdapi/v1/server-stop", timeout=10)
                    _wait(proc, grace)
                if proc.poll() is None:
                    self._signal_group(signal.SIGTERM)
                    _wait(proc, min(grace, 15.0))
                if proc.poll() is None:
                    self._kill_group()
        finally:
            atexit.unregister(self._kill_group)
            for link in (*self.links, *self.extra_links):
                link.remove()

    def _signal_group(self, sig: signal.Signals) -> None:
        # Only while our leader is alive and unreaped, so its pid (= the group id) cannot belong to anyone else.
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _kill_group(self) -> None:
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            _wait(self.proc, 10.0)


def _wait(proc: subprocess.Popen[bytes], seconds: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=seconds)


def running_server(config: WebUIConfig, log_path: Path) -> Iterator[WebUIServer]:
    """Generator form for a pytest fixture: starts, yields, always stops."""
    with WebUIServer(config, log_path) as server:
        yield server
