"""The seed-bandit tab in the standalone app: toy-host generation with PNG Info refs, routes via app hooks,
and the page template carrying the repository's javascript/*.js."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import numpy as np
from fastapi import FastAPI
from PIL import Image

from lib_ext.app import page_scripts, panel_bandit
from lib_ext.app.panels import PanelRegistry, TabContext
from lib_ext.bandit import bandit_ref_from_infotext
from lib_ext.bandit.routes import PREFIX
from lib_ext.bandit.store import DB_FILENAME, Store, unacknowledged_backups
from lib_ext.seam import GenerationRequest


def handler(blocks: Any, elem_id: str) -> Any:
    comp = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == elem_id)
    if hasattr(blocks, "dependencies"):  # gradio 3: parallel lists of configs and functions
        events = [(dep["targets"], fn) for dep, fn in zip(blocks.dependencies, blocks.fns)]
    else:  # gradio 4: BlockFunction objects carry their (id, event) targets
        events = [(fn.targets, fn) for fn in blocks.fns.values()]
    for raw_targets, fn in events:
        targets = [t[0] if isinstance(t, list | tuple) else t for t in raw_targets]
        if comp._id in targets:
            return fn.fn
    raise LookupError(elem_id)


def asgi_get(app: Any, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.get(path)

    return asyncio.run(go())


def test_panel_registers_and_a_round_on_the_toy_host_is_reproducible_from_png_info(host, tmp_path):
    registry = PanelRegistry()
    panel_bandit.register(registry)
    assert [e.title for e in registry.of_kind("tab")] == ["Seed bandit"]
    hooks: list = []
    with gr.Blocks() as blocks:
        panel_bandit.build(TabContext(host=host, data_dir=tmp_path / "bandit", app_hooks=hooks))
    create = handler(blocks, "ps_bandit_create")
    add = handler(blocks, "ps_bandit_add_arm")
    run = handler(blocks, "ps_bandit_run")
    value = create("toy", '{"steps": 2}', None, None, 0, 2, True)[0]["value"]
    add(value, "a red circle", "", "", "")
    add(value, "a {blue|green} square", "", "", "")
    out = run(value, 2, None, True, None)
    assert "Round 1: 2 image(s)" in out[-1], out[-1]
    path = Path(out[0])
    assert path.is_relative_to((tmp_path / "bandit" / "images").resolve())
    info = Image.open(path).info["parameters"]
    params = dict(re.findall(r"(PromptScope \w+): ([^,\n]*)", info.splitlines()[-1]))
    ref = bandit_ref_from_infotext(params)
    assert ref is not None and ref["session"] == 1 and ref["round"] == 1

    app = FastAPI()
    for hook in hooks:
        hook(None, app)
    sessions = asgi_get(app, "/promptscope/v1/bandit/sessions").json()
    assert [s["name"] for s in sessions] == ["toy"]


def test_page_template_inlines_the_repository_scripts():
    assert page_scripts.install()
    assert page_scripts.install()  # idempotent: wraps the original once
    with gr.Blocks() as demo:
        gr.Markdown("x")
    app = gr.routes.App.create_app(demo)
    page = asgi_get(app, "/").text
    assert page.count('data-promptscope="promptscope.js"') == 1
    assert page.index('data-promptscope="promptscope.js"') < page.index('data-promptscope="promptscope_bandit.js"')
    assert "promptscopeBindKeys" in page and page.index("promptscopeBindKeys") < page.index("</head>")


def test_semantic_guidance_works_inside_the_sweep(host, tmp_path):
    hooks: list = []
    with gr.Blocks() as blocks:
        panel_bandit.build(TabContext(host=host, data_dir=tmp_path / "bandit", app_hooks=hooks))
    create = handler(blocks, "ps_bandit_create")
    add = handler(blocks, "ps_bandit_add_arm")
    run = handler(blocks, "ps_bandit_run")
    value = create("guided", '{"steps": 2, "semantic_guidance": {"mode": "neutral"}}', None, None, 0, 2, False)
    value = value[0]["value"]
    add(value, "a red circle AND_TOPK blue :0.5", "", "", "")
    out = run(value, 1, None, False, None)
    assert "Round 1: 1 image(s)" in out[-1], out[-1]
    img = Image.open(out[0])
    assert "PromptScope session: 1" in img.info["parameters"]
    seed = int(re.search(r"Seed: (\d+)", img.info["parameters"]).group(1))
    guided = np.asarray(img.convert("RGB"))
    plain = np.asarray(host.txt2img("a red circle AND_TOPK blue :0.5", seed=seed, steps=2).images[0].convert("RGB"))
    assert not np.array_equal(guided, plain)  # the host alone reads AND_TOPK as text; the sweep guided it
    again = host.run_jobs(
        [GenerationRequest("a red circle AND_TOPK blue :0.5", "", seed, {"steps": 2})],
        features=panel_bandit.sweep_features([GenerationRequest("a red circle AND_TOPK blue :0.5")]),
    )[0].image
    assert np.array_equal(np.asarray(again.convert("RGB")), guided)
    assert panel_bandit.sweep_features([GenerationRequest("a plain cat")]) == []


def asgi(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:7860") as c:
            return await c.request(method, path, **kw)

    return asyncio.run(go())


def _app_on(host: Any, data_dir: Path) -> tuple[Any, Any]:
    """The standalone app's page and its gradio (FastAPI) app with the bandit routes mounted, as `main` does."""
    hooks: list = []
    with gr.Blocks() as blocks:
        panel_bandit.build(TabContext(host=host, data_dir=data_dir, app_hooks=hooks))
    app = gr.routes.App.create_app(blocks)
    for hook in hooks:
        hook(blocks, app)
    return blocks, app


