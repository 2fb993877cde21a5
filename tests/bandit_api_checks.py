"""A hostile client of the seed-bandit HTTP API (issue 13), run against each host's FastAPI app: the standalone app
(tests/unit/bandit_tab/test_bandit_api_hostile.py) and the A1111 v1.10.1 double (tests/host/...).

Every check talks HTTP only. Server errors come back as 500 responses (not raised into the test), so a check
fails on the status code a client would see.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PREFIX = "/promptscope/v1/bandit"
MAX_ID = 2**63 - 1


class Api:
    def __init__(self, app: Any):
        self.app = app

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.request(method, PREFIX + url, **kw)

        return asyncio.run(go())


def seed_session(api: Api, settings: dict[str, Any]) -> tuple[int, int]:
    """A session with one arm: (session id, arm id)."""
    r = api.request("POST", "/sessions", json={"name": "hostile", "settings": settings})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    r = api.request("POST", f"/sessions/{sid}/arms", json={"prompt": "a cat"})
    assert r.status_code == 201, r.text
    return sid, r.json()["id"]


# Every route that takes an id, with the id in the path or the query ({id}); {sid} is an existing session.
ID_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/sessions/{id}", None),
    ("PATCH", "/sessions/{id}", {"learn_from": "ann"}),
    ("GET", "/sessions/{id}/raters", None),
    ("GET", "/sessions/{id}/stats?rater=ann", None),
    ("GET", "/sessions/{id}/arms", None),
    ("POST", "/sessions/{id}/arms", {"prompt": "x"}),
    ("GET", "/arms/{id}", None),
    ("PATCH", "/arms/{id}", {"label": "x"}),
    ("PATCH", "/arms/{id}", {"prompt": "y", "retired": True}),
    ("GET", "/sessions/{id}/stats", None),
    ("GET", "/sessions/{id}/history", None),
    ("GET", "/sessions/{id}/images", None),
    ("GET", "/sessions/{sid}/images?arm_id={id}", None),
    ("GET", "/sessions/{sid}/images?round_id={id}", None),
    ("POST", "/images/{id}/rating", {"rating": "like"}),
    ("POST", "/sessions/{id}/undo", None),
    ("POST", "/rounds/{id}/mark-rest", None),
    ("GET", "/images/{id}/file", None),
    ("GET", "/images/{id}", None),
    ("GET", "/images/{id}/attachments/0", None),
    ("GET", "/sessions/{id}/upcoming", None),
    ("GET", "/sessions/{sid}/upcoming?start={id}", None),
    ("GET", "/sessions/{sid}/upcoming?after={id}", None),
]

BAD_IDS = st.one_of(
    st.sampled_from([0, -1, MAX_ID + 1, 2**64, -(2**63) - 1]),
    st.integers(min_value=MAX_ID + 1, max_value=2**200),
    st.integers(max_value=0, min_value=-(2**200)),
    st.integers(min_value=1000, max_value=MAX_ID),  # in range but no such row
)


def check_ids_never_500(api: Api, sid: int) -> None:
    """Any id on any route: 404 (no such id) or 422 (not a positive id), never a server error."""

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(route=st.sampled_from(ID_ROUTES), bad=BAD_IDS)
    def run(route: tuple[str, str, dict[str, Any] | None], bad: int) -> None:
        method, url, body = route
        r = api.request(method, url.format(id=bad, sid=sid), json=body)
        if "arm_id=" in url or "round_id=" in url:  # a filter: an id that does not exist matches nothing
            assert r.status_code in (200, 404, 422), (method, url, bad, r.status_code, r.text)
            if r.status_code == 200:
                assert r.json() == []
                return
        else:
            assert r.status_code in (404, 422), (method, url, bad, r.status_code, r.text)
        assert r.json()["detail"]

    run()
    for method, url, body in ID_ROUTES:  # the boundary on every route, not left to chance
        r = api.request(method, url.format(id=MAX_ID + 1, sid=sid), json=body)
        assert r.status_code == 404 and "no " in r.json()["detail"], (url, r.status_code, r.text)


def check_bodies_are_strict(api: Api, sid: int, arm: int) -> None:
    """pydantic's lax coercions ("yes" → true, 5 → "5", "8" → 8, a list of pairs → an object) are 422s."""
    image = 10**9  # the body is checked before the id is looked up
    cases = [
        ("POST", "/sessions", {"name": 5}),
        ("POST", "/sessions", {"name": "x", "shared_seeds": "yes"}),
        ("POST", "/sessions", {"name": "x", "shared_seeds": 1}),
        ("POST", "/sessions", {"name": "x", "round_size": "8"}),
        ("POST", "/sessions", {"name": "x", "round_size": 8.0}),
        ("POST", "/sessions", {"name": "x", "half_life_hours": True}),
        ("POST", "/sessions", {"name": "x", "half_life_hours": "2"}),
        ("POST", "/sessions", {"name": "x", "p_best_threshold": "0.9"}),
        ("POST", "/sessions", {"name": "x", "stop_rule": 1}),
        ("POST", "/sessions", {"name": "x", "settings": [["steps", 20]]}),
        ("POST", f"/sessions/{sid}/arms", {"prompt": 123}),
        ("POST", f"/sessions/{sid}/arms", {"prompt": "x", "negative": False}),
        ("POST", f"/sessions/{sid}/arms", {"prompt": "x", "label": 7}),
        ("PATCH", f"/arms/{arm}", {"retired": "yes"}),
        ("PATCH", f"/arms/{arm}", {"retired": 0}),
        ("PATCH", f"/arms/{arm}", {"label": 3}),
        ("PATCH", f"/arms/{arm}", {"prompt": ["a", "b"]}),
        ("POST", f"/images/{image}/rating", {"rating": "like", "client": 7}),
        ("POST", f"/sessions/{sid}/undo", {"client": 7}),
        ("POST", "/rounds/1/mark-rest", {"client": True}),
        ("POST", f"/images/{image}/rating", {"rating": "like", "rater": 7}),
        ("POST", f"/images/{image}/rating", {"rating": "like", "rater": None}),
        ("POST", f"/sessions/{sid}/undo", {"rater": ["ann"]}),
        ("POST", "/rounds/1/mark-rest", {"rater": False}),
        ("POST", "/sessions", {"name": "x", "learn_from": 1}),
        ("PATCH", f"/sessions/{sid}", {"learn_from": True}),
        ("PATCH", f"/sessions/{sid}", {"round_size": "8"}),
        ("PATCH", f"/sessions/{sid}", {"rater": "ann"}),
    ]
    for method, url, body in cases:
        r = api.request(method, url, json=body)
        assert r.status_code == 422, (method, url, body, r.status_code, r.text)
    # a JSON integer is a number: half_life_hours 2 means 2.0
    r = api.request("POST", "/sessions", json={"name": "ints", "half_life_hours": 2, "p_best_threshold": 0.9})
    assert r.status_code == 201 and r.json()["options"]["half_life_hours"] == 2, r.text
    assert api.request("PATCH", f"/arms/{arm}", json={"label": "still strict"}).status_code == 200


