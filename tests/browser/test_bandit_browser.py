"""The seed-bandit tab in a real browser: create a session with two arms, generate a round, rate it with the
KEYBOARD (L, ←, S, U), and see the statistics table follow.

Set-up as in test_app_browser.py (Debian's Chromium + chromedriver via Selenium, headless, offline; skipped with
the reason when missing). Leaves a screenshot in /tmp/bandit.png.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.bandit_page import plot_drawn, rater_box_value, shown_image_id, stats_rows
from tests.browser.test_app_browser import ROOT, _free_port, _wait_http, browser  # noqa: F401 (fixture)

SCREENSHOT = Path(os.environ.get("PROMPTSCOPE_BANDIT_SCREENSHOT", "/tmp/bandit.png"))
P = "ps_bandit"

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def running_app(tmp_path: Path, data: Path) -> Iterator[str]:
    """The standalone app on a free port with its bandit data in `data`; yields its URL."""
    port = _free_port()
    log = (tmp_path / "app.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    env["no_proxy"] = "127.0.0.1,localhost"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lib_ext.app", "--host", "127.0.0.1", "--port", str(port), "--threads", "1",
         "--data-dir", str(data)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
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
def app(tmp_path):
    data = tmp_path / "bandit-data"
    with running_app(tmp_path, data) as url:
        yield url, data


def _api(url: str, path: str) -> dict | list:
    with urllib.request.urlopen(url + "promptscope/v1/bandit" + path, timeout=10) as r:
        return json.loads(r.read())


def test_rate_by_keyboard_and_the_table_follows(app, browser):  # noqa: F811 (fixture)
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, data = app
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    tab = wait.until(
        lambda d: next((b for b in d.find_elements(By.XPATH, "//button[contains(., 'Seed bandit')]")), False)
    )
    tab.click()

    def field(name: str):
        return wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"#{P}_{name} textarea, #{P}_{name} input"))

    def status_has(text: str, timeout: float = 120) -> None:
        WebDriverWait(browser, timeout).until(lambda d: text in d.find_element(By.CSS_SELECTOR, f"#{P}_status").text)

    def set_text(name: str, text: str) -> None:
        el = field(name)
        el.clear()
        el.send_keys(text)

    set_text("new_name", "keyboard test")
    set_text("new_settings", '{"steps": 4}')
    browser.find_element(By.CSS_SELECTOR, f"#{P}_create").click()
    status_has("Session 1 “keyboard test”")  # created; the picker's change event then loaded it
    for prompt in ("a red circle", "a blue square"):
        set_text("arm_prompt", prompt)
        n = len(_api(url, "/sessions/1/arms"))
        browser.find_element(By.CSS_SELECTOR, f"#{P}_add_arm").click()
        status_has(f"Added arm {n + 1}")
    WebDriverWait(browser, 60).until(lambda d: len(_api(url, "/sessions/1/arms")) == 2)
    k = browser.find_element(By.CSS_SELECTOR, f"#{P}_k input[type=number]")
    k.clear()
    k.send_keys("4")
    browser.find_element(By.CSS_SELECTOR, f"#{P}_run").click()
    status_has("Round 1: 4 image(s)", timeout=300)

    def shown_id(driver) -> str:
        return shown_image_id(driver, P)

    first = WebDriverWait(browser, 60).until(shown_id)
    # Typing in a text field never rates: the arm prompt takes the letters.
    set_text("arm_prompt", "lds")
    assert _api(url, "/sessions/1/images?rating=pending").__len__() == 4
    browser.execute_script("document.activeElement && document.activeElement.blur()")

    keys = ActionChains(browser)
    rated = []
    for key in ("l", Keys.ARROW_LEFT, "s"):
        before = WebDriverWait(browser, 30).until(shown_id)  # '' while the view is still sending: wait it out
        keys.send_keys(key).perform()
        WebDriverWait(browser, 30).until(lambda d, b=before: shown_id(d) not in ("", b))
        rated.append(int(before))
    assert rated[0] == int(first) and len(set(rated)) == 3
    ratings = {im["id"]: im["rating"] for im in _api(url, "/sessions/1/images")}
    assert [ratings[i] for i in rated] == ["like", "dislike", "skip"]

    def counts(driver):
        rows = [r for r in stats_rows(driver, P) if len(r) >= 8 and r[0].isdigit()]
        if len(rows) != 2:
            return False
        n, likes, dislikes, skipped = (sum(int(r[i]) for r in rows) for i in (3, 4, 5, 6))
        return (n, likes, dislikes, skipped) == (2, 1, 1, 1) and rows

    rows = WebDriverWait(browser, 60).until(counts)
    arm_of = {im["id"]: im["arm_id"] for im in _api(url, "/sessions/1/images")}
    liked_row = next(r for r in rows if int(r[0]) == arm_of[rated[0]])
    assert int(liked_row[4]) == 1

    # U undoes the skip: that image is on show again, pending.
    keys.send_keys("u").perform()
    WebDriverWait(browser, 30).until(lambda d: shown_id(d) == str(rated[2]))
    assert {im["id"]: im["rating"] for im in _api(url, "/sessions/1/images")}[rated[2]] == "pending"
    browser.execute_script(f"document.getElementById('{P}_stats_table').scrollIntoView()")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert (data / "seed_bandit.sqlite3").is_file()


def test_the_rater_is_remembered_in_this_browser_and_names_the_ratings(app, browser):  # noqa: F811 (fixture)
    """Issue 14: the Rater box's name is kept in localStorage (a reload brings it back), ratings by keyboard are
    that rater's, and the statistics' plots are drawn by vega-embed (altair charts in gr.Plot)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _data = app
    wait = WebDriverWait(browser, 120)

    def open_tab() -> None:
        browser.get(url)
        wait.until(
            lambda d: next((b for b in d.find_elements(By.XPATH, "//button[contains(., 'Seed bandit')]")), False)
        ).click()

    def field(name: str):
        return wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"#{P}_{name} textarea, #{P}_{name} input"))

    def status_has(text: str, timeout: float = 120) -> None:
        WebDriverWait(browser, timeout).until(lambda d: text in d.find_element(By.CSS_SELECTOR, f"#{P}_status").text)

    def set_text(name: str, text: str) -> None:
        el = field(name)
        el.clear()
        el.send_keys(text)

    open_tab()
    set_text("rater", "みか")  # any script
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return localStorage.getItem('promptscope.bandit.rater')") == "みか"
    )
    set_text("new_name", "raters")
    set_text("new_settings", '{"steps": 4}')
    browser.find_element(By.CSS_SELECTOR, f"#{P}_create").click()
    status_has("Session 1 “raters”")
    set_text("arm_prompt", "a red circle")
    set_text("arm_label", "赤い丸")
    browser.find_element(By.CSS_SELECTOR, f"#{P}_add_arm").click()
    status_has("Added arm 1")
    k = browser.find_element(By.CSS_SELECTOR, f"#{P}_k input[type=number]")
    k.clear()
    k.send_keys("2")
    browser.find_element(By.CSS_SELECTOR, f"#{P}_run").click()
    status_has("Round 1: 2 image(s)", timeout=300)
    first = WebDriverWait(browser, 60).until(lambda d: shown_image_id(d, P))
    browser.execute_script("document.activeElement && document.activeElement.blur()")
    ActionChains(browser).send_keys("l").perform()
    WebDriverWait(browser, 30).until(lambda d: shown_image_id(d, P) not in ("", first))  # '' until it is sent
    liked = _api(url, "/sessions/1/images?rating=like&rater=%E3%81%BF%E3%81%8B")
    assert [im["id"] for im in liked] == [int(first)] and liked[0]["ratings"] == {"みか": "like"}
    assert _api(url, "/sessions/1/images?rating=like") == []  # not the unnamed rater's
    for name in ("density", "history", "likes_plot"):
        assert WebDriverWait(browser, 60).until(lambda d, n=name: plot_drawn(d, P, n)), name
    # a reload: the box is filled from this browser's memory, and the next image is the one still pending for her
    open_tab()
    WebDriverWait(browser, 30).until(lambda d: rater_box_value(d, P) == "みか")