def test_a_damaged_database_stops_the_app_until_acknowledged(host, tmp_path):
    data = tmp_path / "bandit"
    with Store(data) as store:
        store.create_session("rated for hours")
    (data / DB_FILENAME).write_bytes(b"garbage " * 1000)
    blocks, app = _app_on(host, data)  # the tab's start-up moves it aside
    backup = unacknowledged_backups(data)[0]
    notice = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "ps_bandit_store_notice")
    assert notice.visible and str(backup) in notice.value
    for _ in range(2):  # before: the second call got a new, empty database
        r = asgi(app, "GET", f"{PREFIX}/sessions")
        assert r.status_code == 503 and str(backup) in r.json()["detail"], r.text
    assert asgi(app, "POST", f"{PREFIX}/images/1/rating", json={"rating": "like"}).status_code == 503
    r = asgi(app, "POST", f"{PREFIX}/store/acknowledge")
    assert r.status_code == 200 and r.json()["acknowledged"] == [str(backup)]
    assert asgi(app, "GET", f"{PREFIX}/sessions").json() == []
    hidden, button = handler(blocks, "ps_bandit_status")()  # the status line's change event
    assert hidden["visible"] is False and button["visible"] is False


def test_a_page_of_another_origin_cannot_rate_or_undo_through_the_app(host, tmp_path):
    data = tmp_path / "bandit"
    blocks, app = _app_on(host, data)
    with Store(data, checkpoint_seconds=None) as store:  # an image to rate, written beside the app's connection
        sid = store.create_session("s")
        arm = store.add_arm(sid, "a red circle")
        rnd = store.create_round(sid, "uniform", 1, False)
        iid = store.add_image(sid, arm, rnd["id"], 7, "a red circle", "", [], str(data / "x.png"), "0" * 64)
    rating = f"{PREFIX}/images/{iid}/rating"
    evil = "http://evil.example:8000"
    ask = {"origin": evil, "access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    preflight = asgi(app, "OPTIONS", rating, headers=ask)
    allowed = preflight.headers.get("access-control-allow-origin")
    if gr.__version__.startswith("3."):  # gradio 3.41's CORS middleware lets the browser send the POST…
        assert preflight.status_code == 200 and allowed in ("*", evil)
    else:  # gradio 4 already withholds CORS from a foreign page when the host is local; the route must not rely on it
        assert allowed is None
    r = asgi(app, "POST", rating, json={"rating": "like"}, headers={"origin": evil})
    assert r.status_code == 403 and evil in r.json()["detail"], r.text  # …and the route refuses it
    simple = {"origin": evil, "content-type": "text/plain"}  # needs no preflight at all
    assert asgi(app, "POST", f"{PREFIX}/sessions/{sid}/undo", content="{}", headers=simple).status_code == 403
    other = asgi(app, "POST", "/reset", json={"session_hash": "x", "fn_index": 0}, headers={"origin": evil})
    assert other.status_code != 403  # the host's own routes are left as they were (no app-wide middleware)
    assert asgi(app, "GET", f"{PREFIX}/sessions/{sid}/images").json()[0]["rating"] == "pending"
    own = asgi(app, "POST", rating, json={"rating": "like"}, headers={"origin": "http://127.0.0.1:7860"})
    assert own.status_code == 200 and own.json()["rating"] == "like"
