"""Generate ahead in a real browser (the standalone app): queue images from the tab and watch the progress bar
follow to the end by itself (javascript/promptscope_bandit.js refreshes it while a queue runs); then rate one.

Set-up as in test_bandit_browser.py (Chromium + chromedriver, headless; skipped with the reason when missing).
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.browser.bandit_page import shown_image_id
from tests.browser.test_app_browser import browser  # noqa: F401 (fixture)
from tests.browser.test_bandit_browser import _api, app  # noqa: F401 (fixture)

P = "ps_bandit"
pytestmark = pytest.mark.slow


def _post(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(url + "promptscope/v1/bandit" + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_queue_from_the_tab_and_the_progress_follows(app, browser):  # noqa: F811 (fixture)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _data = app
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: next((b for b in d.find_elements(By.XPATH, "//button[contains(., 'Seed bandit')]")), False)
               ).click()  # fmt: skip

    def status_has(text: str, timeout: float = 120) -> None:
        WebDriverWait(browser, timeout).until(lambda d: text in d.find_element(By.CSS_SELECTOR, f"#{P}_status").text)

    name = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"#{P}_new_name textarea, #{P}_new_name input"))
    name.send_keys("queue test")
    settings = browser.find_element(By.CSS_SELECTOR, f"#{P}_new_settings textarea, #{P}_new_settings input")
    settings.clear()
    settings.send_keys('{"steps": 3}')
    browser.find_element(By.CSS_SELECTOR, f"#{P}_create").click()
    status_has("Session 1 “queue test”")
    for prompt in ("a red circle", "a blue square"):
        _post(url, "/sessions/1/arms", {"prompt": prompt})
    label = "//*[not(self::script)][contains(text(), 'Generate ahead: queue images')]"
    next(e for e in browser.find_elements(By.XPATH, label) if e.is_displayed()).click()
    n = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"#{P}_q_images input"))
    n.clear()
    n.send_keys("5")
    browser.find_element(By.CSS_SELECTOR, f"#{P}_q_start").click()
    status_has("5 images are generated in the background")

    def progress(driver) -> str:
        return driver.find_element(By.CSS_SELECTOR, f"#{P}_q_progress").text

    # no click on ↻: the page refreshes the bar itself while the queue runs
    WebDriverWait(browser, 180).until(lambda d: "finished · 5 / 5 images" in progress(d))
    q = _api(url, "/sessions/1/queues")[0]
    assert q["state"] == "done" and q["counts"]["done"] == 5
    assert len(_api(url, "/sessions/1/images?rating=pending")) == 5
    # the backlog is there to rate: ↻ Reload shows the next image by the backlog rule
    browser.find_element(By.CSS_SELECTOR, f"#{P}_refresh").click()
    shown = WebDriverWait(browser, 60).until(lambda d: shown_image_id(d, P))
    assert int(shown) in {im["id"] for im in _api(url, "/sessions/1/images")}
