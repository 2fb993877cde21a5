"""The seed-bandit tab inside a real A1111 WebUI, in headless Chromium: create a session with two arms, generate a
round through A1111's pipeline with A1111's own progress bar (javascript/progressbar.js), see the round's images,
rate with the KEYBOARD and see the statistics table follow.

The round button's page script (javascript/promptscope_bandit.js `promptscopeBanditSubmit`) gives the round an
A1111 task id and calls A1111's `requestProgress`, which puts a `.progressDiv` above the round's gallery and removes
it once `/internal/progress` says the task is done. The test records that element with a MutationObserver (a round
of tiny images can end between two polls) and asks A1111 afterwards whether it finished the round under that id.
The store is the session's temporary folder (`bandit_dir`, PROMPTSCOPE_BANDIT_DIR), never the checkout's outputs.
Skipped without PROMPTSCOPE_WEBUI (conftest) or without Chromium/chromedriver/selenium (the `browser` fixture).
Leaves a screenshot in /tmp/live-bandit.png (PROMPTSCOPE_LIVE_BANDIT_SCREENSHOT).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.browser.bandit_page import shown_image_id, stats_rows
from tests.browser.test_app_browser import browser  # noqa: F401 (fixture)
from tests.live.webui_harness import ENV_CHECKOUT, WebUIClient

pytestmark = pytest.mark.live

P = "ps_bandit"  # promptscope_a1111/bandit_tab.py ELEM_PREFIX
API = "/promptscope/v1/bandit"
SCREENSHOT = Path(os.environ.get("PROMPTSCOPE_LIVE_BANDIT_SCREENSHOT", "/tmp/live-bandit.png"))
SETTINGS = '{"steps": 2, "width": 64, "height": 64, "cfg_scale": 5, "sampler_name": "Euler"}'
ARMS = ("a red cube on a table", "a blue sphere on grass")
ROUND = 4

# Installed before "Generate round": records the task id the page script hands to A1111's requestProgress and
# every `.progressDiv` A1111 adds or removes (with its parent's id and the texts it showed).
WATCH_PROGRESS_JS = """
const gallery = arguments[0];
const w = window.__psLive = {tasks: [], added: [], removed: 0, texts: []};
const orig = window.requestProgress;
window.requestProgress = function (id) { w.tasks.push(id); return orig.apply(this, arguments); };
const isBar = n => n.nodeType === 1 && n.classList.contains('progressDiv');
new MutationObserver(records => {
  for (const r of records) {
    for (const n of r.addedNodes) {
      if (isBar(n)) w.added.push({parent: n.parentNode ? n.parentNode.id : null,
                                  holdsGallery: !!(n.parentNode && n.parentNode.querySelector(gallery))});
    }
    for (const n of r.removedNodes) if (isBar(n)) w.removed += 1;
    const bar = r.target.nodeType === 1 ? r.target.closest('.progressDiv') : r.target.parentNode &&
      r.target.parentNode.closest && r.target.parentNode.closest('.progressDiv');
    if (bar && bar.textContent && w.texts[w.texts.length - 1] !== bar.textContent) w.texts.push(bar.textContent);
  }
}).observe(document.body, {childList: true, subtree: true, characterData: true});
"""


def _api(webui: WebUIClient, path: str) -> Any:
    return webui.get(API + path)


def test_round_in_a1111_with_its_progress_bar_and_keyboard_rating(webui, bandit_dir, browser):  # noqa: F811
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    assert _api(webui, "/sessions") == [], f"the test's data folder {bandit_dir} is not fresh"
    # A1111 also saves the round's images in its own outputs (its pipeline's saving): the harness's scratch settings.
    outputs = Path(webui.get("/sdapi/v1/options")["outdir_samples"]).resolve()
    assert Path(os.environ[ENV_CHECKOUT]).resolve() not in outputs.parents, outputs
    t0 = time.monotonic()
    browser.get(webui.base_url + "/")
    tab = WebDriverWait(browser, 240).until(
        lambda d: next(iter(d.find_elements(By.XPATH, "//*[@id='tabs']//button[normalize-space(.)='Seed bandit']")),
                       False)
    )  # fmt: skip
    # A1111's page scripts and ours are loaded: the progress functions the round button relies on exist.
    have = browser.execute_script(
        "return [typeof requestProgress, typeof randomId, typeof promptscopeBanditSubmit, typeof promptscopeBindKeys]"
    )
    assert have == ["function"] * 4, have
    tab.click()
    print(f"\n[live bandit] page and tab ready in {time.monotonic() - t0:.1f} s")
    wait = WebDriverWait(browser, 60)

    def field(name: str):
        return wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"#{P}_{name} textarea, #{P}_{name} input"))

    def set_text(name: str, text: str) -> None:
        el = field(name)
        el.clear()
        el.send_keys(text)

    def status() -> str:
        return browser.find_element(By.CSS_SELECTOR, f"#{P}_status").text

    def status_has(text: str, timeout: float = 60) -> None:
        try:
            WebDriverWait(browser, timeout).until(lambda d: text in status())
        except TimeoutException:
            pytest.fail(f"no {text!r} in the status after {timeout} s: {status()!r}")

    set_text("new_name", "live round")
    set_text("new_settings", SETTINGS)
    browser.find_element(By.CSS_SELECTOR, f"#{P}_create").click()
    WebDriverWait(browser, 60).until(lambda d: len(_api(webui, "/sessions")) == 1)
    sid = _api(webui, "/sessions")[0]["id"]
    status_has(f"Session {sid} “live round”")  # the picker's change event loaded it
    for n, prompt in enumerate(ARMS, 1):
        set_text("arm_prompt", prompt)
        browser.find_element(By.CSS_SELECTOR, f"#{P}_add_arm").click()
        WebDriverWait(browser, 60).until(lambda d, n=n: len(_api(webui, f"/sessions/{sid}/arms")) == n)
        status_has("Added arm")
    k = browser.find_element(By.CSS_SELECTOR, f"#{P}_k input[type=number]")
    k.clear()
    k.send_keys(str(ROUND))
    browser.execute_script("document.activeElement && document.activeElement.blur()")  # the slider takes the value

    browser.execute_script(WATCH_PROGRESS_JS, f"#{P}_round_gallery")
    t0 = time.monotonic()
    browser.find_element(By.CSS_SELECTOR, f"#{P}_run").click()
    status_has(f"Round 1: {ROUND} image(s)", timeout=600)
    round_s = time.monotonic() - t0
    assert "Time taken" in status(), status()  # A1111's wrap_gradio_gpu_call ran the round and appended its timing

    # A1111's progress bar was shown above the round's gallery under the task id the page script made, and went away
    # once A1111 reported that task finished.
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.__psLive.removed") >= 1)
    seen = browser.execute_script("return window.__psLive")
    print(f"[live bandit] round of {ROUND} in {round_s:.1f} s; progress bar: {seen}")
    assert len(seen["tasks"]) == 1 and seen["tasks"][0].startswith("task("), seen
    assert seen["added"] and seen["added"][0]["parent"] == f"{P}_results" and seen["added"][0]["holdsGallery"], seen
    assert browser.find_elements(By.CSS_SELECTOR, f"#{P}_results .progressDiv") == []
    progress = webui.post("/internal/progress", {"id_task": seen["tasks"][0], "live_preview": False})
    assert progress["completed"] is True, progress  # A1111's job state tracked the round under the page's id

    # The round's images show: in the gallery and the first one on show for rating.
    def loaded_images(driver) -> list[list[int]]:
        return driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).filter(i => i.complete && i.naturalWidth)"
            ".map(i => [i.naturalWidth, i.naturalHeight])",
            f"#{P}_round_gallery img",
        )

    sizes = WebDriverWait(browser, 60).until(lambda d: len(loaded_images(d)) >= ROUND and loaded_images(d))
    assert sizes[:ROUND] == [[64, 64]] * ROUND, sizes
    # the image to rate is on show, painted: the rating view's (it hides the tab's own image, which Gradio 4 then
    # never loads: its <img> is lazy) or, without the view, the tab's
    WebDriverWait(browser, 60).until(lambda d: shown_image_id(d, P))
    images = _api(webui, f"/sessions/{sid}/images")
    assert len(images) == ROUND and all(im["rating"] == "pending" for im in images)
    # Made by A1111's txt2img pipeline with the session's settings; the infotext names session, arm and round.
    for im in images:
        path = Path(im["path"])
        assert bandit_dir.resolve() in path.resolve().parents, path
        with Image.open(path) as png:
            assert png.size == (64, 64)
            info = png.info.get("parameters", "")
        # A1111 v1.10's built-in "Sampler" and "Seed" scripts set p.steps / p.sampler_name / p.seed from their UI
        # defaults unless the job is marked as an API job (p.is_api): the session's settings and the bandit's seed
        # must win, or the recorded seed does not reproduce the image.
        assert "Steps: 2, Sampler: Euler" in info and "Size: 64x64" in info, info
        assert f"Seed: {im['seed']}," in info, (im["seed"], info)
        assert f"PromptScope session: {sid}" in info and f"PromptScope arm: {im['arm_id']}" in info, info

    def shown_id(driver) -> str:
        return shown_image_id(driver, P)

    first = WebDriverWait(browser, 60).until(shown_id)
    browser.execute_script("document.activeElement && document.activeElement.blur()")
    keys = ActionChains(browser)
    rated = []
    for key in ("l", Keys.ARROW_LEFT):
        before = shown_id(browser)
        keys.send_keys(key).perform()
        WebDriverWait(browser, 30).until(lambda d, b=before: shown_id(d) not in ("", b))
        rated.append(int(before))
    assert rated[0] == int(first) and len(set(rated)) == 2
    ratings = {im["id"]: im["rating"] for im in _api(webui, f"/sessions/{sid}/images")}
    assert [ratings[i] for i in rated] == ["like", "dislike"], ratings

    def counts(driver):
        rows = [r for r in stats_rows(driver, P) if len(r) >= 8 and r[0].isdigit()]
        if len(rows) != 2:
            return False
        n, likes, dislikes, skipped, pending = (sum(int(r[i]) for r in rows) for i in (3, 4, 5, 6, 7))
        return (n, likes, dislikes, skipped, pending) == (2, 1, 1, 0, ROUND - 2) and rows

    try:
        rows = WebDriverWait(browser, 60).until(counts)
    except TimeoutException:
        pytest.fail(f"the stats table did not follow the ratings: {stats_rows(browser, P)}")
    arm_of = {im["id"]: im["arm_id"] for im in images}
    assert int(next(r for r in rows if int(r[0]) == arm_of[rated[0]])[4]) == 1
    assert int(next(r for r in rows if int(r[0]) == arm_of[rated[1]])[5]) == 1
    browser.execute_script(f"document.getElementById('{P}_stats_table').scrollIntoView()")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
