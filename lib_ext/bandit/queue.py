"""Generate ahead: a durable queue of N images, generated in the background by this WebUI and/or worker WebUIs.

- Allocation: batched Thompson sampling (the session's mode: `BanditService.plan_images`, i.e. policy.plan_round)
  over the posterior *at the moment a batch is planned*; pending images never count as ratings. A batch (one
  round in the store) is planned only when no job is waiting, so ratings made while the queue runs steer the rest.
  A batch holds the session's round size, at least one image per executor.
- Durability (store.py, `queue_jobs`): a job is claimed (committed) before it is generated, and its image is
  recorded in the same transaction that marks it done (`complete_queue_job`: the image row and `image_id` are
  written together, `image_id` is UNIQUE), so a job never has two images. Crash points (kill -9):
  1. after the batch's round and jobs are written: they are one transaction (all or none);
  2. after a claim, before the image exists: the job is 'claimed' by a dead owner; the next start takes the queue
     over (`take_queue`: the owner's process is gone, or silent for `LEASE_SECONDS`) and gives its claims back;
  3. after the image file is written, before it is recorded: the file is at the job's own path and carries the
     job id in its infotext (`PromptScope job`), so the resumed job adopts it instead of generating it again;
     a file that cannot be read (cut short) is removed and the job generated again;
  4. after the record's commit: done; nothing to redo.
- Workers: each executor (this WebUI's pipeline, or one worker WebUI) claims one job at a time. A worker that
  fails (down, refusing, bad answer) gives the job back at once and waits (0.5 s doubling to 30 s) before trying
  again, so the others take its jobs; being down does not count against the job, an error about the job (HTTP 4xx
  such as 422, an exception of the local pipeline) does, and after `MAX_ATTEMPTS` the job is 'failed' with the
  error (shown, never silently dropped).
- Cancel: pending jobs become 'cancelled' at once; images in flight finish and are recorded. `close()` (server
  shutdown) aborts requests in flight, interrupts the local pipeline, gives the claims back and joins every thread;
  the queue stays 'running' in the store and `resume_all()` at the next start carries on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .service import INFOTEXT_KEYS, BanditService, Job, _id
from .store import StoreError, sha256_file
from .workers import (
    WorkerClient,
    WorkerError,
    check_credentials,
    check_worker_url,
    png_with_infotext,
    with_infotext_keys,
)

log = logging.getLogger("promptscope")

MAX_QUEUE = 100_000
MAX_ATTEMPTS = 3  # errors about a job itself before it is 'failed'
LEASE_SECONDS = 30.0  # an owner silent this long (and not known to be alive) loses the queue
HEARTBEAT_SECONDS = 5.0
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0
JOB_KEY = "PromptScope job"  # infotext key: the queue job an image file belongs to
LOCAL = "local"
GenerateFn = Callable[..., Sequence[Any]]  # generate(jobs, progress) -> [ImageResult]


class QueueConflictError(ValueError):
    """The request conflicts with the queue's state (HTTP 409)."""


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_gone(owner: str) -> bool:
    """The owner is a process on this machine that no longer exists."""
    try:
        host, pid, _ = owner.rsplit(":", 2)
        pid_n = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname() or pid_n <= 0:
        return False
    if pid_n == os.getpid():
        return False  # another runner of this process: it has its own lease
    try:
        os.kill(pid_n, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def job_of(row: dict[str, Any]) -> Job:
    """A stored queue job as the Job a host's generate callback takes (infotext: session, arm, round, job)."""
    info = {
        INFOTEXT_KEYS["session"]: str(row["session_id"]),
        INFOTEXT_KEYS["arm"]: str(row["arm_id"]),
        INFOTEXT_KEYS["round"]: str(row["round_number"]),
    }
    if row["slot_choices"]:
        info["PromptScope slots"] = json.dumps(list(row["slot_choices"]))
    info[JOB_KEY] = str(row["id"])
    return Job(row["idx"], row["session_id"], row["round_id"], row["round_number"], row["arm_id"], row["seed"],
               row["prompt"], row["negative"], dict(row["settings"]), tuple(row["slot_choices"]), info)  # fmt: skip


def job_path(images_dir: Path, job: Job) -> Path:
    """A queue job's own image file (the first name `hosting.image_path` tries): one per job."""
    return images_dir / f"session_{int(job.session_id)}" / f"r{job.round_number:04d}_{job.index:03d}_{job.seed}.png"


def _file_job(path: Path) -> int | None:
    """The queue job a PNG says it belongs to; None if unreadable (cut short) or not one of ours."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            text = str(im.info.get("parameters", ""))
    except Exception:
        return None
    m = re.search(rf"(?:^|[,\s]){re.escape(JOB_KEY)}: (\d+)(?:,|$|\s)", text)
    return int(m.group(1)) if m else None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@dataclass
class ExecutorStats:
    name: str
    url: str | None = None
    worker_id: int | None = None
    status: str = "idle"
    done: int = 0
    errors: int = 0
    last_error: str | None = None
    job_id: int | None = None
    failures_in_row: int = 0
    retry_at: float = 0.0
    seconds: deque = field(default_factory=lambda: deque(maxlen=50))

    def as_dict(self) -> dict[str, Any]:
        per_image = sum(self.seconds) / len(self.seconds) if self.seconds else None
        return {
            "name": self.name, "url": self.url, "worker_id": self.worker_id, "status": self.status,
            "done": self.done, "errors": self.errors, "last_error": self.last_error, "job_id": self.job_id,
            "seconds_per_image": per_image, "images_per_minute": 60.0 / per_image if per_image else None,
        }  # fmt: skip


class _Executor:
    """Generates one job at a time; `generate` returns (image path, [(attachment path, caption)])."""

    def __init__(self, stats: ExecutorStats):
        self.stats = stats

    def generate(self, job: Job, path: Path) -> tuple[Path, list[tuple[str, str]]]:
        raise NotImplementedError

    def job_fault(self, exc: BaseException) -> bool:
        """Whether the failure was about the job (counts towards MAX_ATTEMPTS) rather than the executor."""
        return True

    def abort(self) -> None:
        pass


class LocalExecutor(_Executor):
    """This WebUI's own pipeline through the host's generate callback (A1111: under its queue lock)."""

    def __init__(self, generate: GenerateFn, interrupt: Callable[[], None] | None, progress: Any = None):
        super().__init__(ExecutorStats(LOCAL))
        self._generate, self._interrupt, self._progress = generate, interrupt, progress

    def generate(self, job: Job, path: Path) -> tuple[Path, list[tuple[str, str]]]:
        results = list(self._generate([job], self._progress))
        if not results:
            raise InterruptedError("the generation was interrupted before the image was made")
        res = results[0]
        return Path(res.path), [(str(p), c) for p, c in res.attachments]

    def abort(self) -> None:
        if self._interrupt is not None:
            self._interrupt()


class HttpExecutor(_Executor):
    """A worker WebUI through its `/sdapi/v1/txt2img`; the images are written into the job's own paths."""

    def __init__(self, worker: dict[str, Any], timeout: float):
        super().__init__(ExecutorStats(f"worker {worker['id']}", worker["url"], worker["id"]))
        self.client = WorkerClient(worker["url"], worker.get("username"), worker.get("password"), timeout)

    def generate(self, job: Job, path: Path) -> tuple[Path, list[tuple[str, str]]]:
        got = self.client.txt2img(job.prompt, job.negative, job.seed, job.settings)
        try:
            image = png_with_infotext(got.image, with_infotext_keys(got.infotext, job.infotext))
            extras = [(png_with_infotext(png, text), text) for png, text in got.extras]
        except Exception as exc:  # PIL could not read it
            raise WorkerError(f"worker {self.client.url} sent an image that cannot be read: {exc}") from None
        attached = []
        for n, (png, caption) in enumerate(extras):
            kind = "heatmaps" if caption.startswith("Attention heatmaps") else f"extra{n}"
            extra_path = path.with_name(f"{path.stem}-{kind}.png")
            _write_atomic(extra_path, png)
            attached.append((str(extra_path), caption))
        _write_atomic(path, image)  # last: its presence means the job's files are complete
        return path, attached

    def job_fault(self, exc: BaseException) -> bool:
        status = getattr(exc, "status", None)
        return status is not None and 400 <= status < 500 and status not in (401, 403, 404, 408, 429)

    def abort(self) -> None:
        self.client.abort()


class QueueRun:
    """The threads running one queue in this process: one per executor, and a heartbeat."""

    def __init__(self, runner: QueueRunner, queue: dict[str, Any], executors: list[_Executor]):
        self.runner, self.queue_id, self.session_id = runner, queue["id"], queue["session_id"]
        self.svc = runner.service()  # pinned: a data-folder change closes it and this run stops with it
        self.executors = executors
        self.stop_event = threading.Event()
        self.ended = threading.Event()  # the last executor is out and the queue let go of
        self.closing = False
        self.plan_lock = threading.Lock()
        self.started = runner.clock()
        self.done_here = 0
        self.error: str | None = None
        self._alive = len(executors)
        self._alive_lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, args=(ex,), name=f"promptscope-queue-{self.queue_id}-{ex.stats.name}",
                             daemon=True)
            for ex in executors
        ]  # fmt: skip
        self.heartbeat = threading.Thread(target=self._beat, name=f"promptscope-queue-{self.queue_id}-heartbeat",
                                          daemon=True)  # fmt: skip

    @property
    def store(self) -> Any:
        return self.svc.store

    def start(self) -> None:
        for t in self.threads:
            t.start()
        self.heartbeat.start()

    def add_executor(self, ex: _Executor) -> bool:
        """A worker added while the queue runs joins it; False if the run is ending."""
        with self._alive_lock:
            if self.stop_event.is_set() or self._alive == 0:
                return False
            self._alive += 1
            t = threading.Thread(target=self._loop, args=(ex,), name=f"promptscope-queue-{self.queue_id}-"
                                 f"{ex.stats.name}", daemon=True)  # fmt: skip
            self.executors.append(ex)
            self.threads.append(t)
            t.start()
            return True

    def stop(self, close: bool) -> None:
        """Stop after the jobs in flight (close: abort them and give their claims back); joins every thread."""
        self.closing = self.closing or close
        with self._alive_lock:
            self.stop_event.set()
        if close:
            for ex in self.executors:
                ex.abort()
        current = threading.current_thread()
        for t in [*self.threads, self.heartbeat]:
            if t is not current and t.ident is not None:
                t.join()

    def _beat(self) -> None:
        while not self.stop_event.wait(self.runner.heartbeat_seconds):
            try:
                if not self.store.queue_heartbeat(self.queue_id, self.runner.owner):
                    log.warning("PromptScope: queue %s is no longer ours to run (cancelled, done or taken over)",
                                self.queue_id)  # fmt: skip
                    self.stop_event.set()
            except (StoreError, ValueError) as exc:
                log.warning("PromptScope: queue %s heartbeat failed: %s", self.queue_id, exc)

    def _loop(self, ex: _Executor) -> None:
        try:
            while not self.stop_event.is_set():
                if ex.stats.retry_at == float("inf"):  # its worker was removed
                    break
                wait = ex.stats.retry_at - self.runner.clock()
                if wait > 0:
                    self.stop_event.wait(min(wait, 1.0))
                    continue
                row = self._claim(ex)
                if row is None:
                    if self._finished():
                        break
                    ex.stats.status = "waiting"
                    self.stop_event.wait(self.runner.poll_seconds)
                    continue
                self._run_job(ex, row)
        except Exception as exc:
            self.error = f"{ex.stats.name}: {type(exc).__name__}: {exc}"
            log.exception("PromptScope: queue %s executor %s stopped", self.queue_id, ex.stats.name)
        finally:
            ex.stats.status, ex.stats.job_id = "stopped", None
            with self._alive_lock:
                self._alive -= 1
                last = self._alive == 0
            if last:
                self._end()

    def _end(self) -> None:
        """The last executor is out: finish the queue if it is complete, and let go of it."""
        self.stop_event.set()
        try:
            store = self.store
            store.finish_queue(self.queue_id)
            store.release_queue(self.queue_id, self.runner.owner)
        except (StoreError, ValueError) as exc:
            log.warning("PromptScope: queue %s: %s", self.queue_id, exc)
        self.runner._ended(self)
        self.ended.set()

    def _finished(self) -> bool:
        q = self.store.get_queue(self.queue_id)
        if q["state"] != "running":
            return True
        return q["planned"] >= q["total"] and not q["counts"]["pending"] and not q["counts"]["claimed"]

    def _claim(self, ex: _Executor) -> dict[str, Any] | None:
        store, claim = self.store, uuid.uuid4().hex
        with self.plan_lock:
            row = store.claim_queue_job(self.queue_id, claim, ex.stats.name)
            if row is None and self._plan():
                row = store.claim_queue_job(self.queue_id, claim, ex.stats.name)
        if row is not None:
            row["claim"] = claim
        return row

    def _plan(self) -> bool:
        """Plan the next batch from the current posterior; False if the queue needs no more (or is not running)."""
        svc = self.svc
        q = svc.store.get_queue(self.queue_id)
        if q["state"] != "running" or q["planned"] >= q["total"]:
            return False
        size = svc.get_session(self.session_id)["options"]["round_size"]
        k = min(q["total"] - q["planned"], max(int(size), len(self.executors)))
        session, by_id, planned, mode, k, shared = svc.plan_images(self.session_id, k, q["mode"], q["shared_seeds"])
        jobs = svc.jobs_of_round(session, by_id, planned, {"id": 0, "number": 0})
        rows = [{"arm_id": j.arm_id, "seed": j.seed, "prompt": j.prompt, "negative": j.negative,
                 "settings": j.settings, "slot_choices": j.slot_choices} for j in jobs]  # fmt: skip
        return svc.store.add_queue_batch(self.queue_id, mode, shared, rows) is not None

    def _run_job(self, ex: _Executor, row: dict[str, Any]) -> None:
        store, job, claim = self.store, job_of(row), row["claim"]
        path = job_path(self.runner.images_dir(), job)
        ex.stats.status, ex.stats.job_id = "generating", row["id"]
        t0 = time.perf_counter()
        attachments: list[tuple[str, str]] = []
        owner = _file_job(path) if path.exists() else None
        if owner == row["id"]:
            log.info("PromptScope: queue job %s: its image %s was made before a restart; recording it", row["id"], path)
            attachments = [(str(p), "Attention heatmaps") for p in path.parent.glob(f"{path.stem}-heatmaps.png")]
        else:
            if path.exists() and owner is None:  # cut short by a crash while written: ours to replace
                with contextlib.suppress(OSError):
                    path.unlink()
            for tmp in path.parent.glob(f".{path.stem}*.tmp"):  # a crash inside _write_atomic left these
                with contextlib.suppress(OSError):
                    tmp.unlink()
            try:
                path, attachments = ex.generate(job, path)
            except Exception as exc:
                self._failed(ex, row, exc)
                return
            if self.closing:  # shutting down: an interrupted image is not the job's image; it runs again later
                for p in [path, *(Path(a) for a, _ in attachments)]:
                    with contextlib.suppress(OSError):
                        p.unlink()
                store.release_queue_job(row["id"], claim, "stopped by shutdown", MAX_ATTEMPTS, count=False)
                return
        try:
            digest = sha256_file(path)
        except OSError as exc:  # the host said it saved the image, but it is not there
            self._failed(ex, row, OSError(f"the generated image {path} cannot be read: {exc}"))
            return
        image_id = store.complete_queue_job(
            row["id"], claim, str(Path(path).resolve()), digest,
            [{"path": str(Path(p).resolve()), "caption": c} for p, c in attachments], ex.stats.worker_id,
        )  # fmt: skip
        if image_id is None:
            log.warning("PromptScope: queue job %s was taken from %s before it finished; not recorded twice", row["id"],
                        ex.stats.name)  # fmt: skip
            return
        self.done_here += 1
        ex.stats.done += 1
        ex.stats.seconds.append(time.perf_counter() - t0)
        ex.stats.failures_in_row, ex.stats.status, ex.stats.job_id = 0, "idle", None

    def _failed(self, ex: _Executor, row: dict[str, Any], exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, WorkerError) else f"{type(exc).__name__}: {exc}"
        counted = ex.job_fault(exc) and not self.closing
        state = self.store.release_queue_job(row["id"], row["claim"], message, MAX_ATTEMPTS, count=counted)
        if self.closing:
            return
        log.warning("PromptScope: queue %s job %s on %s failed (%s): %s", self.queue_id, row["id"], ex.stats.name,
                    "job failed" if state == "failed" else "given back", message)  # fmt: skip
        stats = ex.stats
        stats.errors += 1
        stats.last_error = message
        stats.failures_in_row += 1
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (stats.failures_in_row - 1)) * self.runner.backoff_scale
        stats.retry_at = self.runner.clock() + delay
        stats.status, stats.job_id = f"retrying in {delay:.1f} s", None
        if stats.worker_id is not None:
            with contextlib.suppress(StoreError, ValueError):
                self.store.worker_error(stats.worker_id, message)

    def status(self) -> dict[str, Any]:
        elapsed = max(self.runner.clock() - self.started, 1e-9)
        return {"executors": [ex.stats.as_dict() for ex in self.executors], "done_here": self.done_here,
                "seconds_running": elapsed, "error": self.error}  # fmt: skip


