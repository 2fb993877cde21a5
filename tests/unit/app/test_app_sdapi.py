"""The standalone app's `POST /sdapi/v1/txt2img` (the A1111 API subset a seed-bandit worker uses)."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
from fastapi import FastAPI
from PIL import Image

from lib_ext.app.sdapi import PATH, make_router
from lib_ext.bandit.workers import parse_txt2img_response


def post(app, body):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await c.post(PATH, json=body)

    return asyncio.run(go())


def test_txt2img_answers_like_a1111_and_refuses_what_it_cannot_do(host):
    app = FastAPI()
    app.include_router(make_router(host))
    r = post(app, {"prompt": "a red circle", "negative_prompt": "blue", "seed": 11, "steps": 2, "cfg_scale": 5})
    assert r.status_code == 200, r.text
    data = r.json()
    info = json.loads(data["info"])
    assert info["all_seeds"] == [11] and len(data["images"]) == 1 and data["parameters"]["steps"] == 2
    with Image.open(io.BytesIO(base64.b64decode(data["images"][0]))) as im:
        assert im.size == (32, 32) and "Seed: 11" in im.info["parameters"]
    assert "Steps: 2" in info["infotexts"][0]
    got = parse_txt2img_response(r.content)  # what the queue's worker client reads
    assert got.seed == 11 and got.infotext == info["infotexts"][0] and got.extras == []
    # the same seed gives the same image (a worker's result is reproducible)
    again = post(app, {"prompt": "a red circle", "negative_prompt": "blue", "seed": 11, "steps": 2, "cfg_scale": 5})
    assert again.json()["images"] == data["images"]
    for body, field in (({"prompt": "x", "alwayson_scripts": {}}, "alwayson_scripts"), ({"steps": "5"}, "steps"),
                        ({"seed": 1.5}, "seed")):  # fmt: skip
        r = post(app, body)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == field, r.text
    for body, msg in (({"batch_size": 2}, "batch_size must be 1"), ({"steps": 0}, "steps must be from 1 to 150"),
                      ({"width": 64}, "32x32"), ({"sampler_name": "Nope"}, "sampler_name 'Nope'"),
                      ({"send_images": False}, "send_images must be true")):  # fmt: skip
        r = post(app, {"prompt": "x", "steps": 1, **body})
        assert r.status_code == 422 and msg in r.json()["detail"], r.text
