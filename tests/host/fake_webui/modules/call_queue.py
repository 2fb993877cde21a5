"""``modules.call_queue``: the generation lock and the gradio wrappers (job state begin/end, error to HTML)."""

import html
import threading
from functools import wraps

from modules import errors, shared


class FIFOLock:
    """The WebUI's queue lock is not re-entrant: taking it again on the same thread hangs the WebUI for ever.
    Here that raises instead, so a test fails rather than hangs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._owner = None

    def acquire(self, blocking=True):
        if self._owner == threading.get_ident():
            raise RuntimeError("queue_lock taken twice on one thread: this deadlocks the WebUI")
        got = self._lock.acquire(blocking)
        if got:
            self._owner = threading.get_ident()
        return got

    def release(self):
        self._owner = None
        self._lock.release()

    def _is_owned(self):
        """Test helper (the WebUI's FIFOLock has only ``_lock``): held by the calling thread?"""
        return self._owner == threading.get_ident()

    __enter__ = acquire

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.release()


queue_lock = FIFOLock()


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)

    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    @wraps(func)
    def f(*args, **kwargs):
        # a first argument "task(...)" is the job id
        id_task = (
            args[0] if args and type(args[0]) is str and args[0].startswith("task(") and args[0].endswith(")") else None
        )
        with queue_lock:
            shared.state.begin(job=id_task)
            res = func(*args, **kwargs)
            shared.state.end()  # not in a finally: skipped when func raises, as in the WebUI
        return res

    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    @wraps(func)
    def f(*args, **kwargs):
        try:
            res = func(*args, **kwargs)
        finally:
            shared.state.skipped = False
            shared.state.interrupted = False
            shared.state.stopping_generation = False
            shared.state.job_count = 0
            shared.state.job = ""
        return res

    return wrap_gradio_call_no_job(f, extra_outputs, add_stats)


def wrap_gradio_call_no_job(func, extra_outputs=None, add_stats=False):
    @wraps(func)
    def f(*args, extra_outputs_array=extra_outputs, **kwargs):
        try:
            res = list(func(*args, **kwargs))
        except Exception as e:
            errors.report("Error completing request", exc_info=True)
            if extra_outputs_array is None:
                extra_outputs_array = [None, ""]
            res = [*extra_outputs_array, f"<div class='error'>{html.escape(f'{type(e).__name__}: {e}')}</div>"]
        if not add_stats:
            return tuple(res)
        timing = "<p class='time'>Time taken: <wbr><span class='measurement'>0.0 sec.</span></p>"
        res[-1] += f"<div class='performance'>{timing}</div>"
        return tuple(res)

    return f