def check_settings_are_validated(api: Api, sid: int, arm: int, good: dict[str, Any], host_bad: list[dict]) -> None:
    """Bad generation settings on POST session / POST arm / PATCH arm: 422 naming the key; nothing is stored.
    `good`: settings this host can use; `host_bad`: settings valid elsewhere that this host cannot use."""
    bad_settings = [
        ({"steps": -5}, "'steps' must be an integer"),
        ({"steps": "many"}, "'steps' must be an integer"),
        ({"cfg_scale": True}, "'cfg_scale' must be a number"),
        ({"step": 20}, "unknown setting 'step'"),
        ({"seed": 1}, "the bandit chooses the seeds"),
        ({"heatmaps": {"colour": "red"}}, "unknown key(s) ['colour']"),
        *[(s, repr(next(iter(s)))) for s in host_bad],
    ]
    before_sessions = api.request("GET", "/sessions").json()
    before_arms = api.request("GET", f"/sessions/{sid}/arms").json()
    for settings_, words in bad_settings:
        for method, url, body in (
            ("POST", "/sessions", {"name": "bad", "settings": settings_}),
            ("POST", f"/sessions/{sid}/arms", {"prompt": "bad", "settings": settings_}),
            ("PATCH", f"/arms/{arm}", {"settings": settings_}),
        ):
            r = api.request(method, url, json=body)
            assert r.status_code == 422, (method, url, body, r.status_code, r.text)
            assert words in r.json()["detail"], (words, r.json()["detail"])
    assert api.request("GET", "/sessions").json() == before_sessions
    assert api.request("GET", f"/sessions/{sid}/arms").json() == before_arms
    r = api.request("POST", "/sessions", json={"name": "good", "settings": good})
    assert r.status_code == 201 and r.json()["settings"] == good, r.text
    r = api.request("PATCH", f"/arms/{arm}", json={"settings": good})
    assert r.status_code == 200 and r.json()["settings"] == good and not r.json()["retired"], r.text


