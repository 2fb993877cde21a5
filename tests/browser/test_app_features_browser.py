"""The semantic-guidance and heatmap panels of the standalone app in a real browser: the prompt helper writes the
keyword line into the prompt box, and one Generate with both features on shows the image and its heatmap grid in
the gallery, with the guidance keys in the infotext. Uses `test_app_browser`'s app and Chromium fixtures (skipped
with the reason when Chromium or Selenium is missing). Leaves a screenshot in /tmp/app_features.png."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app_browser import app_url, browser  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
SCREENSHOT = Path("/tmp/app_features.png")


def test_heatmaps_and_guidance_panels_generate_into_the_gallery(app_url, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(app_url)
    wait = WebDriverWait(browser, 120)
    prompt = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#ps_prompt textarea")))
    prompt.send_keys("a red circle")
    steps = browser.find_element(By.CSS_SELECTOR, "#ps_steps input[type=number]")
    steps.clear()
    steps.send_keys("6")
    seed = browser.find_element(By.CSS_SELECTOR, "#ps_seed input")
    seed.clear()
    seed.send_keys("7")

    def open_panel(elem_id: str, tick: bool = True) -> None:
        browser.find_element(By.CSS_SELECTOR, f"#{elem_id} .label-wrap").click()
        if tick:
            wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f"#{elem_id} input[type=checkbox]"))).click()

    open_panel("ps_guidance", tick=False)  # left on "auto": the keyword the helper adds switches guidance on
    concept = browser.find_element(By.CSS_SELECTOR, "#ps_guidance textarea[placeholder^='e.g.']")
    concept.send_keys("blue")
    browser.find_element(By.CSS_SELECTOR, "#ps_guidance_add").click()
    wait.until(
        lambda d: "AND_TOPK blue :0.4" in d.find_element(By.CSS_SELECTOR, "#ps_prompt textarea").get_attribute("value")
    )
    open_panel("ps_heatmaps")
    browser.find_element(By.CSS_SELECTOR, "#ps_generate").click()

    def loaded_images(driver):
        imgs = driver.find_elements(By.CSS_SELECTOR, "#ps_gallery img")
        done = [
            i for i in imgs if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", i)
        ]
        return done if len(done) > 1 else False

    images = WebDriverWait(browser, 240).until(loaded_images)
    sizes = [
        browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", i) for i in images
    ]
    assert sizes[0] == [256, 256] and sizes[1][0] > 256  # the image, then its grid (one 256-px tile per word)
    info = browser.find_element(By.CSS_SELECTOR, "#ps_infotext textarea").get_attribute("value")
    assert info.startswith("a red circle\nAND_TOPK blue :0.4\n") and "Semantic guidance: neutral (auto)" in info
    assert "Error" not in browser.find_element(By.CSS_SELECTOR, "#ps_status").text
    browser.save_screenshot(str(SCREENSHOT))
