"""Seed-bandit rating latency as the user meets it: one rating through the tab's handler and through the HTTP API.

`python -m bench seed_bandit_tab [--quick]`. The issue's `rating_ms_p95` is "server time for one rating through
the tab's handler or the API, store included"; `python -m bench seed_bandit` reports it with these functions
(and `BanditService.rate` alone as `rating_ms_p95_service`). Measured here, on a session of 5 arms with real
512×512 PNGs (A1111-sized; the toy model's are 32 px):
- tab: `BanditTab.rate` = commit (SQLite WAL, synchronous=FULL) + find the next pending image + load it for
  display + its caption (what one key press costs the server before the next image can be sent);
- api: `POST /promptscope/v1/bandit/images/{id}/rating` through FastAPI (validation, JSON) over an in-process
  ASGI transport (client overhead included, so an upper bound of the server time).
The chained statistics refresh (table, P(best), plots) runs after the rating's response; it is timed too.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lib_ext.bandit.hosting import ServiceProvider, image_path, save_png
from lib_ext.bandit.service import ImageResult
from lib_ext.bandit.ui import BanditTab


def _setup(folder: Path, n_images: int, size: int) -> tuple[BanditTab, ServiceProvider, int]:
    provider = ServiceProvider(folder / "data", seed=0)
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    template = save_png(noise, "bench", folder / "template.png")  # encoded once, copied per image

    def generate(jobs, progress=None):
        out = []
        for j in jobs:
            path = image_path(folder / "data" / "images", j)
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template, path)
            out.append(ImageResult(j, str(path)))
        return out

    tab = BanditTab(provider, generate, None, provider.data_dir, "ps_bandit", display_size=384)
    svc = provider()
    sid = svc.create_session("bench", {"steps": 20}, round_size=50)["id"]
    for prompt in ("a cat", "a dog", "a {red|blue} fox", "a bird", "a fish"):
        svc.add_arm(sid, prompt)
    while len(svc.images(sid)) < n_images:
        svc.run_round(sid, lambda jobs: generate(jobs))
    return tab, provider, sid


def _percentiles(ms: list[float]) -> dict[str, float]:
    return {"p95": float(np.percentile(ms, 95)), "median": float(np.median(ms))}


def through_tab(tab: BanditTab, sid: int, n: int) -> tuple[list[float], list[float]]:
    svc = tab.svc
    value = f"{sid} · bench"
    rid = max(i["round_id"] for i in svc.images(sid))
    current = tab.current_view(sid, rid)[2]
    values = ("like", "dislike", "skip")
    rate_ms, refresh_ms = [], []
    for j in range(n):
        if not current:  # round finished: undo everything back to pending and go on
            svc.mark_rest(rid, "skip")
            for im in svc.images(sid, round_id=rid):
                svc.store.add_rating(im["id"], "like")
            current = tab.current_view(sid, rid)[2] or str(svc.images(sid, round_id=rid)[0]["id"])
        t0 = time.perf_counter()
        out = tab.rate(value, current, str(rid), values[j % 3])
        rate_ms.append((time.perf_counter() - t0) * 1000)
        assert "ps-error" not in out[-1], out[-1]
        current = out[2]
        if j % 10 == 0:
            t0 = time.perf_counter()
            tab.refresh_view(value, str(rid))
            refresh_ms.append((time.perf_counter() - t0) * 1000)
    return rate_ms, refresh_ms


def through_api(provider: ServiceProvider, sid: int, n: int) -> list[float]:
    import httpx
    from fastapi import FastAPI

    from lib_ext.bandit.routes import PREFIX, make_router

    app = FastAPI()
    app.include_router(make_router(provider))
    ids = [im["id"] for im in provider().images(sid)]
    values = ("like", "dislike", "skip")

    async def go() -> list[float]:
        out = []
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as c:
            for j in range(n):
                t0 = time.perf_counter()
                r = await c.post(f"{PREFIX}/images/{ids[j % len(ids)]}/rating", json={"rating": values[j % 3]})
                out.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
        return out

    return asyncio.run(go())


def main(quick: bool = False) -> dict:
    return measure(quick)


def measure(quick: bool, verbose: bool = True) -> dict:
    """p95/median ms of one rating through the tab's handler and through the HTTP API (and the chained stats
    refresh), on a session of real 512 px PNGs."""
    n = 150 if quick else 500
    n_images = 300 if quick else 1500  # Nishio's household: ~1,500 images a day
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        tab, provider, sid = _setup(Path(tmp), n_images, 512)
        setup_s = time.time() - t0
        rate_ms, refresh_ms = through_tab(tab, sid, n)
        api_ms = through_api(provider, sid, n)
        provider.close()
    tab_p, api_p, ref_p = _percentiles(rate_ms), _percentiles(api_ms), _percentiles(refresh_ms)
    if verbose:
        print(f"session of {n_images} images (512 px), {n} ratings each way; set-up {setup_s:.1f} s")
        print(f"{'path':40s} {'p95 ms':>8s} {'median ms':>10s}")
        print(f"{'tab handler (rate + next image)':40s} {tab_p['p95']:8.2f} {tab_p['median']:10.2f}")
        print(f"{'HTTP API (POST …/rating)':40s} {api_p['p95']:8.2f} {api_p['median']:10.2f}")
        print(f"{'stats refresh after a rating (chained)':40s} {ref_p['p95']:8.2f} {ref_p['median']:10.2f}")
    return {
        "rating_ms_p95": max(tab_p["p95"], api_p["p95"]),
        "rating_ms_p95_tab": tab_p["p95"],
        "rating_ms_median_tab": tab_p["median"],
        "rating_ms_p95_api": api_p["p95"],
        "rating_ms_median_api": api_p["median"],
        "stats_refresh_ms_p95": ref_p["p95"],
        "session_images": n_images,
        "ratings": n,
        "quick": quick,
    }
