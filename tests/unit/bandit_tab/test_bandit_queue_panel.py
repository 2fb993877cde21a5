"""The tab's "Generate ahead" accordion in the standalone app: queue N images on the toy host in the background,
watch progress, cancel, workers; the rating order through the backlog."""

from __future__ import annotations

import threading
import time

import gradio as gr
from test_bandit_panel import handler

from bench._sim_worker import SimWorker
from lib_ext.app import panel_bandit
from lib_ext.app.panels import TabContext


def _queue_threads():
    return [t for t in threading.enumerate() if t.name.startswith("promptscope-queue-")]


def test_queue_from_the_tab_then_rate_the_backlog(host, tmp_path):
    hooks, closing = [], []
    with gr.Blocks() as blocks:
        panel_bandit.build(TabContext(host=host, data_dir=tmp_path / "bandit", app_hooks=hooks, close_hooks=closing))
    create = handler(blocks, "ps_bandit_create")
    add = handler(blocks, "ps_bandit_add_arm")
    start = handler(blocks, "ps_bandit_q_start")
    watch = handler(blocks, "ps_bandit_q_watch")
    cancel = handler(blocks, "ps_bandit_q_cancel")
    add_worker = handler(blocks, "ps_bandit_q_add")
    remove_worker = handler(blocks, "ps_bandit_q_remove")
    like = handler(blocks, "ps_bandit_like")
    try:
        value = create("toy", '{"steps": 1}', None, None, 0, 2, False)[0]["value"]
        add(value, "a red circle", "", "", "")
        add(value, "a blue square", "", "", "")
        assert "whole number" in start(value, "x", True)[-1]
        assert "images must be an integer from 1" in start(value, 0, True)[-1]
        html, status = start(value, 5, True)
        assert "Queue 1" in html and "5 images are generated in the background" in status
        deadline = time.time() + 60
        while "finished" not in watch(value)[0] and time.time() < deadline:
            time.sleep(0.1)
        html, table, _pick = watch(value)
        assert "finished · 5 / 5 images" in html and table == []
        # rate through the backlog: every pending image once, each pick from the posterior of its time
        seen = set()
        out = handler(blocks, "ps_bandit_refresh")(value)
        current = out[9]  # [session, arms ×3, k, mode, shared, image, caption, current id, …]
        for _ in range(5):
            assert current and current not in seen
            seen.add(current)
            out = like(value, current, "", "", None)
            current = out[2]
        assert current == "" and "Nothing left to rate" in out[1]
        # workers: clear errors, then add and remove
        table, pick, *_rest, status = add_worker(value, "ftp://x", "", "")
        assert "http:// or https://" in status
        with SimWorker(0.5) as w:
            table, pick, url, user, pw, status = add_worker(value, w.url, "", "")
            assert "added" in status and table[0][1] == w.url and url == ""
            html, status = start(value, 20, False)
            while w.requests < 1:
                time.sleep(0.02)
            html, status = cancel(value)
            assert "cancelled" in status and "cancelled" in html
            table, pick, status = remove_worker(value, pick["choices"][1])
            assert "removed" in status and table == []
            deadline = time.time() + 10
            while _queue_threads() and time.time() < deadline:
                time.sleep(0.05)
    finally:
        for hook in closing:
            hook()
    assert _queue_threads() == []
