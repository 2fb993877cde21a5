"""The seed-bandit tab wired into the v1.10.1 double: tab, setting, routes, generation under the queue lock."""

from __future__ import annotations

import asyncio
import sys
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


def bandit(m) -> Any:
    return sys.modules["promptscope_a1111.bandit_tab"]


def handler(blocks: Any, component: Any) -> Any:
    """The function gradio calls for a click on `component` (as registered, wrappers included)."""
    for dep, fn in zip(blocks.dependencies, blocks.fns):
        targets = [t[0] if isinstance(t, list | tuple) else t for t in dep["targets"]]
        if component._id in targets:
            return fn.fn
    raise LookupError("no handler for that component")


def get(app: Any, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.get(PREFIX + path)

    return asyncio.run(go())


def _session_with_arms(tab: Any, settings: str = '{"steps": 2, "width": 64, "height": 64}') -> str:
    out = tab.create_session("a1111", settings, None, None, 0, 4, False)
    value = out[0]["value"]
    tab.add_arm(value, "a cat", "", "cat", "")
    tab.add_arm(value, "a {red|blue} dog", "blurry", "", "")
    return value


def test_tab_setting_and_routes_are_registered(webui, tmp_path):
    m, demo, app = webui
    tabs = m.initialize.tabs
    assert [(t[1], t[2]) for t in tabs] == [("Seed bandit", "promptscope_bandit")]
    b = bandit(m)
    assert b.OPT_DIR in m.shared.opts.data_labels
    # blank setting: beside A1111's outputs (the parent of the txt2img folder, or "Output directory for images")
    assert b.default_data_dir() == Path(m.shared.opts.outdir_txt2img_samples).parent / "promptscope-bandit"
    m.shared.opts.data["outdir_samples"] = str(tmp_path / "out")
    assert b.data_dir() == (tmp_path / "out" / "promptscope-bandit").resolve()
    m.shared.opts.data[b.OPT_DIR] = "relative/bandit"  # relative to the WebUI folder, as A1111's output paths
    assert b.data_dir() == (Path(m.paths.script_path) / "relative" / "bandit").resolve()
    (Path(m.paths.script_path) / "relative" / "bandit").rmdir()
    (Path(m.paths.script_path) / "relative").rmdir()
    m.shared.opts.data[b.OPT_DIR] = ""
    r = get(app, "/sessions")
    assert r.status_code == 200 and r.json() == []
    assert not getattr(m.errors, "reported", [])


def test_round_generates_under_the_queue_lock_with_bandit_infotext(webui, sd_model, tmp_path):
    m, demo, app = webui
    b = bandit(m)
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    tab = b.current_tab
    value = _session_with_arms(tab)
    run = handler(tabs_blocks(m), tab.c["run"])
    locked = []

    def probe(params):  # runs inside processing: the queue lock must be held and the job begun
        locked.append(m.call_queue.queue_lock._is_owned())

    # gradio still sees the progress tracker through A1111's wrapper (functools.wraps), so it fills it in
    from gradio.helpers import special_args

    _inputs, progress_index, _ = special_args(run, [value, 3, None, True])
    assert progress_index == 4
    m.script_callbacks.on_cfg_denoiser(probe)
    out = run(value, 3, None, True)
    m.script_callbacks.remove_callbacks_for_function(probe)
    assert locked and all(locked), out[-1]
    status = out[-1]
    assert "Round 1: 3 image(s)" in status and "Time taken" in status  # A1111's wrapper appended its timing
    assert m.shared.state.job_count == 0  # the wrapper ended the job
    images = b.provider().images(1)
    assert len(images) == 3
    for im in images:
        path = Path(im["path"])
        assert path.is_relative_to((tmp_path / "bandit" / "images").resolve())
        info = Image.open(path).info["parameters"]
        params = m.infotext_utils.parse_generation_parameters(info)
        ref = sys.modules["promptscope_lib_ext.bandit"].bandit_ref_from_infotext(params)  # PNG Info → session etc.
        assert ref is not None and ref["session"] == 1 and ref["round"] == 1 and ref["arm"] == im["arm_id"]
        assert int(params["Seed"]) == im["seed"] and params["Prompt"] == im["prompt"]
    # shared seeds: a round's j-th image of every arm uses the same seed
    by_arm: dict[int, list[int]] = {}
    for im in images:
        by_arm.setdefault(im["arm_id"], []).append(im["seed"])
    firsts = {seeds[0] for seeds in by_arm.values()}
    assert len(firsts) == 1
    # rate through the tab; the route sees it
    cur = out[2]
    tab.rate(value, cur, out[3], "like")
    stats = get(app, "/sessions/1/stats?draws=1000").json()
    assert sum(a["likes"] for a in stats["arms"]) == 1


def tabs_blocks(m) -> Any:
    return m.initialize.tabs[0][0]


def test_interrupt_keeps_the_finished_image_and_skips_the_rest(webui, sd_model, tmp_path):
    m, demo, app = webui
    b = bandit(m)
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    tab = b.current_tab
    value = _session_with_arms(tab)
    run = handler(tabs_blocks(m), tab.c["run"])
    interrupt = handler(tabs_blocks(m), tab.c["interrupt"])

    def press_interrupt(params):
        interrupt()

    m.script_callbacks.on_cfg_denoiser(press_interrupt)
    out = run(value, 4, None, False)
    m.script_callbacks.remove_callbacks_for_function(press_interrupt)
    assert "Round 1: 1 image(s) (3 not generated: interrupted)" in out[-1]
    assert len(b.provider().images(1)) == 1
    assert m.shared.state.interrupted is False  # reset by the wrapper for the next job


def test_errors_are_shown_in_the_status_not_raised(webui, tmp_path):
    m, demo, app = webui
    b = bandit(m)
    tab = b.current_tab
    run = handler(tabs_blocks(m), tab.c["run"])
    out = run(None, 4, None, False)
    assert "choose a session first" in out[-1] and len(out) == 6 + sys.modules[type(tab).__module__].N_STATS
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    m.shared.opts.data[b.OPT_DIR] = str(blocker)
    assert "not a folder" in tab.load_session("1 · x")[-1]
    r = get(app, "/sessions")
    assert r.status_code == 422 and "not a folder" in r.json()["detail"]


def test_reload_ui_rebuilds_the_tab_and_routes(webui, tmp_path):
    m, demo, app = webui
    b = bandit(m)
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    b.current_tab.create_session("kept", "{}", None, None, 0, 4, False)
    demo2, app2 = m.initialize.restart_ui()
    assert [(t[1], t[2]) for t in m.initialize.tabs] == [("Seed bandit", "promptscope_bandit")]
    b2 = sys.modules["promptscope_a1111.bandit_tab"]
    m.shared.opts.data[b2.OPT_DIR] = str(tmp_path / "bandit")
    assert [s["name"] for s in get(app2, "/sessions").json()] == ["kept"]


def test_semantic_guidance_works_inside_the_sweep(webui, sd_model, tmp_path):
    m, demo, app = webui
    b = bandit(m)
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    tab = b.current_tab
    value = tab.create_session("guided", '{"steps": 2, "width": 64, "height": 64}', None, None, 0, 2, False)[0]["value"]
    tab.add_arm(value, "a cat AND_TOPK red :0.5", "", "", '{"semantic_guidance": {"mode": "sega", "warmup": 0}}')
    tab.add_arm(value, "a plain dog", "", "", "")
    run = handler(tabs_blocks(m), tab.c["run"])
    out = run(value, 4, "uniform sweep (like an X/Y/Z grid)", False)
    assert "Round 1: 4 image(s)" in out[-1], out[-1]
    for im in b.provider().images(1):
        info = Image.open(im["path"]).info["parameters"]
        if "AND_TOPK" in im["prompt"]:
            assert "Semantic guidance: sega" in info
        else:
            assert "Semantic guidance" not in info


def request(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:7860") as c:
            return await c.request(method, PREFIX + path, **kw)

    return asyncio.run(go())


def test_a_damaged_database_answers_503_until_acknowledged_in_the_tab(webui, tmp_path, caplog):
    m, demo, app = webui
    b = bandit(m)
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    tab = b.current_tab
    tab.create_session("rated for hours", "{}", None, None, 0, 4, False)
    b.provider.close()
    db = tmp_path / "bandit" / "seed_bandit.sqlite3"
    db.write_bytes(b"a damaged disk block " * 300)
    with caplog.at_level("WARNING", logger="promptscope"):
        answers = [get(app, "/sessions"), get(app, "/sessions"), request(app, "POST", "/sessions", json={"name": "x"})]
    backups = sorted(db.parent.glob("seed_bandit.sqlite3.corrupt-*"))
    assert len(backups) == 1
    for r in answers:  # before: only the first call failed; the next ones served a new, empty database
        assert r.status_code == 503 and str(backups[0]) in r.json()["detail"], r.text
    assert str(backups[0]) in caplog.text  # said in the WebUI's console
    assert get(app, "/store").json()["unacknowledged_backups"] == [str(backups[0])]
    demo2, app2 = m.initialize.restart_ui()  # a reload: the new provider still refuses (the fact is on disk)
    b = sys.modules["promptscope_a1111.bandit_tab"]
    assert get(app2, "/sessions").status_code == 503
    tab = b.current_tab
    assert tab.c["store_notice"].visible and str(backups[0]) in tab.c["store_notice"].value
    acknowledge = handler(tabs_blocks(m), tab.c["store_ack"])
    notice, button, status = acknowledge()
    assert not notice["visible"] and not button["visible"] and "Acknowledged" in status
    assert get(app2, "/sessions").json() == [] and backups[0].exists()


def test_a_page_of_another_origin_cannot_change_bandit_data(webui, tmp_path):
    m, demo, app = webui
    b = bandit(m)
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    evil = {"origin": "http://evil.example"}
    r = request(app, "POST", "/sessions", json={"name": "planted"}, headers=evil)
    assert r.status_code == 403 and "another origin" in r.json()["detail"]
    assert get(app, "/sessions").json() == []
    own = request(app, "POST", "/sessions", json={"name": "mine"}, headers={"origin": "http://127.0.0.1:7860"})
    assert own.status_code == 201
    sid = own.json()["id"]
    assert request(app, "POST", f"/sessions/{sid}/undo", headers=evil).status_code == 403
    assert request(app, "PATCH", "/arms/1", json={"label": "x"}, headers=evil).status_code == 403
    assert request(app, "POST", "/sessions", json={"name": "script"}).status_code == 201  # no Origin: a script
    assert [s["name"] for s in get(app, "/sessions").json()] == ["mine", "script"]


def test_two_raters_rate_through_the_a1111_tab_and_the_api_sees_who(webui, sd_model, tmp_path):
    """The tab in A1111: the like button's registered handler takes the Rater box, each rater's rating is kept, the
    caption and the API show both, and the statistics' views and plots (altair for gr.Plot) work in the WebUI."""
    m, demo, app = webui
    b = bandit(m)
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    tab = b.current_tab
    value = _session_with_arms(tab)
    from modules import call_queue

    with call_queue.queue_lock:
        out = tab.run_round(value, 2, None, False)
    first, rid = out[2], out[3]
    blocks = tabs_blocks(m)
    like = handler(blocks, tab.c["like"])
    dep = next(d for d in blocks.dependencies if tab.c["like"]._id in [t[0] if isinstance(t, list | tuple) else t
                                                                    for t in d["targets"]])  # fmt: skip
    assert tab.c["rater"]._id in dep["inputs"]  # the Rater box goes with every rating
    request = type("Request", (), {"session_hash": "page1"})()
    res = like(value, first, rid, "ann", request)
    assert "by ann" in res[-1]
    dislike = handler(blocks, tab.c["dislike"])
    assert "by bob" in dislike(value, first, rid, "bob", request)[-1]
    img = get(app, "/sessions/1/images?rating=disagree").json()
    assert [i["id"] for i in img] == [int(first)] and img[0]["ratings"] == {"ann": "like", "bob": "dislike"}
    assert "ann liked · bob disliked" in tab.caption(tab.svc.get_image(int(first)), 1)
    stats = tab.stats_view(1, "bob")
    assert stats[7]["value"] == "bob" and "ann × bob" in stats[6]
    assert all(type(chart).__module__.startswith("altair") for chart in (stats[2], stats[3], stats[5]))
    assert get(app, "/sessions/1/raters").json()["agreement"][0]["n"] == 1


def test_the_rating_view_in_a1111_routes_and_sync(webui, sd_model, tmp_path):
    """Issue 14 "rating at speed" on the A1111 double: the tab carries the rating view (the page script's markup,
    pointing at the routes A1111 mounted) and its hidden sync button, whose click runs the page-side step first;
    the routes the view reads answer on A1111's app (pydantic 1, fastapi 0.94)."""
    m, demo, app = webui
    b = bandit(m)
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    tab = b.current_tab
    value = _session_with_arms(tab)
    from modules import call_queue

    with call_queue.queue_lock:
        out = tab.run_round(value, 3, None, False)
    first = int(out[2])
    assert f"data-image-id='{first}' data-session-id='1'" in out[1]
    html = tab.c["fast"].value
    assert "class='ps-fast'" in html and f"data-api='{PREFIX}'" in html and "ps_bandit_fast_like" in html
    blocks = tabs_blocks(m)
    dep = next(d for d in blocks.dependencies if tab.c["fast_sync"]._id in [t[0] if isinstance(t, list | tuple) else t
                                                                         for t in d["targets"]])  # fmt: skip
    assert "promptscopeBanditSync" in (dep.get("js") or "") and dep["queue"] is False
    sync = handler(blocks, tab.c["fast_sync"])
    res = sync(value, out[3], None, "ann")
    from promptscope_lib_ext.bandit.ui import N_STATS

    assert res[0] == out[3] and len(res) == 2 + N_STATS and res[1]  # round id, its gallery, the statistics
    r = get(app, f"/sessions/1/upcoming?rater=ann&n=5&start={first}")
    assert r.status_code == 200, r.text
    ids = [im["id"] for im in r.json()["images"]]
    assert ids[0] == first and sorted(ids) == sorted(im["id"] for im in get(app, "/sessions/1/images").json())
    assert get(app, f"/images/{first}?rater=ann").json()["rating"] == "pending"
    assert get(app, f"/images/{first}/file").status_code == 200
    rated = request(app, "POST", f"/images/{first}/rating", json={"rating": "like", "rater": "ann", "client": "page:x"},
                    headers={"origin": "http://127.0.0.1:7860"})  # fmt: skip
    assert rated.status_code == 200
    assert first not in [im["id"] for im in get(app, "/sessions/1/upcoming?rater=ann&n=5").json()["images"]]
    undone = request(app, "POST", "/sessions/1/undo", json={"rater": "ann", "client": "page:x"},
                     headers={"origin": "http://127.0.0.1:7860"})  # fmt: skip
    assert [u["image_id"] for u in undone.json()["undone"]] == [first]
