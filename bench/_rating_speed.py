"""Rating at speed in a real browser: how long from a rating key press to the next image on screen.

A backlog of N small pending images is written straight into a store (no generation), the standalone app serves
it, and headless Chromium (Selenium, Debian's chromium + chromedriver) opens the tab and rates the whole backlog
with real key presses (WebDriver input, so the browser's own event pipeline) at a fixed pace. A script put into
the page beside ours (not part of the code measured) takes each key event's `timeStamp` and, when the rating
view's frame gets its next <img>, the time after the next paint that shows it complete (requestAnimationFrame,
then a task: the frame has been painted by then); an image not yet loaded counts until its load event.

Used by `python -m bench seed_bandit_scale` (`next_image_ms_p95`) and tests/browser/test_bandit_speed_browser.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PROMPTSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("PROMPTSCOPE_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync")  # fmt: skip
P = "ps_bandit"
ARMS = ("a red circle", "a blue square", "a green triangle", "a yellow star")
KEYS = ("l", "d", "s")

# The page-side probe: key event time → the rating view's new <img> complete on a painted frame.
PROBE_JS = """
const frame = document.getElementById(arguments[0]);
const probe = window.__psProbe = {rec: [], t0: null, key: null};
document.addEventListener("keydown", (e) => {
  if (["l", "d", "s", "u"].includes(e.key) && probe.t0 === null) {
    probe.t0 = e.timeStamp; probe.key = e.key; probe.handled = performance.now();
  }
}, true);
new MutationObserver(() => {
  const img = frame.querySelector("img");
  if (!img || probe.t0 === null) return;
  const t0 = probe.t0, key = probe.key, handled = probe.handled - t0;
  probe.t0 = null;
  const id = img.getAttribute("data-image-id");
  const ready = img.complete && img.naturalWidth > 0;
  const painted = () => requestAnimationFrame((frame) => setTimeout(() => {
    probe.rec.push({ms: performance.now() - t0, id: id, key: key, ready: ready, dispatch: handled, frame: frame - t0});
  }, 0));
  if (ready) painted(); else img.addEventListener("load", painted, {once: true});
}).observe(frame, {childList: true});
"""


def chromium_missing() -> str | None:
    """Why the browser measurement cannot run here, or None."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        return f"Chromium not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


def _png(rng: np.random.Generator, size: int) -> bytes:
    from PIL import Image

    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # distinct per image, cheap to encode
    img = Image.fromarray(blocks).resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def seed_backlog(data: Path, n_images: int, round_size: int = 8, size: int = 128) -> int:
    """A session with len(ARMS) arms and `n_images` pending images in rounds of `round_size`, written straight into
    the store (one transaction per round); returns the session id."""
    from lib_ext.bandit.hosting import ServiceProvider

    rng = np.random.default_rng(0)
    provider = ServiceProvider(data, seed=0)
    try:
        svc = provider()
        sid = svc.create_session("backlog", {"steps": 8}, round_size=round_size)["id"]
        arms = [svc.add_arm(sid, prompt)["id"] for prompt in ARMS]
        folder = data / "images" / f"session_{sid}"
        folder.mkdir(parents=True, exist_ok=True)
        store, made = svc.store, 0
        while made < n_images:
            k = min(round_size, n_images - made)
            rnd = store.create_round(sid, "more_good", k, False)
            with store._write() as conn:  # a bench: one commit per round, not per image
                for j in range(k):
                    arm = arms[int(rng.integers(len(arms)))]
                    png = _png(rng, size)
                    path = folder / f"r{rnd['number']:05d}_{j:02d}.png"
                    path.write_bytes(png)
                    store.add_image(sid, arm, rnd["id"], int(rng.integers(2**31)), ARMS[arms.index(arm)], "", [],
                                    str(path), hashlib.sha256(png).hexdigest(), _conn=conn)  # fmt: skip
            made += k
        return sid
    finally:
        provider.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(data: Path, log_path: Path) -> Iterator[str]:
    """The standalone app on a free port with its bandit data in `data`; yields its URL."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADIO_ANALYTICS_ENABLED": "False", "no_proxy": "127.0.0.1"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lib_ext.app", "--host", "127.0.0.1", "--port", str(port), "--threads", "1",
             "--data-dir", str(data)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the app exited with code {proc.returncode}: {log_path.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url} did not answer within 180 s") from None
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    if width < 500:  # narrower than a headless window can be: a phone's viewport, as DevTools' device mode makes it
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 3, "mobile": True})  # fmt: skip
    try:
        yield driver
    finally:
        driver.quit()


def shown_id(driver: Any) -> str:
    """The image the rating view shows once it is painted complete ('' while none)."""
    return driver.execute_script(
        "const f = document.getElementById(arguments[0]); const img = f && f.querySelector('img');"
        "return img && img.complete && img.naturalWidth > 0 ? img.getAttribute('data-image-id') : '';",
        f"{P}_fast_frame",
    )


def open_session(driver: Any, url: str, timeout: float = 120) -> str:
    """Open the tab, choose the first session in the picker, wait for the rating view's first image; its id."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, timeout)
    wait.until(lambda d: next((b for b in d.find_elements(By.XPATH, "//button[contains(., 'Seed bandit')]")), False)
               ).click()  # fmt: skip
    box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"#{P}_session input"))
    box.click()
    wait.until(lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, f"#{P}_session ul li") if o.is_displayed()),
                              False)).click()  # fmt: skip
    driver.execute_script("document.activeElement && document.activeElement.blur()")
    # the tab's own events have settled: the rating view has taken over the image the tab shows last
    wait.until(lambda d: d.execute_script(
        "const c = document.querySelector(arguments[0]); const v = window.promptscopeBanditView();"
        "return !!c && v.on && v.viewKey === c.getAttribute('data-view') && v.session !== null",
        f"#{P}_caption .ps-caption"))  # fmt: skip
    # and the page has finished drawing what the session brought (the statistics' plots): frames come on time
    wait.until(lambda d: all(d.execute_script(
        "const e = document.querySelector(arguments[0]); return !e || !!e.querySelector('canvas, svg')",
        f"#{P}_{name}") for name in ("density", "history", "likes_plot")))  # fmt: skip
    wait.until(lambda d: d.execute_async_script(QUIET_JS) < 50)
    return wait.until(shown_id)