def check_patching_a_retired_arm_keeps_it_retired(api: Api, sid: int) -> None:
    """Editing a retired arm makes a new version that stays retired; `"retired": false` restores it."""
    arm = api.request("POST", f"/sessions/{sid}/arms", json={"prompt": "a dog"}).json()["id"]
    assert api.request("PATCH", f"/arms/{arm}", json={"retired": True}).json()["retired"] is True
    r = api.request("PATCH", f"/arms/{arm}", json={"prompt": "a black dog"})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["id"] != arm and new["parent_id"] == arm and new["prompt"] == "a black dog" and new["retired"] is True
    active = api.request("GET", f"/sessions/{sid}/arms?include_retired=false").json()
    assert new["id"] not in [a["id"] for a in active] and arm not in [a["id"] for a in active]
    r = api.request("PATCH", f"/arms/{new['id']}", json={"prompt": "a white dog", "retired": False})
    assert r.status_code == 200 and r.json()["retired"] is False and r.json()["prompt"] == "a white dog", r.text
    assert r.json()["id"] in [a["id"] for a in api.request("GET", f"/sessions/{sid}/arms").json() if not a["retired"]]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from([10**400, -(10**400), 2**63, 0, 1, -1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
EXTREMES = [10**400, -(10**400), 2**63, -(2**63) - 1, 1e308, -1e308, 5e-324, "", "x" * 300, [], {}, None, True]
SETTING_KEYS = ["steps", "cfg_scale", "width", "height", "sampler_name", "scheduler", "batch_size",
                "denoising_strength", "heatmaps", "semantic_guidance", "script_args", "seed"]  # fmt: skip
BODY_FIELDS: list[tuple[str, str, list[str]]] = [
    ("POST", "/sessions", ["name", "mode", "shared_seeds", "half_life_hours", "prior", "round_size", "stop_rule",
                           "p_best_threshold"]),
    ("POST", "/sessions/{sid}/arms", ["prompt", "negative", "label"]),
    ("PATCH", "/arms/{arm}", ["prompt", "negative", "label", "retired"]),
    ("POST", "/images/1/rating", ["rating", "client"]),
    ("POST", "/sessions/{sid}/undo", ["client"]),
    ("POST", "/rounds/1/mark-rest", ["rating", "client"]),
]  # fmt: skip
BASE_BODY = {"/sessions": {"name": "n"}, "/sessions/{sid}/arms": {"prompt": "p"}}


def check_bodies_never_500(api: Api, sid: int, arm: int) -> None:
    """Any JSON value in any body field, or as any generation setting: a 2xx or a 4xx, never a server error."""

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(route=st.sampled_from(BODY_FIELDS), data=st.data())
    def fields(route: tuple[str, str, list[str]], data: st.DataObject) -> None:
        method, url, names = route
        name = data.draw(st.sampled_from(names))
        body = {**BASE_BODY.get(url, {}), name: data.draw(JSON)}
        r = api.request(method, url.format(sid=sid, arm=arm), json=body)
        assert r.status_code < 500, (method, url, body, r.status_code, r.text)

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(key=st.sampled_from(SETTING_KEYS), value=JSON, where=st.sampled_from(["session", "arm", "patch"]))
    def setting(key: str, value: Any, where: str) -> None:
        method, url, body = {
            "session": ("POST", "/sessions", {"name": "n"}),
            "arm": ("POST", f"/sessions/{sid}/arms", {"prompt": "p"}),
            "patch": ("PATCH", f"/arms/{arm}", {}),
        }[where]
        r = api.request(method, url, json={**body, "settings": {key: value}})
        assert r.status_code < 500, (method, url, key, value, r.status_code, r.text)
        if r.status_code == 422:
            assert key in r.json()["detail"] or "settings" in str(r.json()["detail"]), r.text

    fields()
    setting()
    for method, url, names in BODY_FIELDS:  # the extremes in every field, not left to chance
        for name in names:
            for value in EXTREMES:
                body = {**BASE_BODY.get(url, {}), name: value}
                r = api.request(method, url.format(sid=sid, arm=arm), json=body)
                assert r.status_code < 500, (method, url, body, r.status_code, r.text)
    for key in SETTING_KEYS:
        for value in [*EXTREMES, {"alpha": 10**400}, {"cfg_rescale": 10**400}, {"words": [10**400]}]:
            r = api.request("POST", "/sessions", json={"name": "n", "settings": {key: value}})
            assert r.status_code < 500, (key, value, r.status_code, r.text)


def check_raters(api: Api, sid: int, images: list[int], round_id: int) -> None:
    """Issue 14: ratings name their rater; each rater's own rating, filter and undo; "disagree"; the views of the
    statistics; `learn_from`; agreement. `images`: at least three pending images of session `sid`'s round."""
    a, b, c = images[:3]

    def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
        r = api.request("POST", url, json=body)
        assert r.status_code == 200, (url, body, r.status_code, r.text)
        return r.json()

    def get(url: str) -> Any:
        r = api.request("GET", url)
        assert r.status_code == 200, (url, r.status_code, r.text)
        return r.json()

    assert post(f"/images/{a}/rating", {"rating": "like", "rater": "ann"})["rater"] == "ann"
    post(f"/images/{a}/rating", {"rating": "dislike", "rater": "bob", "client": "script"})
    assert post(f"/images/{b}/rating", {"rating": "like"})["rater"] == ""  # the unnamed rater
    post(f"/images/{b}/rating", {"rating": "like", "rater": "bob", "client": "script"})
    post(f"/images/{b}/rating", {"rating": "like", "rater": "ann"})
    shown = get(f"/sessions/{sid}/images?rating=disagree")
    assert [i["id"] for i in shown] == [a] and shown[0]["ratings"] == {"ann": "like", "bob": "dislike"}
    assert [i["id"] for i in get(f"/sessions/{sid}/images?rating=like&rater=ann")] == [a, b]
    assert [i["id"] for i in get(f"/sessions/{sid}/images?rating=like")] == [b]  # the unnamed rater's
    assert c in [i["id"] for i in get(f"/sessions/{sid}/images?rating=pending&rater=bob")]
    # views of the statistics; the session learns from every rater until told otherwise
    st = get(f"/sessions/{sid}/stats")
    assert st["view"] == "pooled" and sum(r["likes"] for r in st["arms"]) == 4
    assert sum(r["dislikes"] for r in st["arms"]) == 1
    assert get(f"/sessions/{sid}/stats?rater=bob")["view"] == "bob"
    assert sum(r["likes"] for r in get(f"/sessions/{sid}/stats?rater=ann")["arms"]) == 2
    assert sum(r["likes"] for r in get(f"/sessions/{sid}/stats?rater=")["arms"]) == 1  # empty: the unnamed rater
    r = api.request("PATCH", f"/sessions/{sid}", json={"learn_from": "bob"})
    assert r.status_code == 200 and r.json()["options"]["learn_from"] == "bob", r.text
    assert get(f"/sessions/{sid}/stats")["view"] == "bob"
    assert get(f"/sessions/{sid}/history")["view"] == "bob"
    info = get(f"/sessions/{sid}/raters")
    assert [x["rater"] for x in info["raters"]] == ["", "ann", "bob"] and info["disagreements"] == 1
    pair = next(p for p in info["agreement"] if (p["a"], p["b"]) == ("ann", "bob"))
    assert pair["n"] == 2 and pair["counts"] == {"both_like": 1, "a_only": 1, "b_only": 0, "both_dislike": 0}
    # bob's undo (same client as nobody else) takes back only bob's last rating
    undone = post(f"/sessions/{sid}/undo", {"client": "script", "rater": "bob"})["undone"]
    assert undone == [{"image_id": b, "value": "pending", "rater": "bob"}]
    assert get(f"/sessions/{sid}/images?rating=like&rater=ann")[1]["ratings"] == {"": "like", "ann": "like"}
    marked = post(f"/rounds/{round_id}/mark-rest", {"rater": "ann"})
    assert a not in marked["image_ids"] and c in marked["image_ids"] and marked["rater"] == "ann"
    # bad values: 422 naming the field
    for method, url, body, field in [
        ("POST", f"/images/{a}/rating", {"rating": "like", "rater": "pooled"}, "rater"),
        ("POST", f"/images/{a}/rating", {"rating": "like", "rater": "x" * 101}, "rater"),
        ("PATCH", f"/sessions/{sid}", {"learn_from": "a\nb"}, "learn_from"),
        ("GET", f"/sessions/{sid}/images?rater=pooled", None, "rater"),
        ("GET", f"/sessions/{sid}/images?rating=argue", None, "rating"),
        ("GET", f"/sessions/{sid}/stats?rater=" + "y" * 101, None, "rater"),
    ]:
        r = api.request(method, url, json=body)
        assert r.status_code == 422 and field in r.text, (method, url, body, r.status_code, r.text)
    r = api.request("PATCH", f"/sessions/{sid}", json={"learn_from": "pooled", "name": "renamed"})
    assert r.status_code == 200 and r.json()["options"]["learn_from"] == "pooled" and r.json()["name"] == "renamed"
