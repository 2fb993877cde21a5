"""A checkpoint switch SD1.5 ↔ SDXL in one WebUI session, with the features on before and after (A1111 and Neo).

Needs an SD1.5-shaped and an SDXL-shaped checkpoint in the WebUI's list: `tools/prepare_webui.py` puts both in an
A1111 checkout; on Neo give both folders (`--ckpt-dirs <sd15 folder> --ckpt-dirs <sdxl folder>`). Checkpoints are
told apart by the names our scripts give them ("sdxl" in the SDXL one's)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest

from tests.live.conftest import SCRIPT_TITLES
from tests.live.webui_harness import WebUIClient, decode_image

pytestmark = pytest.mark.live

HEATMAPS = SCRIPT_TITLES["heatmaps"]
GUIDANCE = SCRIPT_TITLES["guidance"]
FEATURES = {GUIDANCE: [True], HEATMAPS: [True, "cube"]}
PROMPT = "a red cube AND_PERP a blue ball :0.8"


def _pixels(b64: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(decode_image(b64))).convert("RGB"), dtype=np.int16)


def _without_hash(title: str) -> str:
    """A checkpoint's title without its " [short hash]": A1111 adds the hash to the title once it has hashed the file
    (on first load, when no cache holds it yet), so the title it lists can gain one by the time the switch is done."""
    return title.rsplit(" [", 1)[0] if title.endswith("]") else title


def _use(webui: WebUIClient, title: str) -> None:
    webui.post("/sdapi/v1/options", {"sd_model_checkpoint": title}, timeout=900)
    assert _without_hash(webui.get("/sdapi/v1/options")["sd_model_checkpoint"]) == _without_hash(title)


@pytest.fixture
def two_families(webui: WebUIClient) -> Iterator[tuple[tuple[str, str], tuple[str, str]]]:
    models = webui.get("/sdapi/v1/sd-models") or []
    sdxl = [(m["title"], m["model_name"]) for m in models if "sdxl" in m["model_name"].lower()]
    sd15 = [(m["title"], m["model_name"]) for m in models if "sd15" in m["model_name"].lower()]
    if not sdxl or not sd15:
        pytest.skip(f"needs an SD1.5 and an SDXL checkpoint in the list, got {[m['model_name'] for m in models]}")
    before = webui.get("/sdapi/v1/options")["sd_model_checkpoint"]
    try:
        yield sd15[0], sdxl[0]
    finally:
        _use(webui, before)


def _guided(webui: WebUIClient, model_name: str) -> dict:
    res = webui.txt2img(PROMPT, alwayson=FEATURES)
    assert f"Model: {model_name}," in res["info"]["infotexts"][0], res["info"]["infotexts"][0]
    comments = res["info"].get("comments") or ""
    assert "PromptScope" not in comments, comments
    assert len(res["images"]) == 2, res["info"]["infotexts"]  # the image and its heatmap grid
    assert "Semantic guidance" in res["info"]["infotexts"][0], res["info"]["infotexts"][0]
    return res


def test_switching_sd15_to_sdxl_and_back_keeps_the_features_and_the_hosts_image(
    webui: WebUIClient, two_families: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    (sd15, sd15_name), (sdxl, sdxl_name) = two_families
    _use(webui, sd15)
    plain = webui.txt2img("a red cube")
    first = _guided(webui, sd15_name)
    _use(webui, sdxl)
    _guided(webui, sdxl_name)
    assert webui.txt2img("a red cube")["images"]
    _use(webui, sd15)
    again = _guided(webui, sd15_name)
    assert np.array_equal(_pixels(first["images"][0]), _pixels(again["images"][0]))
    # nothing of ours stayed on the model across the switches: the plain image is the host's own, as before
    assert np.array_equal(_pixels(plain["images"][0]), _pixels(webui.txt2img("a red cube")["images"][0]))
