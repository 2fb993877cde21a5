"""Live tier: tests against a real A1111 WebUI checkout named by PROMPTSCOPE_WEBUI; skipped when it is unset.

    PROMPTSCOPE_WEBUI=/path/to/stable-diffusion-webui          the checkout (required)
    PROMPTSCOPE_WEBUI_PYTHON=/path/to/python                    default: <checkout>/venv/bin/python
    PROMPTSCOPE_WEBUI_ARGS="--ckpt models/Stable-diffusion/x.safetensors"   extra launch args (e.g. the model)
    PROMPTSCOPE_WEBUI_PORT=7861                                  default: a free port
    PROMPTSCOPE_WEBUI_START_TIMEOUT=600                          seconds until the API answers
    PROMPTSCOPE_WEBUI_LOG=/tmp/webui-console.log                 the server's console; default: pytest's tmp dir

The session links this repository into `<checkout>/extensions/promptscope` and the probe extension
(tests/live/probe_extension) into `extensions/ps-live-probe`, starts the server on 127.0.0.1 with `--api`,
`--api-server-stop` and CPU flags, offline (HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1), and always stops it and
removes the links it made, also when a test fails. Nothing it makes lands in the checkout: the server reads a
temporary copy of its settings with the output folders in a temporary folder (`--ui-settings-file`, no params.txt),
and the seed bandit's data go to another (PROMPTSCOPE_BANDIT_DIR; fixture `bandit_dir`). The checkout must
already be set up (its venv, repositories/, a checkpoint, and offline: the CLIP tokenizer/config in the local
Hugging Face cache); nothing is installed.

Run: PROMPTSCOPE_WEBUI=/path/to/webui .venv/bin/python -m pytest -q -s tests/live   (-s shows the timings)
Add a feature test: a file here with `pytestmark = pytest.mark.live` that takes the `webui` fixture and calls
`webui.txt2img(prompt, alwayson={SCRIPT_TITLES["guidance"]: [True, ...]})` (args in ui() order; missing args
take the UI defaults); use the `probe` fixture to see the host's hook and denoiser-callback events of a job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live.webui_harness import (
    ENV_CHECKOUT,
    ENV_LOG,
    HOST_NOISE,
    HarnessError,
    WebUIClient,
    WebUIConfig,
    WebUIServer,
    errors_mentioning,
    is_forge_neo,
    scratch_settings,
)

# The titles our always-on scripts show in the WebUI (and that `alwayson_scripts` keys use). One place to adjust.
SCRIPT_TITLES = {
    "guidance": "PromptScope: Semantic guidance",
    "heatmaps": "PromptScope: Attention heatmaps",
}
# The extension must show these in the txt2img and img2img script lists: the feature scripts and the base script
# that opens the sampling session ("PromptScope", promptscope_a1111/base_script.py).
EXPECTED_ALWAYSON_TITLES = ("PromptScope", *SCRIPT_TITLES.values())

LIVE_DIR = Path(__file__).resolve().parent
# A test-only extension linked next to ours: it records the host's hook order (see probe_extension/scripts).
PROBE_DIR = LIVE_DIR / "probe_extension"
PROBE_LINK_NAME = "ps-live-probe"
PROBE_TITLE = "Live probe"
# Errors the probe raises on purpose; the console checks skip them.
PROBE_DELIBERATE = "live-probe: deliberate failure"
CONSOLE_IGNORE = (*HOST_NOISE, PROBE_DELIBERATE)
SKIP_REASON = f"live tier: set {ENV_CHECKOUT} to an A1111 WebUI checkout to run it"
# The seed bandit's data folder (promptscope_a1111/bandit_tab.py ENV_DIR): a temporary folder for the whole session.
BANDIT_DIR_ENV = "PROMPTSCOPE_BANDIT_DIR"


# A1111-only facts of this tier (its hook order and denoisers, `batch_cond_uncond`, the "Latent" upscaler name):
# skipped when the checkout is Forge Neo; test_live_neo.py holds the Neo counterparts.
A1111_ONLY = ("test_live_host_hooks.py", "test_live_features.py::test_both_features_through_hires_fix_with_batch")


def running_neo() -> bool:
    config = WebUIConfig.from_env()
    return config is not None and is_forge_neo(config.checkout)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unset = WebUIConfig.from_env() is None
    neo = running_neo()
    for item in items:
        if neo and any(key in item.nodeid for key in A1111_ONLY):
            item.add_marker(pytest.mark.skip(reason="an A1111 fact; Forge Neo differs (see test_live_neo.py)"))
        if LIVE_DIR not in Path(str(item.fspath)).resolve().parents:
            continue
        if item.get_closest_marker("live") is None:
            # A test here without the marker would escape `-m "not live"` and run without its skip: refuse it.
            raise pytest.UsageError(f"{item.nodeid}: tests under tests/live/ must be marked @pytest.mark.live")
        if unset:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="session")
def webui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebUIServer]:
    config = WebUIConfig.from_env()
    if config is None:
        pytest.skip(SKIP_REASON)
    log_path = Path(os.environ.get(ENV_LOG) or tmp_path_factory.mktemp("webui") / "webui-console.log")
    probe_log = log_path.with_name(log_path.stem + "-probe.jsonl")
    # Nothing the server makes lands in the checkout: A1111's settings and output folders are a temporary copy, and
    # the seed bandit's store (opened when its tab is built at start-up) is a temporary folder.
    config = scratch_settings(config, tmp_path_factory.mktemp("webui-settings"))
    bandit_dir = tmp_path_factory.mktemp("bandit-data")
    try:
        server = WebUIServer(
            config,
            log_path,
            extra_extensions={PROBE_LINK_NAME: PROBE_DIR},
            extra_env={"PROMPTSCOPE_PROBE_LOG": str(probe_log), BANDIT_DIR_ENV: str(bandit_dir)},
        ).__enter__()
    except HarnessError as e:
        pytest.fail(f"live tier: {e}", pytrace=False)
    try:
        print(f"\n[live] WebUI up on port {server.port} in {server.start_seconds:.1f} s; console log: {log_path}")
        yield server
    finally:
        server.stop()
    # Also catches errors printed during tests that ran after test_console_has_no_promptscope_traceback.
    bad = errors_mentioning(server.client.log(), "promptscope", ignore=CONSOLE_IGNORE)
    if bad:
        pytest.fail("PromptScope errors in the WebUI console:\n\n" + "\n\n".join(bad), pytrace=False)


@pytest.fixture(scope="session")
def webui(webui_server: WebUIServer) -> WebUIClient:
    """The API client of the running WebUI (see WebUIClient: get, post, txt2img, log)."""
    return webui_server.client


@pytest.fixture(scope="session")
def bandit_dir(webui_server: WebUIServer) -> Path:
    """The seed bandit's data folder of the running WebUI (temporary; never the checkout's outputs)."""
    return Path(webui_server.extra_env[BANDIT_DIR_ENV])


class Probe:
    """Runs one generation with the probe on and returns the events the host produced, in order."""

    def __init__(self, client: WebUIClient, log_path: Path):
        self.client = client
        self.log_path = log_path

    def txt2img(self, action: str = "", **kw: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str]:
        """(API answer or None if the request failed, events, error text)."""
        self.log_path.unlink(missing_ok=True)
        alwayson = {PROBE_TITLE: [True, action], **kw.pop("alwayson", {})}
        answer, error = None, ""
        try:
            answer = self.client.txt2img(alwayson=alwayson, **kw)
        except AssertionError as e:
            error = str(e)
        events = []
        if self.log_path.exists():
            events = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        return answer, events, error


@pytest.fixture(scope="session")
def probe(webui_server: WebUIServer) -> Probe:
    return Probe(webui_server.client, Path(webui_server.extra_env["PROMPTSCOPE_PROBE_LOG"]))
