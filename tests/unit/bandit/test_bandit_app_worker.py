"""Real worker processes: the standalone app (`python -m lib_ext.app`) serves /sdapi/v1/txt2img for a queue; a worker
killed with SIGKILL mid-queue loses nothing (its job goes to the other worker)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench._sim_worker import SimWorker
from lib_ext.bandit.hosting import ServiceProvider
from lib_ext.bandit.queue import QueueRunner

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lib_ext.app", "--port", str(port), "--threads", "1", "--data-dir",
         str(tmp_path / f"app{port}")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "PromptScope app on" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        proc.wait()
        pytest.fail("the app did not start: " + "".join(lines[-20:]))
    return proc, f"http://127.0.0.1:{port}"


def test_app_process_is_a_worker_and_its_death_loses_nothing(tmp_path):
    proc, url = start_app(tmp_path)
    provider = ServiceProvider(tmp_path / "data", seed=0)
    runner = QueueRunner(provider, None, poll_seconds=0.05, backoff_scale=0.05)
    try:
        svc = provider()
        sid = svc.create_session("w", {"steps": 3, "cfg_scale": 5}, round_size=2)["id"]
        svc.add_arm(sid, "a red circle")
        svc.add_arm(sid, "a blue square")
        runner.add_worker(sid, url)
        q = runner.start(sid, 3, use_local=False)
        assert runner.wait(q["id"], 120)
        assert runner.status(q["id"])["counts"]["done"] == 3
        from PIL import Image

        for im in svc.images(sid):
            with Image.open(im["path"]) as png:
                text = png.info["parameters"]
            assert "Model: toyworld" in text and f"PromptScope session: {sid}" in text and "PromptScope job: " in text
        # kill -9 the app worker mid-queue: the simulated worker finishes, nothing lost or made twice
        with SimWorker(0.3) as other:
            runner.add_worker(sid, other.url)
            q = runner.start(sid, 12, use_local=False)
            deadline = time.time() + 60
            while svc.store.get_queue(q["id"])["counts"]["done"] < 2 and time.time() < deadline:
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert runner.wait(q["id"], 120)
            st = runner.status(q["id"])
            assert st["counts"]["done"] == 12 and st["counts"]["failed"] == 0
            jobs = svc.store.list_queue_jobs(q["id"])
            assert len({j["image_id"] for j in jobs}) == 12
            assert len(svc.images(sid)) == 15
            assert len({i["path"] for i in svc.images(sid)}) == 15
    finally:
        runner.close()
        provider.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
