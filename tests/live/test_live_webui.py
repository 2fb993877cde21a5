"""PromptScope inside a real A1111 WebUI: the scripts load and register, a plain generation still works with
the extension installed, and the console shows no PromptScope traceback.

Feature tests belong in their own files here: `pytestmark = pytest.mark.live`, take the `webui` fixture, and call
`webui.txt2img(prompt, alwayson={SCRIPT_TITLES["guidance"]: [...args in ui() order...]})`.
"""

from __future__ import annotations

import pytest

from tests.live.conftest import CONSOLE_IGNORE, EXPECTED_ALWAYSON_TITLES
from tests.live.webui_harness import WebUIClient, decode_image, errors_mentioning, png_size

pytestmark = pytest.mark.live


def test_scripts_are_listed_as_alwayson(webui: WebUIClient) -> None:
    listed = webui.get("/sdapi/v1/scripts")
    # A1111 lists `script.name`, the lower-cased title, and only for scripts whose ui() returned a list.
    for title in EXPECTED_ALWAYSON_TITLES:
        assert title.lower() in listed["txt2img"], f"{title!r} missing from txt2img scripts: {listed['txt2img']}"
        assert title.lower() in listed["img2img"], f"{title!r} missing from img2img scripts: {listed['img2img']}"
    infos = webui.get("/sdapi/v1/script-info")
    ours = {
        (i["name"], i["is_img2img"]): i for i in infos if i["name"] in {t.lower() for t in EXPECTED_ALWAYSON_TITLES}
    }
    assert len(ours) == 2 * len(EXPECTED_ALWAYSON_TITLES), sorted(ours)
    assert all(i["is_alwayson"] for i in ours.values()), ours


def test_plain_txt2img_with_extension_installed(webui: WebUIClient) -> None:
    res = webui.txt2img("a red cube on a wooden table", negative_prompt="blurry")
    assert len(res["images"]) == 1
    assert png_size(decode_image(res["images"][0])) == (64, 64)
    info = res["info"]
    assert info["width"] == 64 and info["height"] == 64 and info["steps"] == 2
    # With every feature off, our extension adds nothing to the infotext.
    assert "promptscope" not in info["infotexts"][0].lower(), info["infotexts"][0]
    assert not any(k.lower().startswith("promptscope") for k in info.get("extra_generation_params", {}))


def test_batch_of_two_with_extension_installed(webui: WebUIClient) -> None:
    # Two images in one batch: the denoiser sees two cond rows and two uncond rows.
    res = webui.txt2img("a blue sphere", batch_size=2, steps=2)
    assert len(res["images"]) == 2
    assert [png_size(decode_image(b)) for b in res["images"]] == [(64, 64), (64, 64)]
    assert res["info"]["all_seeds"] == [1234, 1235]


def test_plain_img2img_with_extension_installed(webui: WebUIClient) -> None:
    start = webui.txt2img("a red cube")["images"][0]
    res = webui.img2img(start, "a red cube, evening light", steps=2, denoising_strength=0.5)
    assert len(res["images"]) == 1
    assert png_size(decode_image(res["images"][0])) == (64, 64)
    assert "promptscope" not in res["info"]["infotexts"][0].lower()


def test_console_has_no_promptscope_traceback(webui: WebUIClient) -> None:
    # Runs after the generations above (pytest keeps file order), so their console output is included.
    log = webui.log()
    assert "Startup time:" in log, "the console log does not look like the WebUI's"
    bad = errors_mentioning(log, "promptscope", ignore=CONSOLE_IGNORE)
    assert not bad, "PromptScope errors in the WebUI console:\n\n" + "\n\n".join(bad)
