"""The tab's "Generate ahead" accordion: queue N images (progress, ETA, cancel) and the session's worker WebUIs.

Plain handler methods over the host's `QueueRunner` (testable without a browser); `build` makes the components
inside the bandit tab and wires them. While the tab shows a running queue, javascript/promptscope_bandit.js presses
the ↻ button every few seconds (unqueued: it never waits behind a generation; gradio's `every` would hold one of
the queue's workers for as long as the page is open).
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from .queue import QueueRunner
from .store import StoreError

WORKER_HEADERS = ["id", "url", "auth", "status", "done", "errors", "images/min", "last error"]
NO_WORKER = "(choose a worker)"


def _msg(text: str) -> str:
    return f"<span>{html.escape(text)}</span>"


def _err(text: str) -> str:
    return f"<span class='ps-error'>⚠ {html.escape(text)}</span>"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def queue_html(q: dict[str, Any] | None) -> str:
    """A queue's progress bar, counts, speed and ETA, and its executors."""
    if q is None:
        return "<div class='ps-queue'>No queue in this session yet.</div>"
    c, total = q["counts"], max(q["total"], 1)
    pct = 100.0 * c["done"] / total
    state = {"running": "running", "done": "finished", "cancelled": "cancelled"}[q["state"]]
    if q["state"] == "running" and not q["running_here"]:
        state = "waiting to be resumed (not running in this process)"
    rate = q.get("rate_per_minute")
    parts = [
        f"<b>Queue {int(q['id'])}</b>: {state} · {c['done']} / {q['total']} images",
        f"{c['claimed']} generating" if c["claimed"] else "",
        f"{c['failed']} failed" if c["failed"] else "",
        f"{c['cancelled']} cancelled" if c["cancelled"] else "",
        f"{rate:.1f} images/min" if rate else "",
        f"ETA {duration(q.get('eta_seconds'))}" if q["state"] == "running" and q.get("eta_seconds") else "",
    ]
    rows = "".join(
        f"<li>{html.escape(e['name'])}{' ' + html.escape(e['url']) if e['url'] else ''}: {html.escape(e['status'])}, "
        f"{e['done']} done, {e['errors']} errors"
        + (f", {e['images_per_minute']:.1f}/min" if e["images_per_minute"] else "")
        + (f" — <span class='ps-error'>{html.escape(e['last_error'][:200])}</span>" if e["last_error"] else "")
        + "</li>"
        for e in q.get("executors") or []
    )
    failed = "".join(
        f"<li>job {int(f['job_id'])} (arm {int(f['arm_id'])}): {html.escape(str(f['error'])[:200])}</li>"
        for f in q.get("failed_jobs") or []
    )
    return (
        f"<div class='ps-queue' data-queue-id='{int(q['id'])}' data-state='{html.escape(q['state'])}'>"
        f"<div style='background:#8884;height:0.6em;border-radius:0.3em'><div style='background:#4a4;height:100%;"
        f"width:{pct:.1f}%;border-radius:0.3em'></div></div>"
        f"{' · '.join(p for p in parts if p)}"
        + (f"<ul>{rows}</ul>" if rows else "")
        + (f"<div class='ps-error'>Failed jobs:</div><ul>{failed}</ul>" if failed else "")
        + (f"<div class='ps-error'>{html.escape(q['error'])}</div>" if q.get("error") else "")
        + "</div>"
    )


