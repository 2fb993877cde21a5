"""Generate ahead in the v1.10.1 double: a queue runs in the background through A1111's pipeline under its queue
lock, is started and watched over the routes, and resumes after the scripts are unloaded and started again."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/promptscope/v1/bandit"


@pytest.fixture
def webui(booted_webui):
    return booted_webui


def call(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.request(method, PREFIX + path, **kw)

    return asyncio.run(go())


def wait_done(app: Any, qid: int, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        q = call(app, "GET", f"/queues/{qid}").json()
        if q["state"] != "running" and not q["running_here"]:
            return q
        time.sleep(0.05)
    raise AssertionError(f"queue {qid} did not finish: {q}")


def test_queue_runs_in_the_background_under_the_queue_lock(webui, sd_model, tmp_path):
    m, demo, app = webui
    b = sys.modules["promptscope_a1111.bandit_tab"]
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    tab = b.current_tab
    value = tab.create_session("q", '{"steps": 2, "width": 64, "height": 64}', None, None, 0, 2, False)[0]["value"]
    tab.add_arm(value, "a cat", "", "", "")
    tab.add_arm(value, "a dog", "", "", "")
    locked = []

    def probe(params):  # runs inside processing, on the queue's thread
        locked.append(m.call_queue.queue_lock._is_owned())

    m.script_callbacks.on_cfg_denoiser(probe)
    try:
        r = call(app, "POST", "/sessions/1/queue", json={"images": 3})
        assert r.status_code == 202, r.text
        q = wait_done(app, r.json()["id"])
    finally:
        m.script_callbacks.remove_callbacks_for_function(probe)
    assert q["counts"]["done"] == 3 and locked and all(locked)
    assert m.shared.state.job == "" and not m.shared.state.interrupted
    images = b.provider().images(1)
    assert len(images) == 3
    for im in images:
        info = Image.open(im["path"]).info["parameters"]
        params = m.infotext_utils.parse_generation_parameters(info)
        ref = sys.modules["promptscope_lib_ext.bandit"].bandit_ref_from_infotext(params)
        assert ref is not None and ref["arm"] == im["arm_id"] and "PromptScope job" in params
    # the tab's accordion sees the same queue
    html = tab.queue.view(value)[0]
    assert "finished · 3 / 3 images" in html


def test_unloading_stops_the_queue_and_the_next_start_resumes_it(webui, sd_model, tmp_path):
    m, demo, app = webui
    b = sys.modules["promptscope_a1111.bandit_tab"]
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    svc = b.provider()
    sid = svc.create_session("r", {"steps": 2, "width": 64, "height": 64}, round_size=2)["id"]
    svc.add_arm(sid, "a cat")
    gate = []

    def slow(params):  # 0.3 s an image: the unload lands mid-queue even on a busy machine
        time.sleep(0.15)
        gate.append(1)

    m.script_callbacks.on_cfg_denoiser(slow)
    try:
        q = b.runner.start(sid, 6)
        while len(gate) < 3:
            time.sleep(0.01)
        b.on_unloaded()  # A1111's script_unloaded: threads joined, claims given back
        mid = svc.store.get_queue(q["id"]) if not svc.store.closed else b.provider().store.get_queue(q["id"])
        assert mid["state"] == "running" and mid["counts"]["claimed"] == 0 and mid["counts"]["done"] < 6
        b.on_app_started(demo, app.__class__())  # the next start resumes it
        assert b.runner.wait(q["id"], 60)
        st = b.runner.status(q["id"])
        assert st["counts"]["done"] == 6
        jobs = b.provider().store.list_queue_jobs(q["id"])
        assert len({j["image_id"] for j in jobs}) == 6 and len(b.provider().images(sid)) == 6
    finally:
        m.script_callbacks.remove_callbacks_for_function(slow)


def test_worker_script_titles_match_the_scripts(webui):
    from promptscope_lib_ext.bandit import workers

    from promptscope_a1111.guidance_script import TITLE as guidance
    from promptscope_a1111.heatmaps_script import TITLE as heatmaps

    assert (guidance, heatmaps) == (workers.GUIDANCE_SCRIPT, workers.HEATMAPS_SCRIPT)
