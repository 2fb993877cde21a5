"""The standalone app in a real browser: start it, type a prompt, press Generate, see the image in the gallery.

Drives Debian's Chromium (`apt-get install chromium chromium-driver`) with Selenium, headless and offline; skipped
with the reason when either is missing. Leaves a screenshot in /tmp/app.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PROMPTSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("PROMPTSCOPE_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = Path(os.environ.get("PROMPTSCOPE_SCREENSHOT", "/tmp/app.png"))
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def app_url(tmp_path):
    port = _free_port()
    log = (tmp_path / "app.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    env["no_proxy"] = "127.0.0.1,localhost"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lib_ext.app", "--host", "127.0.0.1", "--port", str(port), "--threads", "1"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_http(url, proc, timeout=180)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print((tmp_path / "app.log").read_text()[-3000:])


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f"Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_generate_shows_an_image_in_the_gallery(app_url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(app_url)
    wait = WebDriverWait(browser, 120)
    prompt = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#ps_prompt textarea")))
    prompt.send_keys("a red circle and a blue square")
    steps = browser.find_element(By.CSS_SELECTOR, "#ps_steps input[type=number]")
    steps.clear()
    steps.send_keys("8")
    seed = browser.find_element(By.CSS_SELECTOR, "#ps_seed input")
    seed.clear()
    seed.send_keys("1234")
    browser.find_element(By.CSS_SELECTOR, "#ps_generate").click()

    def gallery_image(driver):
        for img in driver.find_elements(By.CSS_SELECTOR, "#ps_gallery img"):
            if driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img):
                return img
        return False

    img = WebDriverWait(browser, 240).until(gallery_image)
    size = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
    assert size == [256, 256]  # the 32×32 image, upscaled for display
    info = WebDriverWait(browser, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#ps_infotext textarea").get_attribute("value") or False
    )
    assert info.startswith("a red circle and a blue square\n")
    assert "Steps: 8, Sampler: Euler a, CFG scale: 3, Seed: 1234, Size: 32x32" in info  # the app's defaults
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    # Interrupt: a long generation stops at its next step (the button bypasses the queue the generation holds).
    steps = browser.find_element(By.CSS_SELECTOR, "#ps_steps input[type=number]")
    steps.clear()
    steps.send_keys("150")
    batch = browser.find_element(By.CSS_SELECTOR, "#ps_batch_size input[type=number]")
    batch.clear()
    batch.send_keys("8")  # 150 steps of 16 rows: far longer than the wait below
    browser.find_element(By.CSS_SELECTOR, "#ps_generate").click()
    time.sleep(2)
    started = time.monotonic()
    browser.find_element(By.CSS_SELECTOR, "#ps_interrupt").click()
    WebDriverWait(browser, 60).until(lambda d: "Interrupted" in d.find_element(By.CSS_SELECTOR, "#ps_status").text)
    assert time.monotonic() - started < 30
    browser.save_screenshot(str(SCREENSHOT.with_name(SCREENSHOT.stem + "_interrupted.png")))

    # Nothing the page needs comes from outside this machine (no web fonts: the app sets system fonts). The one
    # exception is gradio's own index.html, which loads iframe-resizer `async` from a CDN for embedding; offline
    # that request fails without holding anything up (A1111's page has the same tag).
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [u for u in urls if not u.startswith(app_url) and "iframe-resizer" not in u]
    assert not outside, outside