# A JSON POST: not a "simple" request, so Chromium asks with a CORS preflight first.
RATE_JS = """
  window.result = null;
  fetch(%(url)s, {method: "POST", headers: {"Content-Type": "application/json"},
                  body: JSON.stringify({rating: "like"})})
    .then(async (r) => { window.result = {status: r.status, body: await r.text()}; })
    .catch((e) => { window.result = {error: String(e)}; });
"""


@pytest.fixture
def foreign_site(tmp_path):
    """A second local web server (another origin: another port) serving pages written into its folder."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path / "elsewhere"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", _free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _image_to_rate(data: Path) -> int:
    from lib_ext.bandit.store import Store

    with Store(data) as store:  # beside the app's own connection (WAL), as a second tab would be
        sid = store.create_session("target")
        arm = store.add_arm(sid, "a red circle")
        rnd = store.create_round(sid, "uniform", 1, False)
        return store.add_image(sid, arm, rnd["id"], 1, "a red circle", "", [], str(data / "x.png"), "0" * 64)


def test_a_page_on_another_origin_cannot_rate(app, browser, foreign_site):  # noqa: F811 (fixture)
    from selenium.webdriver.support.ui import WebDriverWait

    url, data = app
    image_id = _image_to_rate(data)
    rating_url = f"{url}promptscope/v1/bandit/images/{image_id}/rating"
    root, site = foreign_site
    script = RATE_JS % {"url": json.dumps(rating_url)}
    (root / "attack.html").write_text(f"<!doctype html><title>another site</title><script>{script}</script>")
    browser.get(site + "attack.html")
    result = WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.result"))
    # gradio answered the preflight with Access-Control-Allow-Origin: *, so the POST went out; the route refused it
    assert result.get("status") == 403, result
    assert "another origin" in result["body"] and site.rstrip("/") in result["body"]
    assert _api(url, "/sessions/1/images")[0]["rating"] == "pending"
    # the same request from the app's own page is accepted: the refusal is about the origin, not the request
    browser.get(url)
    browser.execute_script(script)
    own = WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.result"))
    assert own.get("status") == 200, own
    assert _api(url, "/sessions/1/images")[0]["rating"] == "like"


def test_a_damaged_database_shows_the_notice_and_acknowledging_starts_a_new_one(tmp_path, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    data = tmp_path / "bandit-data"
    data.mkdir()
    (data / "seed_bandit.sqlite3").write_bytes(b"a damaged disk block " * 300)
    with running_app(tmp_path, data) as url:
        with pytest.raises(urllib.error.HTTPError) as refused:
            _api(url, "/sessions")
        assert refused.value.code == 503
        backup = next(data.glob("seed_bandit.sqlite3.corrupt-*"))
        assert str(backup) in json.loads(refused.value.read())["detail"]
        browser.get(url)
        wait = WebDriverWait(browser, 120)
        wait.until(
            lambda d: next(iter(d.find_elements(By.XPATH, "//button[contains(., 'Seed bandit')]")), False)
        ).click()
        notice = wait.until(lambda d: d.find_element(By.ID, f"{P}_store_notice"))
        wait.until(lambda d: notice.is_displayed() and backup.name in notice.text)
        button = browser.find_element(By.ID, f"{P}_store_ack")
        assert button.is_displayed()
        button.click()
        wait.until(lambda d: "Acknowledged" in d.find_element(By.CSS_SELECTOR, f"#{P}_status").text)
        wait.until(lambda d: not d.find_element(By.ID, f"{P}_store_ack").is_displayed())
        assert _api(url, "/sessions") == [] and backup.exists()
        assert Path(str(backup) + ".acknowledged").exists()
        # Moved aside while the page is open (as another process's quarantine does): the next action's status
        # line brings the notice back.
        later = data / "seed_bandit.sqlite3.corrupt-20260101-000000"
        for suffix in ("", "-wal", "-shm"):
            if Path(str(data / "seed_bandit.sqlite3") + suffix).exists():
                os.replace(str(data / "seed_bandit.sqlite3") + suffix, str(later) + suffix)
        browser.find_element(By.ID, f"{P}_refresh").click()
        wait.until(lambda d: later.name in d.find_element(By.ID, f"{P}_store_notice").text)
        assert browser.find_element(By.ID, f"{P}_store_ack").is_displayed()
        assert later.name in browser.find_element(By.CSS_SELECTOR, f"#{P}_status").text
