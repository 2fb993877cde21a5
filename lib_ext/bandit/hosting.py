"""What both hosts share around the service: one open service per data folder, and generation through a host.

- `ServiceProvider`: the tab and the HTTP routes of one host ask it for the service, so they share one store
  connection; the data folder may change (A1111 setting) and the service is reopened on the new folder. While
  the folder holds a damaged database that was moved aside and not yet acknowledged, it refuses
  (`StoreQuarantinedError`, HTTP 503 naming the backup) instead of serving a new, empty database; `acknowledge()`
  (the tab's button, `POST …/store/acknowledge`) lets it start the new one.
- `host_generator`: `run_jobs` of the seam (`Host.run_jobs(requests, progress)`) → the `generate(jobs, progress)`
  the tab calls; images are written as PNG (infotext in the `parameters` chunk, as A1111 writes it) into the
  data folder's `images/session_<id>/`, unless the host already saved them; images the host attached to one
  (word-heatmap grids) are saved beside it and recorded as its attachments.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .service import BanditService, ImageResult, Job, generator_from_host
from .store import DB_FILENAME, StoreCorruptError, StoreQuarantinedError, acknowledge_backups, unacknowledged_backups

log = logging.getLogger("promptscope")

Progress = Callable[[int, int, str], None]
# Captions of word-heatmap grids start so (A1111's heatmap script and the standalone sweep write them alike).
HEATMAP_CAPTION = "Attention heatmaps"
GenerateFn = Callable[[list[Job], Progress | None], list[ImageResult]]
HOW_TO_ACKNOWLEDGE = "press “Acknowledge” in the Seed bandit tab, or POST /promptscope/v1/bandit/store/acknowledge"


def check_data_dir(path: str | os.PathLike) -> Path:
    """An absolute data folder that exists (created if needed), or ValueError saying why not."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the seed-bandit data folder is empty")
    if "\x00" in text:
        raise ValueError("the seed-bandit data folder must not contain NUL characters")
    folder = Path(text).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the seed-bandit data folder {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the seed-bandit data folder {folder}: {exc}") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"the seed-bandit data folder {folder} is not writable")
    return folder


class ServiceProvider:
    """The BanditService of the current data folder (`data_dir` may be a callable read at every call)."""

    def __init__(self, data_dir: str | os.PathLike | Callable[[], str | os.PathLike], **service_kwargs: Any):
        self._data_dir = data_dir
        self._kwargs = service_kwargs
        self._lock = threading.Lock()
        self._service: BanditService | None = None
        self._folder: Path | None = None
        self._reported: tuple[Path, ...] = ()  # the unacknowledged backups last said in the console

    def data_dir(self) -> Path:
        raw = self._data_dir() if callable(self._data_dir) else self._data_dir
        return check_data_dir(raw)

    def __call__(self) -> BanditService:
        folder = self.data_dir()
        with self._lock:
            self._refuse_if_quarantined(folder)
            if self._service is None or self._folder != folder or self._stale(self._service):
                self._close_service()
                try:
                    self._service = BanditService(folder, **self._kwargs)
                except StoreCorruptError as exc:
                    if exc.backup is not None:  # moved aside just now: refuse as every later call will
                        self._refuse_if_quarantined(folder)
                    raise
                self._folder = folder
            return self._service

    @staticmethod
    def _stale(service: BanditService) -> bool:
        """Closed (a damaged file was moved aside mid-call) or its file moved by another process."""
        return service.store.closed or service.store.moved_away()

    def acknowledge(self) -> list[Path]:
        """The user has seen that the database was moved aside: the next call opens a new, empty one."""
        folder = self.data_dir()
        with self._lock:
            return acknowledge_backups(folder)

    def _refuse_if_quarantined(self, folder: Path) -> None:
        """StoreQuarantinedError while `folder` has unacknowledged backups; the open service (on a file that was
        moved, perhaps by another process) is closed, so acknowledging reopens on the new database."""
        pending = unacknowledged_backups(folder)
        if not pending:
            self._reported = ()
            return
        self._close_service()
        err = StoreQuarantinedError(folder / DB_FILENAME, pending, HOW_TO_ACKNOWLEDGE)
        if tuple(pending) != self._reported:  # once per new backup, not per request
            self._reported = tuple(pending)
            log.error("PromptScope: %s", err)
        raise err

    def _close_service(self) -> None:
        if self._service is not None:
            self._service.close()
        self._service = None
        self._folder = None

    def close(self) -> None:
        with self._lock:
            self._close_service()


def save_png(image: Any, infotext: str, path: Path) -> Path:
    """PNG with the infotext in the `parameters` text chunk (what PNG Info reads)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext or "")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, pnginfo=info)
    return path


def image_path(images_dir: Path, job: Job) -> Path:
    """`<images_dir>/session_<id>/r<round>_<index>_<seed>.png`, never overwriting an existing file."""
    folder = images_dir / f"session_{int(job.session_id)}"
    stem = f"r{int(job.round_number):04d}_{int(job.index):03d}_{int(job.seed)}"
    path, n = folder / f"{stem}.png", 1
    while path.exists():
        path, n = folder / f"{stem}-{n}.png", n + 1
    return path


def attachment_path(image_file: str | os.PathLike, caption: str, n: int) -> Path:
    """Beside the image: `<stem>-heatmaps.png` for a word-heatmap grid, `<stem>-extra<n>.png` otherwise; never
    overwriting a file."""
    image_file = Path(image_file)
    kind = "heatmaps" if caption.startswith(HEATMAP_CAPTION) else f"extra{int(n)}"
    path, k = image_file.with_name(f"{image_file.stem}-{kind}.png"), 1
    while path.exists():
        path, k = image_file.with_name(f"{image_file.stem}-{kind}-{k}.png"), k + 1
    return path


def host_generator(
    run_jobs: Callable[[Sequence[Any], Progress | None], Sequence[Any]],
    request_factory: Callable[..., Any],
    images_dir: Callable[[], Path],
) -> GenerateFn:
    """`generate(jobs, progress)` over a host's `run_jobs`; results without a saved path are saved as PNG under
    `images_dir()` (the data folder's `images/`)."""

    def save(result: Any, job: Job) -> str:
        return str(save_png(result.image, getattr(result, "infotext", "") or "", image_path(images_dir(), job)))

    def save_extra(image: Any, caption: str, image_file: str, n: int) -> str:
        return str(save_png(image, caption, attachment_path(image_file, caption, n)))

    def generate(jobs: list[Job], progress: Progress | None = None) -> list[ImageResult]:
        return generator_from_host(run_jobs, request_factory, save=save, progress=progress, save_extra=save_extra)(jobs)

    return generate
