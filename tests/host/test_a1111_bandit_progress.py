"""A1111's own progress bar for the seed-bandit round: the page script puts a "task(…)" id into the round's
hidden input; the tab hands it to A1111's `wrap_gradio_gpu_call` as its FIRST argument, which registers the task
(`progress.add_task_to_queue`, `start_task`, `finish_task`) that A1111's progress bar and live preview poll.

The double's wrapper skips A1111's `modules.progress`; here it is replaced by v1.10.1's wrapper, verbatim apart
from the `progress` module, which records what the WebUI's would hold."""

from __future__ import annotations

import sys
import types
from functools import wraps
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TASK = "task(abc123def456)"


def progress_module() -> types.ModuleType:
    """v1.10.1 modules/progress.py's task bookkeeping (current_task, pending_tasks, finished_tasks)."""
    m = types.ModuleType("progress")
    m.current_task, m.pending_tasks, m.finished_tasks, m.recorded = None, {}, [], []

    def start_task(id_task):
        m.current_task = id_task
        m.pending_tasks.pop(id_task, None)

    def finish_task(id_task):
        if m.current_task == id_task:
            m.current_task = None
        m.finished_tasks.append(id_task)

    m.start_task, m.finish_task = start_task, finish_task
    m.add_task_to_queue = lambda id_task: m.pending_tasks.__setitem__(id_task, 0.0)
    m.record_results = lambda id_task, res: m.recorded.append(id_task)
    return m


@pytest.fixture
def webui(fake_webui):
    from modules import call_queue, initialize, shared

    progress = progress_module()

    def wrap_gradio_gpu_call(func, extra_outputs=None):  # v1.10.1 modules/call_queue.py
        @wraps(func)
        def f(*args, **kwargs):
            if args and type(args[0]) is str and args[0].startswith("task(") and args[0].endswith(")"):
                id_task = args[0]
                progress.add_task_to_queue(id_task)
            else:
                id_task = None
            with call_queue.queue_lock:
                shared.state.begin(job=id_task)
                progress.start_task(id_task)
                try:
                    res = func(*args, **kwargs)
                    progress.record_results(id_task, res)
                finally:
                    progress.finish_task(id_task)
                shared.state.end()
            return res

        return call_queue.wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)

    call_queue.wrap_gradio_gpu_call = wrap_gradio_gpu_call
    demo, app = initialize.boot(str(REPO))
    yield fake_webui, progress
    from promptscope_webui import unload_promptscope

    unload_promptscope(fake_webui)


def run_event(m: Any, tab: Any) -> tuple[Any, dict]:
    blocks = m.initialize.tabs[0][0]
    for dep, fn in zip(blocks.dependencies, blocks.fns):
        targets = [t[0] if isinstance(t, list | tuple) else t for t in dep["targets"]]
        if tab.c["run"]._id in targets:
            return fn.fn, dep
    raise LookupError("no run handler")


def test_the_round_runs_as_an_a1111_task_with_the_page_given_id(webui, sd_model, tmp_path):
    m, progress = webui
    b = sys.modules["promptscope_a1111.bandit_tab"]
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    tab = b.current_tab
    value = tab.create_session("p", '{"steps": 2, "width": 64, "height": 64}', None, None, 0, 2, False)[0]["value"]
    tab.add_arm(value, "a cat", "", "", "")
    run, dep = run_event(m, tab)
    # the hidden task-id box is the round's last input, and the page script fills it (RUN_JS, index 4)
    assert dep["inputs"][-1] == tab.c["task_id"]._id and len(dep["inputs"]) == 5
    ui = sys.modules["promptscope_lib_ext.bandit.ui"]
    assert ui.TASK_ID_INPUT == 4 and "promptscopeBanditSubmit(4, args)" in (dep.get("js") or dep.get("_js") or "")
    # gradio fills its progress tracker between the inputs, as before
    from gradio.helpers import special_args

    inputs, progress_index, _ = special_args(run, [value, 2, None, False, TASK])
    assert progress_index == 4 and inputs[-1] == TASK

    seen: list[Any] = []
    probe = lambda params: seen.append((progress.current_task, m.call_queue.queue_lock._is_owned()))  # noqa: E731
    m.script_callbacks.on_cfg_denoiser(probe)
    out = run(value, 2, None, False, None, TASK)
    m.script_callbacks.remove_callbacks_for_function(probe)
    assert "Round 1: 2 image(s)" in out[-1], out[-1]
    assert seen and all(s == (TASK, True) for s in seen)  # A1111's progress API reports the round as active
    assert progress.finished_tasks == [TASK] and progress.current_task is None and progress.recorded == [TASK]
    assert TASK not in progress.pending_tasks


def test_without_a_task_id_the_round_still_runs_untracked(webui, sd_model, tmp_path):
    m, progress = webui
    b = sys.modules["promptscope_a1111.bandit_tab"]
    m.shared.opts.data[b.OPT_DIR] = str(tmp_path / "bandit")
    tab = b.current_tab
    value = tab.create_session("p", '{"steps": 2, "width": 64, "height": 64}', None, None, 0, 1, False)[0]["value"]
    tab.add_arm(value, "a cat", "", "", "")
    run, _dep = run_event(m, tab)
    for call in (lambda: run(value, 1, None, False), lambda: run(value, 1, None, False, None, "")):
        out = call()
        assert "image(s)" in out[-1] and "Time taken" in out[-1], out[-1]
    assert progress.finished_tasks == [None, None] and progress.pending_tasks == {}
