"""HTTP routes of the generate-ahead queue: start a queue or a round, watch it, cancel it; workers; next image."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI
from test_bandit_routes import Client

from bench._sim_worker import SimWorker
from lib_ext.bandit.hosting import ServiceProvider
from lib_ext.bandit.queue import QueueRunner
from lib_ext.bandit.routes import make_router


@pytest.fixture
def api(tmp_path):
    provider = ServiceProvider(tmp_path / "data", seed=0)
    runner = QueueRunner(provider, None, poll_seconds=0.02, backoff_scale=0.02, heartbeat_seconds=0.2)
    app = FastAPI()
    app.include_router(make_router(provider, runner=runner))
    bare = FastAPI()
    bare.include_router(make_router(provider))
    svc = provider()
    sid = svc.create_session("api", {"steps": 5}, round_size=3)["id"]
    for p in ("a", "b"):
        svc.add_arm(sid, p)
    with SimWorker(0.01) as worker:
        yield Client(app), Client(bare), runner, svc, sid, worker
        runner.close()
    provider.close()


def _wait(client, qid, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        q = client.get(f"/queues/{qid}").json()
        if q["state"] != "running" and not q["running_here"]:
            return q
        time.sleep(0.05)
    raise AssertionError(f"queue {qid} still running: {q}")


def test_queue_round_watch_cancel(api):
    client, _bare, _runner, svc, sid, worker = api
    r = client.post(f"/sessions/{sid}/workers", json={"url": worker.url})
    assert r.status_code == 201 and r.json()["url"] == worker.url
    r = client.post(f"/sessions/{sid}/queue", json={"images": 7, "local": False})
    assert r.status_code == 202, r.text
    q = _wait(client, r.json()["id"])
    assert q["state"] == "done" and q["counts"]["done"] == 7 and q["failed_jobs"] == []
    assert len(svc.images(sid)) == 7
    # a round: the session's round size, generated in the background as one round
    r = client.post(f"/sessions/{sid}/rounds", json={"local": False})
    assert r.status_code == 202 and r.json()["total"] == 3
    q = _wait(client, r.json()["id"])
    assert q["counts"]["done"] == 3
    assert svc.store.list_rounds(sid)[-1]["k"] == 3
    assert [x["id"] for x in client.get(f"/sessions/{sid}/queues").json()] == [q["id"] - 1, q["id"]]
    workers = client.get(f"/sessions/{sid}/workers").json()
    assert workers[0]["done"] == 10 and workers[0]["errors"] == 0
    # cancel
    worker.latency = 0.2
    r = client.post(f"/sessions/{sid}/queue", json={"images": 100, "local": False})
    qid = r.json()["id"]
    r = client.post(f"/queues/{qid}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    q = _wait(client, qid)
    assert q["counts"]["pending"] == 0 and q["counts"]["claimed"] == 0 and q["counts"]["done"] < 20
    assert q["counts"]["done"] + q["counts"]["cancelled"] == q["planned"] < 100
    # the next image to rate, by the backlog rule
    nxt = client.get(f"/sessions/{sid}/next-image").json()
    assert nxt["pending"] == len(svc.images(sid)) and nxt["image"]["rating"] == "pending"


def test_queue_errors_are_clear(api):
    client, bare, _runner, _svc, sid, worker = api
    r = client.post(f"/sessions/{sid}/queue", json={"images": "5"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "images"
    r = client.post(f"/sessions/{sid}/queue", json={"images": 5, "extra": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "extra"
    r = client.post(f"/sessions/{sid}/queue", json={"images": 0, "local": False})
    assert r.status_code == 422 and "images must be an integer from 1" in r.json()["detail"]
    r = client.post(f"/sessions/{sid}/queue", json={"images": 3, "local": False})
    assert r.status_code == 422 and "no workers" in r.json()["detail"]
    r = client.post(f"/sessions/{sid}/queue", json={"images": 3})
    assert r.status_code == 422 and "cannot generate images itself" in r.json()["detail"]
    r = client.post(f"/sessions/{sid}/rounds", json={"k": 0, "local": False})
    assert r.status_code == 422 and "k must be" in r.json()["detail"]
    assert client.post("/sessions/999/queue", json={"images": 3}).status_code == 404
    assert client.get("/queues/999").status_code == 404
    assert client.post("/queues/999/cancel").status_code == 404
    assert client.get("/queues/0").status_code == 422
    for body, msg in (
        ({"url": "ftp://x"}, "http:// or https://"),
        ({"url": "http://u:p@h:1"}, "must not contain a user name or password"),
        ({"url": "http://h:1", "username": "u"}, "both worker username and password"),
    ):
        r = client.post(f"/sessions/{sid}/workers", json=body)
        assert r.status_code == 422 and msg in r.json()["detail"], r.text
    r = client.post(f"/sessions/{sid}/workers", json={"url": worker.url, "username": "u", "password": "secret"})
    assert r.status_code == 201 and "password" not in r.json() and r.json()["has_password"]
    assert "secret" not in client.get(f"/sessions/{sid}/workers").text
    assert client.post(f"/sessions/{sid}/workers", json={"url": worker.url}).status_code == 409
    # a second queue while one runs: 409
    worker.latency = 0.3
    first = client.post(f"/sessions/{sid}/queue", json={"images": 50, "local": False}).json()
    r = client.post(f"/sessions/{sid}/queue", json={"images": 1, "local": False})
    assert r.status_code == 409 and "already has a running queue" in r.json()["detail"]
    client.post(f"/queues/{first['id']}/cancel")
    wid = client.get(f"/sessions/{sid}/workers").json()[0]["id"]
    assert client.request("DELETE", f"/workers/{wid}").json()["removed"] is True
    assert client.request("DELETE", "/workers/999").status_code == 404
    # another origin's page may not start, cancel or add workers
    r = client.post(f"/sessions/{sid}/queue", json={"images": 1}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    r = client.request("DELETE", f"/workers/{wid}", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    # a host without a runner says so
    assert bare.post(f"/sessions/{sid}/queue", json={"images": 1}).status_code == 501