class QueuePanel:
    def __init__(self, tab: Any, runner: QueueRunner | None):
        self.tab, self.runner = tab, runner
        self.c: dict[str, Any] = {}

    def _runner(self) -> QueueRunner:
        if self.runner is None:
            raise ValueError("this host runs no generation queue")
        return self.runner

    def latest(self, sid: int) -> dict[str, Any] | None:
        queues = self._runner().queues(sid)
        running = [q for q in queues if q["state"] == "running"]
        return (running or queues or [None])[-1]

    def workers_view(self, sid: int | None) -> list[Any]:
        """[workers table, worker picker]."""
        if sid is None or self.runner is None:
            return [[], gr.update(choices=[NO_WORKER], value=NO_WORKER)]
        rows, choices = [], [NO_WORKER]
        for w in self.runner.workers(sid):
            live = w["live"] or {}
            rate = live.get("images_per_minute")
            rows.append([w["id"], w["url"], "user + password" if w["has_password"] else "none",
                         live.get("status", "not in a running queue"), w["done"], w["errors"],
                         "" if not rate else f"{rate:.1f}", (w["last_error"] or "")[:200]])  # fmt: skip
            choices.append(f"{w['id']}: {w['url']}")
        return [rows, gr.update(choices=choices, value=NO_WORKER)]

    def view(self, session_value: Any) -> list[Any]:
        """[queue html, workers table, worker picker]."""
        from .ui import parse_id

        try:
            sid = parse_id(session_value)
            if sid is None or self.runner is None:
                return [queue_html(None), *self.workers_view(None)]
            return [queue_html(self.latest(sid)), *self.workers_view(sid)]
        except (ValueError, StoreError) as exc:
            return [_err(str(exc)), gr.update(), gr.update()]

    def start(self, session_value: Any, images: Any, local: Any) -> list[Any]:
        """[queue html, status]."""
        try:
            sid = self.tab._session_id(session_value)
            try:
                n = int(images)
            except (TypeError, ValueError):
                raise ValueError("images to queue must be a whole number") from None
            if n != images and float(images) != n:
                raise ValueError("images to queue must be a whole number")
            q = self._runner().start(sid, n, bool(local))
            return [queue_html(q), _msg(f"Queue {q['id']}: {n} images are generated in the background; rate them "
                                        "as they come (the most informative first).")]  # fmt: skip
        except (ValueError, StoreError) as exc:
            return [gr.update(), _err(str(exc))]

    def cancel(self, session_value: Any) -> list[Any]:
        try:
            sid = self.tab._session_id(session_value)
            q = self.latest(sid)
            if q is None or q["state"] != "running":
                return [queue_html(q), _msg("No queue is running in this session.")]
            q = self._runner().cancel(q["id"])
            return [queue_html(q), _msg(f"Queue {q['id']} cancelled: images in progress are still recorded.")]
        except (ValueError, StoreError) as exc:
            return [gr.update(), _err(str(exc))]

    def add_worker(self, session_value: Any, url: Any, username: Any, password: Any) -> list[Any]:
        """[workers table, picker, url, username, password, status]."""
        try:
            sid = self.tab._session_id(session_value)
            w = self._runner().add_worker(sid, url, username or None, password or None)
            return [*self.workers_view(sid), "", "", "", _msg(f"Worker {w['id']} ({w['url']}) added.")]
        except (ValueError, StoreError) as exc:
            return [gr.update()] * 5 + [_err(str(exc))]

    def remove_worker(self, session_value: Any, pick: Any) -> list[Any]:
        """[workers table, picker, status]."""
        from .ui import parse_id

        try:
            sid = self.tab._session_id(session_value)
            wid = parse_id(str(pick).split(":", 1)[0]) if pick and pick != NO_WORKER else None
            if wid is None:
                raise ValueError("choose a worker to remove")
            if self._runner().service().store.get_worker(wid)["session_id"] != sid:
                raise ValueError(f"worker {wid} belongs to another session")
            self._runner().remove_worker(wid)
            return [*self.workers_view(sid), _msg(f"Worker {wid} removed (its job in progress finishes first).")]
        except (ValueError, StoreError) as exc:
            return [gr.update(), gr.update(), _err(str(exc))]

    def build(self) -> None:
        p, c = self.tab.prefix, self.c
        with gr.Accordion("Generate ahead: queue images, worker WebUIs", open=False):
            with gr.Row():
                c["images"] = gr.Number(value=100, precision=0, label="Images to queue", elem_id=f"{p}_q_images")
                c["local"] = gr.Checkbox(value=True, label="This WebUI generates too", elem_id=f"{p}_q_local")
                c["start"] = gr.Button("Queue N images", variant="primary", elem_id=f"{p}_q_start")
                c["cancel"] = gr.Button("Cancel queue", elem_id=f"{p}_q_cancel")
                c["watch"] = gr.Button("↻ Progress", elem_id=f"{p}_q_watch")
            c["progress"] = gr.HTML(queue_html(None), elem_id=f"{p}_q_progress")
            gr.Markdown("Worker WebUIs (one per GPU, started with `--api`) generate queued images through their "
                        "`/sdapi/v1/txt2img`; a worker that fails gives its job back to the others.")  # fmt: skip
            c["workers"] = gr.Dataframe(headers=WORKER_HEADERS, value=[], interactive=False, wrap=True,
                                        elem_id=f"{p}_q_workers")  # fmt: skip
            with gr.Row():
                c["url"] = gr.Textbox(label="Worker URL", placeholder="http://127.0.0.1:7861", elem_id=f"{p}_q_url")
                c["user"] = gr.Textbox(label="User (--api-auth)", elem_id=f"{p}_q_user")
                c["password"] = gr.Textbox(label="Password", type="password", elem_id=f"{p}_q_password")
                c["add"] = gr.Button("Add worker", elem_id=f"{p}_q_add")
            with gr.Row():
                c["pick"] = gr.Dropdown(choices=[NO_WORKER], value=NO_WORKER, label="Worker",
                                        elem_id=f"{p}_q_pick")  # fmt: skip
                c["remove"] = gr.Button("Remove worker", elem_id=f"{p}_q_remove")

    def wire(self) -> None:
        c, t = self.c, self.tab.c
        view_out = [c["progress"], c["workers"], c["pick"]]
        t["session"].change(self.view, [t["session"]], view_out)
        c["start"].click(self.start, [t["session"], c["images"], c["local"]], [c["progress"], t["status"]])
        c["watch"].click(self.view, [t["session"]], view_out, queue=False)
        c["cancel"].click(self.cancel, [t["session"]], [c["progress"], t["status"]])
        c["add"].click(self.add_worker, [t["session"], c["url"], c["user"], c["password"]],
                       [c["workers"], c["pick"], c["url"], c["user"], c["password"], t["status"]])  # fmt: skip
        c["remove"].click(self.remove_worker, [t["session"], c["pick"]], [c["workers"], c["pick"], t["status"]])
