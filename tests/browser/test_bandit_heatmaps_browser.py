"""Word heatmaps inside the sweep, in a real browser: a session with {"heatmaps": true} generates a round and the
tab shows the per-word grid of the image on show beside it, and of the next one after a rating (set-up as in
test_app_browser.py: Debian's Chromium + chromedriver via Selenium, headless, offline; skipped when missing)."""

from __future__ import annotations

import pytest

from tests.browser.test_app_browser import browser  # noqa: F401 (fixture)
from tests.browser.test_bandit_browser import P, _api, app  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def test_the_heatmap_grid_of_the_image_on_show_is_shown(app, browser):  # noqa: F811 (fixture)
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _data = app
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: next((b for b in d.find_elements(By.XPATH, "//button[contains(., 'Seed bandit')]")), False))
    browser.find_element(By.XPATH, "//button[contains(., 'Seed bandit')]").click()

    def set_text(name: str, text: str) -> None:
        el = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"#{P}_{name} textarea, #{P}_{name} input"))
        el.clear()
        el.send_keys(text)

    def status_has(text: str, timeout: float = 120) -> None:
        WebDriverWait(browser, timeout).until(lambda d: text in d.find_element(By.CSS_SELECTOR, f"#{P}_status").text)

    def grid_src(driver) -> str:  # the grid beside the image on show: the rating view's, else the gradio gallery's
        return driver.execute_script(
            "for (const id of arguments) { const g = document.getElementById(id);"
            "  if (!g || g.offsetParent === null) continue;"
            "  const img = g.querySelector('img'); if (img) return img.getAttribute('src'); }"
            "return '';",
            f"{P}_fast_attached",
            f"{P}_attached",
        )

    set_text("new_name", "heatmaps")
    set_text("new_settings", '{"steps": 2, "heatmaps": true}')
    browser.find_element(By.CSS_SELECTOR, f"#{P}_create").click()
    status_has("Session 1")
    set_text("arm_prompt", "a red circle")
    browser.find_element(By.CSS_SELECTOR, f"#{P}_add_arm").click()
    status_has("Added arm 1")
    k = browser.find_element(By.CSS_SELECTOR, f"#{P}_k input[type=number]")
    k.clear()
    k.send_keys("2")
    browser.find_element(By.CSS_SELECTOR, f"#{P}_run").click()
    status_has("Round 1: 2 image(s)", timeout=300)
    first = WebDriverWait(browser, 60).until(grid_src)
    images = _api(url, "/sessions/1/images")
    assert all(len(im["attachments"]) == 1 for im in images), images
    assert "heatmaps" in first or "/attachments/0" in first  # the grid's file (gallery) or its route (rating view)
    browser.execute_script("document.activeElement && document.activeElement.blur()")
    ActionChains(browser).send_keys("l").perform()
    WebDriverWait(browser, 60).until(lambda d: grid_src(d) not in ("", first))
