"""`POST /sdapi/v1/txt2img` of the standalone app: the subset of A1111's API a seed-bandit worker uses, on the toy
model, so the app can be a worker WebUI (tests and `python -m bench seed_bandit_scale` run real app processes).

Body (strict: unknown fields and wrong types are a 422 naming the field): prompt, negative_prompt, seed (-1:
random), steps, cfg_scale, sampler_name, width, height (the toy model's 32), batch_size (1), n_iter (1),
send_images (true), save_images (false). Answer as A1111's: `{images: [base64 PNG], parameters: the body,
info: JSON string with prompt, seed, all_seeds, infotexts}`; the PNG carries the infotext (`parameters` chunk).
Generation holds the toy host's lock, so requests run one at a time, as on a WebUI.
"""

import base64
import io
import json
import random
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, StrictBool, StrictFloat, StrictInt, StrictStr

PATH = "/sdapi/v1/txt2img"
PYDANTIC_V2 = hasattr(BaseModel, "model_fields")

if PYDANTIC_V2:
    from pydantic import ConfigDict

    class _Body(BaseModel):
        model_config = ConfigDict(extra="forbid")

else:

    class _Body(BaseModel):  # type: ignore[no-redef]
        class Config:
            extra = "forbid"


class Txt2ImgIn(_Body):
    prompt: StrictStr = ""
    negative_prompt: StrictStr = ""
    seed: StrictInt = -1
    steps: StrictInt = 20
    cfg_scale: StrictInt | StrictFloat = 7.0
    sampler_name: StrictStr | None = None
    width: StrictInt = 32
    height: StrictInt = 32
    batch_size: StrictInt = 1
    n_iter: StrictInt = 1
    send_images: StrictBool = True
    save_images: StrictBool = False


def _dump(body: BaseModel) -> dict[str, Any]:
    return body.model_dump() if PYDANTIC_V2 else body.dict()


def make_router(host: Any) -> APIRouter:
    """The route over a ToyHost."""
    from PIL import PngImagePlugin

    from ..toyworld.host import DEFAULT_SAMPLER, SAMPLER_NAMES

    router = APIRouter(tags=["PromptScope app: A1111 API subset"])

    @router.post(PATH)
    def txt2img(body: Txt2ImgIn) -> dict[str, Any]:
        for name, value, low, high in (("steps", body.steps, 1, 150), ("cfg_scale", body.cfg_scale, 1, 30),
                                       ("batch_size", body.batch_size, 1, 1), ("n_iter", body.n_iter, 1, 1),
                                       ("seed", body.seed, -1, 2**32 - 1)):  # fmt: skip
            if not low <= value <= high:
                allowed = f"{low}" if low == high else f"from {low} to {high}"
                raise HTTPException(422, f"{name} must be {allowed} here (the toy model's API), got {value}")
        if body.sampler_name is not None and body.sampler_name not in SAMPLER_NAMES:
            raise HTTPException(422, f"sampler_name {body.sampler_name!r} is not one of {', '.join(SAMPLER_NAMES)}")
        if not body.send_images:
            raise HTTPException(422, "send_images must be true: this API only answers with the images")
        seed = body.seed if body.seed >= 0 else random.randrange(2**32)
        try:
            processed = host.txt2img(
                body.prompt, body.negative_prompt, seed=seed, steps=body.steps, cfg_scale=float(body.cfg_scale),
                sampler_name=body.sampler_name or DEFAULT_SAMPLER, width=body.width, height=body.height,
            )  # fmt: skip
        except ValueError as exc:  # settings the toy model cannot honour (size)
            raise HTTPException(422, str(exc)) from None
        images, infotexts = [], []
        for n, image in enumerate(processed.images[: processed.n_generated]):
            text = processed.infotexts[n] if n < len(processed.infotexts) else processed.info
            info = PngImagePlugin.PngInfo()
            info.add_text("parameters", text)
            out = io.BytesIO()
            image.save(out, format="PNG", pnginfo=info)
            images.append(base64.b64encode(out.getvalue()).decode())
            infotexts.append(text)
        info = {"prompt": body.prompt, "negative_prompt": body.negative_prompt, "seed": processed.seeds[0],
                "all_seeds": list(processed.seeds), "infotexts": infotexts}  # fmt: skip
        return {"images": images, "parameters": _dump(body), "info": json.dumps(info)}

    return router


__all__ = ["PATH", "make_router"]