class QueueRunner:
    """Starts, resumes, watches and cancels the queues of one host's service (one per host process)."""

    def __init__(
        self,
        service_factory: Callable[[], BanditService],
        generate: GenerateFn | None = None,
        images_dir: Callable[[], Path] | None = None,
        interrupt: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        request_timeout: float = 600.0,
        lease_seconds: float = LEASE_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        poll_seconds: float = 0.25,
        backoff_scale: float = 1.0,
    ):
        """`generate(jobs, progress)`: this WebUI's pipeline (None: workers only); `images_dir()`: where the
        images go (default: the data folder's `images/`)."""
        self.service = service_factory
        self.generate = generate
        self.interrupt = interrupt
        self._images_dir = images_dir
        self.clock = clock
        self.request_timeout = request_timeout
        self.lease_seconds, self.heartbeat_seconds = lease_seconds, heartbeat_seconds
        self.poll_seconds, self.backoff_scale = poll_seconds, backoff_scale
        self.owner = owner_name()
        self._runs: dict[int, QueueRun] = {}
        self._lock = threading.Lock()

    def images_dir(self) -> Path:
        if self._images_dir is not None:
            return Path(self._images_dir())
        return Path(self.service().store.folder) / "images"

    # ---- workers ---------------------------------------------------------------------------------------------------
    def add_worker(self, session_id: int, url: Any, username: Any = None, password: Any = None) -> dict[str, Any]:
        svc = self.service()
        sid = svc.get_session(session_id)["id"]
        url = check_worker_url(url)
        username, password = check_credentials(username, password)
        if any(w["url"] == url for w in svc.store.list_workers(sid)):
            raise QueueConflictError(f"worker {url} is already in session {sid}")
        worker = svc.store.get_worker(svc.store.add_worker(sid, url, username, password))
        with self._lock:
            runs = [r for r in self._runs.values() if r.session_id == sid]
        for run in runs:  # a running queue of the session puts it to work at once
            run.add_executor(HttpExecutor(worker, self.request_timeout))
        return self._worker_out(worker)

    def remove_worker(self, worker_id: int) -> dict[str, Any]:
        store = self.service().store
        wid = _id(worker_id, "worker id")
        store.remove_worker(wid)
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:  # its executor stops after its job in flight; the job is recorded or given back
            for ex in run.executors:
                if ex.stats.worker_id == wid:
                    ex.stats.retry_at = float("inf")
        return self._worker_out(store.get_worker(wid))

    def workers(self, session_id: int) -> list[dict[str, Any]]:
        """The session's workers with their persisted counts and, while a queue runs here, live status/throughput."""
        svc = self.service()
        sid = svc.get_session(session_id)["id"]
        live = {ex["worker_id"]: ex for ex in self._live_executors(sid) if ex["worker_id"] is not None}
        return [self._worker_out(w, live.get(w["id"])) for w in svc.store.list_workers(sid)]

    @staticmethod
    def _worker_out(w: dict[str, Any], live: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {k: v for k, v in w.items() if k != "password"}  # never sent back
        out["has_password"] = bool(w.get("password"))
        out["live"] = live
        return out

    def _live_executors(self, session_id: int) -> list[dict[str, Any]]:
        with self._lock:
            runs = [r for r in self._runs.values() if r.session_id == session_id]
        return [ex for r in runs for ex in r.status()["executors"]]

    # ---- queues ----------------------------------------------------------------------------------------------------
    def start(
        self,
        session_id: int,
        images: Any,
        use_local: Any = True,
        mode: str | None = None,
        shared_seeds: bool | None = None,
    ) -> dict[str, Any]:
        """Queue `images` images for a session and start generating them in the background; returns the queue."""
        svc = self.service()
        session = svc.get_session(session_id)
        sid = session["id"]
        if isinstance(images, bool) or not isinstance(images, int) or not 1 <= images <= MAX_QUEUE:
            raise ValueError(f"images must be an integer from 1 to {MAX_QUEUE}, got {images!r}")
        if not isinstance(use_local, bool):
            raise ValueError("local must be true or false")
        if mode is not None and mode not in ("more_good", "find_best", "uniform"):
            raise ValueError(f"mode must be one of ('more_good', 'find_best', 'uniform'), got {mode!r}")
        if shared_seeds is not None and not isinstance(shared_seeds, bool):
            raise ValueError("shared_seeds must be true or false")
        if use_local and self.generate is None:
            raise ValueError("this host cannot generate images itself: set local to false and add workers")
        if not use_local and not svc.store.list_workers(sid):
            raise ValueError(
                f"nothing would generate this queue: local is false and session {sid} has no workers; add one "
                f"(POST /sessions/{sid}/workers) or set local to true"
            )
        if not svc.list_arms(sid, include_retired=False):
            raise ValueError("this session has no active arms: add a prompt (or un-retire one) first")
        running = [q for q in svc.store.list_queues(sid, "running")]
        if running:
            raise QueueConflictError(
                f"session {sid} already has a running queue ({running[0]['id']}): cancel it or wait for it to finish"
            )
        qid = svc.store.create_queue(sid, images, mode, shared_seeds, use_local)
        self.resume(qid)
        return self.status(qid)

    def resume(self, queue_id: int) -> bool:
        """Run a stored 'running' queue here (after a restart); False if it is not running, already runs here, or
        another live process runs it."""
        svc = self.service()
        q = svc.store.get_queue(_id(queue_id, "queue id"))
        with self._lock:
            if q["id"] in self._runs or q["state"] != "running":
                return False
            if not svc.store.take_queue(q["id"], self.owner, self.lease_seconds, owner_gone):
                return False
            executors: list[_Executor] = []
            if q["use_local"] and self.generate is not None:
                executors.append(LocalExecutor(self.generate, self.interrupt))
            executors += [HttpExecutor(w, self.request_timeout) for w in svc.store.list_workers(q["session_id"])]
            if not executors:
                svc.store.release_queue(q["id"], self.owner)
                log.warning("PromptScope: queue %s has nothing to run it here (no local pipeline, no workers)", q["id"])
                return False
            run = QueueRun(self, q, executors)
            self._runs[q["id"]] = run
        run.start()
        return True

    def resume_all(self) -> list[int]:
        """Resume every stored running queue (at start-up)."""
        out = []
        for q in self.service().store.list_queues(state="running"):
            try:
                if self.resume(q["id"]):
                    out.append(q["id"])
            except (StoreError, ValueError) as exc:
                log.warning("PromptScope: could not resume queue %s: %s", q["id"], exc)
        if out:
            log.info("PromptScope: resumed seed-bandit queue(s) %s", ", ".join(map(str, out)))
        return out

    def cancel(self, queue_id: int) -> dict[str, Any]:
        """Cancel: no new image starts; those in flight are recorded when they finish."""
        qid = _id(queue_id, "queue id")
        store = self.service().store
        q = store.get_queue(qid)
        if q["state"] == "running":
            store.cancel_queue(qid)
        with self._lock:
            run = self._runs.get(qid)
        if run is not None:
            run.stop_event.set()
        return self.status(qid)

    def wait(self, queue_id: int, timeout: float | None = None) -> bool:
        """Wait until the queue's threads here have ended; False on timeout."""
        with self._lock:
            run = self._runs.get(queue_id)
        if run is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        if not run.ended.wait(timeout):
            return False
        for t in [*run.threads, run.heartbeat]:  # all out of their loops: these joins are short
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if t.ident is not None:
                t.join(left)
                if t.is_alive():
                    return False
        return True

    def _ended(self, run: QueueRun) -> None:
        with self._lock:
            if self._runs.get(run.queue_id) is run:
                del self._runs[run.queue_id]
        run.stop_event.set()

    def status(self, queue_id: int) -> dict[str, Any]:
        """The queue: counts by state, progress, images per minute and ETA of the run here, its executors."""
        svc = self.service()
        q = svc.store.get_queue(_id(queue_id, "queue id"))
        with self._lock:
            run = self._runs.get(q["id"])
        c = q["counts"]
        remaining = q["total"] - c["done"] - c["failed"] - c["cancelled"]
        q["remaining"] = remaining if q["state"] == "running" else 0
        q["running_here"] = run is not None
        q["rate_per_minute"] = q["eta_seconds"] = None
        q["executors"] = []
        q["error"] = None
        if run is not None:
            st = run.status()
            q["executors"], q["error"] = st["executors"], st["error"]
            if run.done_here:
                rate = run.done_here / st["seconds_running"]
                q["rate_per_minute"] = rate * 60.0
                q["eta_seconds"] = q["remaining"] / rate
        q["failed_jobs"] = [
            {"job_id": j["id"], "arm_id": j["arm_id"], "error": j["error"]}
            for j in svc.store.list_queue_jobs(q["id"], "failed")[:20]
        ]
        return q

    def queues(self, session_id: int) -> list[dict[str, Any]]:
        svc = self.service()
        sid = svc.get_session(session_id)["id"]
        return [self.status(q["id"]) for q in svc.store.list_queues(sid)]

    def close(self) -> None:
        """Stop every queue run here (requests aborted, claims given back) and join the threads. The queues stay
        'running' in the store: the next start (`resume_all`, after a restart or a UI reload) resumes them."""
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.stop(close=True)
        for run in runs:
            with contextlib.suppress(StoreError, ValueError):
                run.store.release_queue(run.queue_id, self.owner)


__all__ = ["MAX_QUEUE", "QueueConflictError", "QueueRunner", "job_of", "job_path"]
