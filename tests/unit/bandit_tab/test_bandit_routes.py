"""HTTP routes of the seed bandit (FastAPI router over BanditService): shapes, validation, status codes.

starlette 0.26's TestClient (fastapi 0.94, A1111's pin) does not work with httpx 0.28, so requests go through
httpx's own ASGI transport.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from lib_ext.bandit.hosting import ServiceProvider
from lib_ext.bandit.routes import PREFIX, make_router
from lib_ext.bandit.service import ImageResult
from lib_ext.bandit.store import DB_FILENAME, Store, unacknowledged_backups


class Client:
    def __init__(self, app: FastAPI):
        self.app = app

    def request(self, method: str, url: str, **kw) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.request(method, PREFIX + url, **kw)

        return asyncio.run(go())

    def get(self, url: str, **kw) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw) -> httpx.Response:
        return self.request("POST", url, **kw)

    def patch(self, url: str, **kw) -> httpx.Response:
        return self.request("PATCH", url, **kw)


@pytest.fixture
def setup(tmp_path):
    provider = ServiceProvider(tmp_path / "data", seed=0)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    app = FastAPI()
    app.include_router(make_router(provider, allowed_roots=lambda: [tmp_path / "outputs"]))
    yield Client(app), provider, tmp_path
    provider.close()


def _round(provider, sid: int, folder: Path, k: int = 4) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)

    def generate(jobs):
        out = []
        for j in jobs:
            p = folder / f"{j.round_number}_{j.index}.png"
            p.write_bytes(b"png" + bytes(str(j.seed), "ascii"))
            out.append(ImageResult(j, str(p)))
        return out

    return provider().run_round(sid, generate, k=k)["images"]


def test_sessions_arms_rating_and_stats(setup):
    client, provider, tmp = setup
    r = client.post(
        "/sessions", json={"name": "evening", "mode": "find_best", "settings": {"steps": 4}, "epsilon": 0.05}
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["options"]["mode"] == "find_best" and r.json()["options"]["epsilon"] == 0.05
    bad = client.post("/sessions", json={"name": "x", "epsilon": 0.9})
    assert bad.status_code == 422 and "epsilon" in bad.text
    assert client.post("/sessions", json={"name": "x", "stop_rule": "p_best"}).status_code == 422
    assert [s["id"] for s in client.get("/sessions").json()] == [sid]
    a = client.post(f"/sessions/{sid}/arms", json={"prompt": "a cat", "label": "cat"})
    b = client.post(f"/sessions/{sid}/arms", json={"prompt": "a {red|blue} dog", "negative": "blurry"})
    assert a.status_code == b.status_code == 201
    assert b.json()["is_template"] and b.json()["slots"] == [["red", "blue"]]
    assert len(client.get(f"/sessions/{sid}/arms").json()) == 2

    images = _round(provider, sid, tmp / "data" / "images")
    r = client.post(f"/images/{images[0]['id']}/rating", json={"rating": "like", "client": "api"})
    assert r.status_code == 200 and r.json()["rating"] == "like"
    client.post(f"/images/{images[1]['id']}/rating", json={"rating": "dislike"})
    st = client.get(f"/sessions/{sid}/stats", params={"draws": 1000}).json()
    rows = {row["arm_id"]: row for row in st["arms"]}
    liked_arm, disliked_arm = images[0]["arm_id"], images[1]["arm_id"]
    assert rows[liked_arm]["likes"] >= 1 and rows[disliked_arm]["dislikes"] >= 1
    assert sum(row["n"] for row in st["arms"]) == 2  # pending images are no observation
    assert {"mean", "ci_low", "ci_high", "p_best"} <= set(rows[liked_arm])
    assert st["mode"] == "find_best" and st["stop"]["kind"] == "continue" and not st["stop"]["stop"]
    assert st["stop"]["epsilon"] == 0.05 and set(st["stop"]["arm_ids"]) == {liked_arm, disliked_arm}

    pending = client.get(f"/sessions/{sid}/images", params={"rating": "pending"}).json()
    assert len(pending) == 2
    undone = client.post(f"/sessions/{sid}/undo", json={"client": "api"}).json()["undone"]
    assert undone == [{"image_id": images[0]["id"], "value": "pending", "rater": ""}]
    rest = client.post(f"/rounds/{images[0]['round_id']}/mark-rest", json={}).json()
    assert len(rest["image_ids"]) == 3
    assert client.get(f"/sessions/{sid}/images", params={"rating": "pending"}).json() == []


def test_patch_edits_and_retires_arms(setup):
    client, provider, _ = setup
    sid = client.post("/sessions", json={"name": "s"}).json()["id"]
    arm = client.post(f"/sessions/{sid}/arms", json={"prompt": "a cat"}).json()
    r = client.patch(f"/arms/{arm['id']}", json={"label": "kitty"})
    assert r.status_code == 200 and r.json()["id"] == arm["id"] and r.json()["label"] == "kitty"
    r = client.patch(f"/arms/{arm['id']}", json={"prompt": "a black cat"})
    new = r.json()
    assert new["id"] != arm["id"] and new["prompt"] == "a black cat"  # a new version; the old one is retired
    assert client.get(f"/arms/{arm['id']}").json()["retired"] is True
    r = client.patch(f"/arms/{new['id']}", json={"retired": True})
    assert r.json()["retired"] is True
    assert client.get(f"/sessions/{sid}/arms", params={"include_retired": False}).json() == []


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("GET", "/sessions/999/arms", None, 404),
        ("GET", "/sessions/999/stats", None, 404),
        ("PATCH", "/arms/999", {"label": "x"}, 404),
        ("POST", "/images/999/rating", {"rating": "like"}, 404),
        ("POST", "/rounds/999/mark-rest", {}, 404),
        ("GET", "/sessions/abc/arms", None, 422),
        ("GET", "/sessions/0/arms", None, 422),
        ("GET", "/sessions/-3/stats", None, 422),
        ("POST", "/sessions", {"name": ""}, 422),
        ("POST", "/sessions", {"name": "x", "mode": "greedy"}, 422),
        ("POST", "/sessions", {"name": "x", "round_size": 0}, 422),
        ("POST", "/sessions", {"name": "x", "half_life_hours": -1}, 422),
        ("POST", "/sessions", {"name": "x", "unknown": 1}, 422),
        ("POST", "/sessions", {"name": "x", "settings": [1, 2]}, 422),
        ("POST", "/images/1/rating", {"rating": "love"}, 422),
        ("POST", "/images/1/rating", {}, 422),
        ("GET", "/sessions/1/stats?draws=5", None, 422),
        ("GET", "/sessions/1/images?rating=great", None, 422),
        ("GET", "/images/0/file", None, 422),
    ],
)
def test_bad_input_is_a_clear_4xx(setup, method, url, body, status):
    client, _, _ = setup
    client.post("/sessions", json={"name": "exists"})
    r = client.request(method, url, json=body) if body is not None else client.request(method, url)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_bad_arm_values_are_422_with_the_services_message(setup):
    client, _, _ = setup
    sid = client.post("/sessions", json={"name": "s"}).json()["id"]
    r = client.post(f"/sessions/{sid}/arms", json={"prompt": "a {red|blue dog"})
    assert r.status_code == 422
    assert "{" in r.json()["detail"] or "slot" in r.json()["detail"].lower()
    r = client.post(f"/sessions/{sid}/arms", json={"prompt": "   "})
    assert r.status_code == 422 and "prompt" in r.json()["detail"]
    r = client.post(f"/sessions/{sid}/arms", json={"prompt": "a\x00b"})
    assert r.status_code == 422


def test_image_files_are_served_only_from_allowed_folders(setup):
    client, provider, tmp = setup
    sid = client.post("/sessions", json={"name": "s"}).json()["id"]
    client.post(f"/sessions/{sid}/arms", json={"prompt": "a cat"})
    inside = _round(provider, sid, tmp / "data" / "images", k=1)[0]
    r = client.get(f"/images/{inside['id']}/file")
    assert r.status_code == 200 and r.content.startswith(b"png")
    outside = _round(provider, sid, tmp / "elsewhere", k=1)[0]
    assert client.get(f"/images/{outside['id']}/file").status_code == 403
    allowed = _round(provider, sid, tmp / "outputs", k=1)[0]
    assert client.get(f"/images/{allowed['id']}/file").status_code == 200
    Path(allowed["path"]).unlink()
    assert client.get(f"/images/{allowed['id']}/file").status_code == 404


def test_unusable_data_folder_is_reported_not_500(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    app = FastAPI()
    app.include_router(make_router(ServiceProvider(blocker)))
    r = Client(app).get("/sessions")
    assert r.status_code == 422 and "not a folder" in r.json()["detail"]


def _damage(provider: ServiceProvider, folder: Path) -> None:
    """Close the service and overwrite the database with garbage (what a failing disk leaves)."""
    provider.close()
    for suffix in ("-wal", "-shm"):
        Path(str(folder / DB_FILENAME) + suffix).unlink(missing_ok=True)
    (folder / DB_FILENAME).write_bytes(b"not a database, a damaged disk block " * 200)


def test_a_moved_aside_database_answers_503_until_acknowledged(setup, caplog):
    client, provider, tmp = setup
    assert client.post("/sessions", json={"name": "rated for hours"}).status_code == 201
    _damage(provider, tmp / "data")
    with caplog.at_level("WARNING", logger="promptscope"):
        first = client.get("/sessions")
        again = [client.get("/sessions"), client.post("/sessions", json={"name": "x"}), client.get("/sessions/1")]
    assert first.status_code == 503
    backup = unacknowledged_backups(tmp / "data")[0]
    assert str(backup) in first.json()["detail"] and "store/acknowledge" in first.json()["detail"]
    for r in again:  # never a new, empty database while nobody has seen that the old one was moved aside
        assert r.status_code == 503 and str(backup) in r.json()["detail"], r.text
    assert str(backup) in caplog.text  # and the console said so
    status = client.get("/store").json()
    assert status["unacknowledged_backups"] == [str(backup)]
    assert status["database"] == str((tmp / "data" / DB_FILENAME).resolve())

    # a restart (a new provider on the same folder) still refuses: the fact is on disk
    app2 = FastAPI()
    provider2 = ServiceProvider(tmp / "data", seed=0)
    app2.include_router(make_router(provider2))
    assert Client(app2).get("/sessions").status_code == 503
    provider2.close()

    r = client.post("/store/acknowledge")
    assert r.status_code == 200 and r.json()["acknowledged"] == [str(backup)]
    assert client.get("/sessions").json() == []  # the new, empty database
    assert client.get("/store").json()["unacknowledged_backups"] == []
    assert client.post("/store/acknowledge").json()["acknowledged"] == []
    assert backup.read_bytes().startswith(b"not a database")  # the backup stays for the user


def test_a_database_moved_aside_by_another_process_is_neither_served_nor_written(setup):
    client, provider, tmp = setup
    sid = client.post("/sessions", json={"name": "old"}).json()["id"]
    old = provider()
    backup = tmp / "data" / f"{DB_FILENAME}.corrupt-20260101-000000"
    for suffix in ("", "-wal", "-shm"):  # what another process's quarantine does
        if Path(str(tmp / "data" / DB_FILENAME) + suffix).exists():
            os.replace(str(tmp / "data" / DB_FILENAME) + suffix, str(backup) + suffix)
    r = client.post("/sessions", json={"name": "would land in the backup"})
    assert r.status_code == 503 and str(backup) in r.json()["detail"]
    assert old.store.closed  # the service on the moved file is closed, not reused after the acknowledgement
    assert client.post("/store/acknowledge").status_code == 200
    assert client.get("/sessions").json() == []
    with Store(tmp / "data", filename=backup.name, checkpoint_seconds=None) as moved:
        assert [s["name"] for s in moved.list_sessions()] == ["old"] and sid == 1


@pytest.mark.parametrize(
    ("origin", "headers", "allowed"),
    [
        (None, {}, True),  # a script or curl: no browser, no cross-site request
        ("http://test", {}, True),  # the server's own page
        ("http://test:80", {}, True),
        ("https://test", {"x-forwarded-proto": "https"}, True),  # behind a TLS proxy that passes Host on
        ("https://test", {}, False),
        ("http://evil.example", {}, False),
        ("http://test.evil.example", {}, False),
        ("http://test:8080", {}, False),
        ("http://evil.example", {"x-forwarded-proto": "http"}, False),
        ("null", {}, False),  # sandboxed frames, file:// pages
        ("not a url", {}, False),
    ],
)
def test_a_rating_from_a_page_of_another_origin_is_refused(setup, origin, headers, allowed):
    client, provider, tmp = setup
    sid = client.post("/sessions", json={"name": "s"}).json()["id"]
    client.post(f"/sessions/{sid}/arms", json={"prompt": "a cat"})
    image = _round(provider, sid, tmp / "data" / "images", k=1)[0]
    sent = {**headers, **({"origin": origin} if origin is not None else {})}
    r = client.post(f"/images/{image['id']}/rating", json={"rating": "like"}, headers=sent)
    rating = provider().get_image(image["id"])["rating"]
    if allowed:
        assert r.status_code == 200 and rating == "like", r.text
    else:
        assert r.status_code == 403 and rating == "pending", r.text
        assert origin in r.json()["detail"] and "another origin" in r.json()["detail"]


def test_every_route_that_changes_data_refuses_a_foreign_origin_and_reads_do_not(setup):
    client, provider, tmp = setup
    client.post("/sessions", json={"name": "s"})
    client.post("/sessions/1/arms", json={"prompt": "a cat"})  # (stats of a session without arms is a 500: #13)
    foreign = {"origin": "http://evil.example"}
    checked = set()
    for route in client.app.routes:
        for method in sorted(getattr(route, "methods", None) or ()):
            url = route.path.removeprefix(PREFIX).replace("{session_id}", "1").replace("{arm_id}", "1")
            url = url.replace("{image_id}", "1").replace("{round_id}", "1")
            if not route.path.startswith(PREFIX) or method in ("HEAD", "OPTIONS"):
                continue
            r = client.request(method, url, json={}, headers=foreign)
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                assert r.status_code == 403, (method, url, r.text)
                checked.add((method, route.path))
            else:
                assert r.status_code != 403, (method, url, r.text)
    assert len(checked) >= 7  # sessions, arms, arm patch, rating, undo, mark-rest, store/acknowledge
    assert [s["name"] for s in client.get("/sessions").json()] == ["s"]  # nothing was created or changed
    assert [a["prompt"] for a in client.get("/sessions/1/arms").json()] == ["a cat"]


def test_stats_of_a_session_without_arms_is_plain_json(setup):
    client, _provider, _tmp = setup
    sid = client.post("/sessions", json={"name": "empty", "mode": "find_best"}).json()["id"]
    r = client.get(f"/sessions/{sid}/stats")
    assert r.status_code == 200, r.text
    assert r.json()["stop"]["kind"] == "none" and r.json()["stop"]["more_ratings"] is None
    assert r.json()["stop"]["reason"] == "no active arms"


def test_the_rating_view_routes_upcoming_image_and_attachment(setup):
    """What the page's rating view reads: the next images in order (`upcoming`), one image, an attachment file."""
    client, provider, tmp = setup
    sid = client.post("/sessions", json={"name": "fast"}).json()["id"]
    client.post(f"/sessions/{sid}/arms", json={"prompt": "a cat", "label": "cat"})
    images = _round(provider, sid, tmp / "data" / "images")
    ids = [im["id"] for im in images]
    grid = tmp / "data" / "images" / "grid.png"
    grid.write_bytes(b"grid")
    with provider().store._write() as conn:  # an attached heatmap grid, as the hosts record it
        conn.execute("UPDATE images SET attachments = ? WHERE id = ?", (f'[{{"path": "{grid}", "caption": "g"}}]',
                                                                          ids[1]))  # fmt: skip
    r = client.get(f"/sessions/{sid}/upcoming", params={"n": 3, "start": ids[1], "exclude": f"{ids[2]}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [im["id"] for im in body["images"]] == [ids[1], ids[3], ids[0]] and body["pending"] == 4
    assert body["images"][0]["arm_label"] == "cat" and body["images"][0]["attachments"][0]["caption"] == "g"
    client.post(f"/images/{ids[0]}/rating", json={"rating": "like", "rater": "ann"})
    # no start: the backlog rule picks the arm's newest pending image, then the rest of its round
    got = [im["id"] for im in client.get(f"/sessions/{sid}/upcoming?rater=ann&n=8").json()["images"]]
    assert got == [ids[3], ids[1], ids[2]]
    one = client.get(f"/images/{ids[0]}?rater=ann").json()
    assert one["rating"] == "like" and one["ratings"] == {"ann": "like"}
    assert client.get(f"/images/{ids[1]}/attachments/0").content == b"grid"
    assert client.get(f"/images/{ids[1]}/attachments/1").status_code == 404
    assert client.get(f"/images/{ids[0]}/attachments/0").status_code == 404
    assert client.get(f"/sessions/{sid}/upcoming?exclude=1,x").status_code == 422
    assert client.get(f"/sessions/{sid}/upcoming?n=33").status_code == 422
    outside = tmp / "elsewhere" / "x.png"
    outside.write_bytes(b"x")
    with provider().store._write() as conn:
        conn.execute("UPDATE images SET attachments = ? WHERE id = ?", (f'[{{"path": "{outside}"}}]', ids[2]))
    assert client.get(f"/images/{ids[2]}/attachments/0").status_code == 403