# The longest gap between animation frames over half a second (ms): the page's main thread is free when it is short.
QUIET_JS = """
const done = arguments[arguments.length - 1];
let last = performance.now(), worst = 0;
const start = last;
function tick(now) {
  worst = Math.max(worst, now - last); last = now;
  if (now - start < 500) requestAnimationFrame(tick); else done(worst);
}
requestAnimationFrame(tick);
"""


def p95(values: list[float]) -> float | None:
    return float(np.percentile(values, 95)) if values else None


def rate_backlog(driver: Any, n: int, interval: float, seed: int = 0, undo_every: int = 0) -> dict[str, Any]:
    """Rate `n` images by key presses `interval` s apart (every `undo_every`-th press an U instead: the undone
    image comes back); returns the probe's timings and what was shown."""
    from selenium.webdriver.common.action_chains import ActionChains

    rng = np.random.default_rng(seed)
    driver.execute_script(PROBE_JS, f"{P}_fast_frame")
    keys = ActionChains(driver)
    presses, t_next = [], time.perf_counter()
    for i in range(n):
        key = "u" if undo_every and i % undo_every == undo_every - 1 else KEYS[int(rng.integers(len(KEYS)))]
        before = shown_id(driver) if key == "u" else None
        keys.send_keys(key).perform()
        presses.append((key, before))
        t_next += interval
        time.sleep(max(0.0, t_next - time.perf_counter()))
    deadline, last, still = time.monotonic() + 60, -1, 0.0
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:  # every rating sent and the probe quiet for a second
        state = driver.execute_script(
            "const v = window.promptscopeBanditView(); return {rec: window.__psProbe.rec.length, "
            "outbox: v.outbox.length, shown: v.shown ? v.shown.data.id : null}"
        )
        still = still + 0.2 if state["rec"] == last and state["outbox"] == 0 else 0.0
        if still >= 1.0:
            break
        last = state["rec"]
        time.sleep(0.2)
    rec = driver.execute_script("return window.__psProbe.rec")
    return {"records": rec, "presses": presses, "state": state}


def summarize(rec: list[dict[str, Any]], n: int) -> dict[str, Any]:
    ms = [r["ms"] for r in rec]
    ratings = [r["ms"] for r in rec if r["key"] != "u"]
    return {
        "next_image_ms_p95": p95(ms),
        "next_image_ms_p95_first_100": p95(ratings[:100]),
        "next_image_ms_p95_last_100": p95(ratings[-100:]),
        "next_image_ms_median": float(np.median(ms)) if ms else None,
        "next_image_ms_max": max(ms) if ms else None,
        "next_image_not_loaded_at_press": sum(1 for r in rec if not r["ready"]),
        "key_presses": n,
        "measured": len(rec),  # fewer than the presses: a press while no image was on show rates nothing
    }


def measure(n: int, interval: float = 0.15, size: int = 128, keep: Path | None = None) -> dict[str, Any]:
    """Rate a seeded backlog of `n` images in Chromium; figures for the bench (see module doc)."""
    from lib_ext.bandit.store import Store

    with tempfile.TemporaryDirectory(prefix="ps-speed-") as tmp:
        data = Path(tmp) / "data"
        t0 = time.perf_counter()
        sid = seed_backlog(data, n + 20, size=size)  # a few spare: the last press still has a next image
        seeded = time.perf_counter() - t0
        with running_app(data, Path(tmp) / "app.log") as url, chromium() as driver:
            open_session(driver, url)
            t0 = time.perf_counter()
            run = rate_backlog(driver, n, interval)
            seconds = time.perf_counter() - t0
        with Store(data) as store:
            rated = n + 20 - len(store.pending_images(sid, ""))
        if keep is not None:
            shutil.copy(Path(tmp) / "app.log", keep)
    out = summarize(run["records"], n)
    out.update({"backlog_images": n + 20, "image_px": size, "press_interval_ms": interval * 1000,
                "ratings_stored": rated, "session_seconds": round(seconds, 1),
                "seed_seconds": round(seeded, 1)})  # fmt: skip
    return out
