"""PromptScope on Forge Neo through its real API (run with PROMPTSCOPE_WEBUI naming a Neo checkout; skipped on
A1111). The A1111-only facts of this tier (its hook order, CFGDenoiserTimesteps, `batch_cond_uncond`, the
"Latent" upscaler name) are skipped on Neo by the conftest; these are the Neo counterparts."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tests.live.conftest import PROBE_TITLE, SCRIPT_TITLES, running_neo
from tests.live.webui_harness import WebUIClient, decode_image, png_size

pytestmark = [pytest.mark.live, pytest.mark.skipif(not running_neo(), reason="Forge Neo only")]

HEATMAPS = SCRIPT_TITLES["heatmaps"]
GUIDANCE = SCRIPT_TITLES["guidance"]


def _pixels(b64: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(decode_image(b64))).convert("RGB"), dtype=np.int16)


def _hires(webui: WebUIClient) -> dict:
    modes = [m["name"] for m in webui.get("/sdapi/v1/latent-upscale-modes") or []]
    return {
        "enable_hr": True,
        "hr_scale": 2,
        "hr_upscaler": modes[0] if modes else "None",
        "hr_second_pass_steps": 1,
        "denoising_strength": 0.5,
        "hr_additional_modules": ["Use same choices"],  # Neo's API needs it for a hires pass (None: a TypeError)
    }


def test_features_on_without_keywords_keep_neos_image_bit_identical(webui: WebUIClient) -> None:
    plain = webui.txt2img("a red cube on a table")
    on = webui.txt2img("a red cube on a table", alwayson={GUIDANCE: [True], HEATMAPS: [True, "cube"]})
    assert len(on["images"]) == 2, on["info"].get("comments")
    assert np.array_equal(_pixels(plain["images"][0]), _pixels(on["images"][0]))


def test_neo_native_and_stays_neos_with_heatmaps_on(webui: WebUIClient) -> None:
    plain = webui.txt2img("a red cube AND a blue ball :0.5")
    on = webui.txt2img("a red cube AND a blue ball :0.5", alwayson={HEATMAPS: [True, "cube, ball"]})
    assert np.array_equal(_pixels(plain["images"][0]), _pixels(on["images"][0]))
    assert on["info"]["infotexts"][1].startswith("Attention heatmaps"), on["info"]["infotexts"][1]


def test_guidance_in_a_batch_of_two(webui: WebUIClient) -> None:
    plain = webui.txt2img("a red cube", batch_size=2)
    guided = webui.txt2img("a red cube AND_PERP a blue ball :0.8", alwayson={GUIDANCE: [True]}, batch_size=2)
    comments = guided["info"].get("comments") or ""
    assert "PromptScope" not in comments, comments
    assert len(guided["images"]) == 2
    for a, b in zip(plain["images"], guided["images"], strict=True):
        assert np.abs(_pixels(a) - _pixels(b)).max() > 0


def test_guidance_in_a_batch_whose_images_have_different_sub_prompt_counts(webui: WebUIClient) -> None:
    """Neo pairs a batch's sub-prompts by position and drops those past the shortest image; PromptScope builds its
    concept rows from the step's conditioning instead, so image 0 is guided and image 1 is left as it was."""
    prompts = ["a red cube AND_PERP a blue ball :0.8", "a red cube"]
    per_image = {PROBE_TITLE: [True, "prompts:" + json.dumps(prompts)]}
    plain = webui.txt2img("a red cube", batch_size=2)
    mixed = webui.txt2img("a red cube", batch_size=2, alwayson={**per_image, GUIDANCE: [True]})
    comments = mixed["info"].get("comments") or ""
    assert "PromptScope" not in comments, comments
    assert mixed["info"]["all_prompts"][:2] == prompts, mixed["info"]["all_prompts"]
    assert np.abs(_pixels(plain["images"][0]) - _pixels(mixed["images"][0])).max() > 0  # the concept acted
    assert np.abs(_pixels(plain["images"][1]) - _pixels(mixed["images"][1])).max() <= 2  # the plain image kept


def test_both_features_through_hires_fix(webui: WebUIClient) -> None:
    res = webui.txt2img(
        "a red cube AND_TOPK blue :0.4", alwayson={GUIDANCE: [True], HEATMAPS: [True, "cube"]}, **_hires(webui)
    )
    info = res["info"]
    comments = info.get("comments") or ""
    assert "Semantic guidance: neutral" in info["infotexts"][0], (info["infotexts"][0], comments)
    assert len(res["images"]) == 2, (info["infotexts"], comments)
    assert png_size(decode_image(res["images"][0])) == (128, 128)
    assert info["infotexts"][1].startswith("Attention heatmaps (hires pass"), info["infotexts"][1]
    assert "PromptScope" not in comments, comments


def test_guidance_in_img2img(webui: WebUIClient) -> None:
    init = webui.txt2img("a red cube")["images"][0]
    plain = webui.img2img(init, "a red cube")
    guided = webui.img2img(init, "a red cube AND_SALT a blue ball :0.6", alwayson={GUIDANCE: [{"enabled": True}]})
    text = guided["info"]["infotexts"][0]
    assert "Semantic guidance: neutral" in text, (text, guided["info"].get("comments"))
    assert np.abs(_pixels(plain["images"][0]) - _pixels(guided["images"][0])).max() > 0
