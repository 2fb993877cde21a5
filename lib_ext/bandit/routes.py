"""HTTP routes of the seed bandit: a FastAPI `APIRouter` over the same `BanditService` the tab uses.

Mounted by A1111 in `on_app_started(demo, app)` and by the standalone app on its FastAPI app, under
`/promptscope/v1/bandit`. Request bodies are pydantic models that work on pydantic 1 (A1111: fastapi 0.94) and
pydantic 2 (Forge); unknown fields are rejected and types are strict (pydantic's lax mode would read "yes" as true
and 5 as "5": a client bug should be a 422, not a guess); an integer is accepted where a number is expected.
Errors are clear 4xx: 404 for an id that does not exist (any id beyond SQLite's range included), 422 for a bad
value (the service's message; generation settings are checked against what the host can use), 503 when the store
cannot be used (corrupt file: the message says where the backup went; and, until the user acknowledges it with
`POST …/store/acknowledge` or in the tab, every later call too). Image files are served only from inside the data
folder or the host's output folders.

Requests that change data (POST/PUT/PATCH/DELETE) from a web page of another origin are refused (403): gradio
3.41 answers every origin with `Access-Control-Allow-Origin: *` (preflights included), so without this any page
the user opens could rate or undo on 127.0.0.1. A router dependency, so both hosts get it and their other routes
are untouched; clients that send no `Origin` (scripts, curl) are not browsers' cross-site requests and pass.

No `from __future__ import annotations` here: FastAPI reads the handlers' annotations at run time.
"""

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr

try:
    from typing import Literal
except ImportError:  # pragma: no cover
    from typing import Literal

from .hosting import ServiceProvider
from .queue import QueueConflictError, QueueRunner
from .service import MAX_ROUND, MAX_UPCOMING, BanditService
from .store import DB_FILENAME, NotFoundError, StoreError, unacknowledged_backups

PREFIX = "/promptscope/v1/bandit"
PYDANTIC_V2 = hasattr(BaseModel, "model_fields")

if PYDANTIC_V2:
    from pydantic import ConfigDict, field_validator

    class _Body(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def _before(field: str) -> Any:
        return field_validator(field, mode="before")

else:
    from pydantic import validator

    class _Body(BaseModel):  # type: ignore[no-redef]
        class Config:
            extra = "forbid"

    def _before(field: str) -> Any:
        return validator(field, pre=True, allow_reuse=True)


Number = StrictInt | StrictFloat  # JSON 1 for 1.0, never true or "1"


def _json_object(cls: Any, value: Any) -> Any:
    """Settings must be a JSON object (pydantic 1 would turn a list of pairs into one)."""
    if value is not None and not isinstance(value, dict):
        raise ValueError("settings must be a JSON object")
    return value


def _dump(model: BaseModel) -> dict[str, Any]:
    """The fields the client sent (pydantic 1 and 2)."""
    if PYDANTIC_V2:
        return model.model_dump(exclude_unset=True)
    return model.dict(exclude_unset=True)


class SessionIn(_Body):
    name: StrictStr = Field(..., min_length=1, max_length=200)
    settings: dict[str, Any] | None = None
    mode: Literal["more_good", "find_best", "uniform"] | None = None
    shared_seeds: StrictBool | None = None
    half_life_hours: Number | None = None
    prior: Literal["empirical", "uniform"] | None = None
    round_size: StrictInt | None = None
    stop_rule: Literal["glr"] | None = None
    confidence: Number | None = None
    epsilon: Number | None = None
    p_best_threshold: Number | None = None  # earlier name of `confidence`
    learn_from: StrictStr | None = Field(None, max_length=100)  # "pooled" or a rater's name
    check_settings_object = _before("settings")(_json_object)


class SessionPatch(_Body):
    """Change a session's name, shared settings or options (the fields sent; the others stay)."""

    name: StrictStr | None = Field(None, min_length=1, max_length=200)
    settings: dict[str, Any] | None = None
    mode: Literal["more_good", "find_best", "uniform"] | None = None
    shared_seeds: StrictBool | None = None
    half_life_hours: Number | None = None
    prior: Literal["empirical", "uniform"] | None = None
    round_size: StrictInt | None = None
    confidence: Number | None = None
    epsilon: Number | None = None
    learn_from: StrictStr | None = Field(None, max_length=100)
    check_settings_object = _before("settings")(_json_object)


class ArmIn(_Body):
    prompt: StrictStr = Field(..., min_length=1)
    negative: StrictStr = ""
    settings: dict[str, Any] | None = None
    label: StrictStr = ""
    check_settings_object = _before("settings")(_json_object)


class ArmPatch(_Body):
    prompt: StrictStr | None = None
    negative: StrictStr | None = None
    settings: dict[str, Any] | None = None
    label: StrictStr | None = None
    retired: StrictBool | None = None
    check_settings_object = _before("settings")(_json_object)


class RatingIn(_Body):
    rating: Literal["like", "dislike", "skip"]
    client: StrictStr | None = Field(None, max_length=200)
    rater: StrictStr = Field("", max_length=100)  # "" the unnamed rater


class ClientIn(_Body):
    client: StrictStr | None = Field(None, max_length=200)
    rater: StrictStr | None = Field(None, max_length=100)  # None: whoever rated last (of this client)


class MarkRestIn(_Body):
    rating: Literal["like", "dislike", "skip"] = "dislike"
    client: StrictStr | None = Field(None, max_length=200)
    rater: StrictStr = Field("", max_length=100)


Mode = Literal["more_good", "find_best", "uniform"]


class QueueIn(_Body):
    images: StrictInt
    local: StrictBool = True  # this WebUI generates too (besides the session's workers)
    mode: Mode | None = None
    shared_seeds: StrictBool | None = None


class RoundIn(_Body):
    k: StrictInt | None = None  # default: the session's round size
    local: StrictBool = True
    mode: Mode | None = None
    shared_seeds: StrictBool | None = None


class WorkerIn(_Body):
    url: StrictStr = Field(..., min_length=1, max_length=2000)
    username: StrictStr | None = Field(None, max_length=500)
    password: StrictStr | None = Field(None, max_length=500)


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a service call, mapping its errors to HTTP: unknown id 404, conflict 409, bad value 422, unusable store
    503."""
    try:
        return fn(*args, **kwargs)
    except NotFoundError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except QueueConflictError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    except StoreError as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from None


MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_of(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None if it is not a web origin."""
    scheme = scheme.lower()
    try:
        parts = urlsplit(f"//{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:  # a bad port
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def server_origin(request: Request) -> tuple[str, str, int] | None:
    """This server's origin as the browser addressed it: the Host header, with the scheme of the connection (or
    of `X-Forwarded-Proto` from a TLS proxy; it cannot make another host or port match)."""
    scheme = request.headers.get("x-forwarded-proto", "").split(",")[0].strip() or request.url.scheme
    return _origin_of(scheme, request.headers.get("host", ""))


def same_origin_only(request: Request) -> None:
    """Router dependency: 403 for a data-changing request whose `Origin` is not this server's own."""
    origin = request.headers.get("origin")
    if request.method not in MUTATING_METHODS or origin is None:
        return
    parts = urlsplit(origin) if origin != "null" else None
    theirs = _origin_of(parts.scheme, parts.netloc) if parts else None
    ours = server_origin(request)
    if theirs is None or theirs != ours:
        own = f"{ours[0]}://{ours[1]}:{ours[2]}" if ours else "(unknown: no Host header)"
        raise HTTPException(
            status_code=403,
            detail=f"refused: this {request.method} comes from a web page of another origin ({origin}), not from "
            f"this server ({own}); a page on another site must not change your seed-bandit data. Use the tab, or "
            "call the API from a script (which sends no Origin header); behind a proxy, pass the Host header on.",
        )


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    for root in roots:
        try:
            if os.path.commonpath([root, path]) == str(root):
                return True
        except ValueError:  # different drives
            continue
    return False


def make_router(
    service_factory: Callable[[], BanditService],
    allowed_roots: Callable[[], Sequence[os.PathLike]] = lambda: (),
    prefix: str = PREFIX,
    runner: QueueRunner | None = None,
) -> APIRouter:
    """Routes under `prefix`. `service_factory()` returns the shared service (it may raise ValueError/StoreError
    when the data folder is unusable: 422/503). `allowed_roots()` lists folders besides the data folder that image
    files may be served from (the host's output folders). `runner`: the host's queue runner (rounds, queues and
    workers routes; 501 without one)."""
    router = APIRouter(prefix=prefix, tags=["PromptScope seed bandit"], dependencies=[Depends(same_origin_only)])

    def svc() -> BanditService:
        return _call(service_factory)

    @router.get("/sessions")
    def list_sessions() -> list[dict[str, Any]]:
        return _call(svc().list_sessions)

    @router.post("/sessions", status_code=201)
    def create_session(body: SessionIn) -> dict[str, Any]:
        data = _dump(body)
        name, settings = data.pop("name"), data.pop("settings", None)
        return _call(svc().create_session, name, settings, **data)

    @router.get("/sessions/{session_id}")
    def get_session(session_id: int) -> dict[str, Any]:
        return _call(svc().get_session, session_id)

    @router.patch("/sessions/{session_id}")
    def patch_session(session_id: int, body: SessionPatch) -> dict[str, Any]:
        data = _dump(body)
        name, settings = data.pop("name", None), data.pop("settings", None)
        return _call(svc().update_session, session_id, name, settings, **data)

    @router.get("/sessions/{session_id}/arms")
    def list_arms(session_id: int, include_retired: bool = True) -> list[dict[str, Any]]:
        return _call(svc().list_arms, session_id, include_retired)

    @router.post("/sessions/{session_id}/arms", status_code=201)
    def add_arm(session_id: int, body: ArmIn) -> dict[str, Any]:
        return _call(svc().add_arm, session_id, body.prompt, body.negative, body.settings, body.label)

    @router.get("/arms/{arm_id}")
    def get_arm(arm_id: int) -> dict[str, Any]:
        return _call(svc().get_arm, arm_id)

    @router.patch("/arms/{arm_id}")
    def patch_arm(arm_id: int, body: ArmPatch) -> dict[str, Any]:
        """Edit (a changed prompt/negative/settings makes a new arm version, returned) and/or retire/restore."""
        data = _dump(body)
        retired = data.pop("retired", None)
        s = svc()
        arm = _call(s.get_arm, arm_id)
        if data:
            arm = _call(s.edit_arm, arm_id, **data)
        if retired is not None:
            arm = _call(s.retire_arm, arm["id"], retired)
        return arm

    @router.get("/sessions/{session_id}/stats")
    def stats(
        session_id: int, draws: int = Query(20_000, ge=100, le=200_000), rater: str | None = Query(None, max_length=100)
    ) -> dict[str, Any]:
        """`rater`: the view ("pooled", or a rater's name; empty: the unnamed rater); absent: what the session
        learns from."""
        return _call(svc().stats, session_id, draws, rater)

    @router.get("/sessions/{session_id}/history")
    def history(session_id: int, rater: str | None = Query(None, max_length=100)) -> dict[str, Any]:
        return _call(svc().history, session_id, rater)

    @router.get("/sessions/{session_id}/raters")
    def raters(session_id: int) -> dict[str, Any]:
        """Who rated, each rater's and the pooled posterior per arm, Cohen's κ per pair of raters."""
        return _call(svc().raters, session_id)

    @router.get("/sessions/{session_id}/images")
    def images(
        session_id: int,
        arm_id: int | None = None,
        round_id: int | None = None,
        rating: Literal["like", "dislike", "skip", "pending", "disagree"] | None = None,
        rater: str = Query("", max_length=100),
    ) -> list[dict[str, Any]]:
        """`rating` filters on `rater`'s rating ("" the unnamed rater); "disagree": one rater liked, another
        disliked. Every image carries `ratings`, each rater's current rating."""
        return _call(svc().images, session_id, arm_id, round_id, rating, rater)

    @router.post("/images/{image_id}/rating")
    def rate(image_id: int, body: RatingIn) -> dict[str, Any]:
        return _call(svc().rate, image_id, body.rating, body.client, body.rater)

    @router.post("/sessions/{session_id}/undo")
    def undo(session_id: int, body: ClientIn | None = None) -> dict[str, Any]:
        client, rater = (body.client, body.rater) if body else (None, None)
        return {"undone": _call(svc().undo, session_id, client, rater)}

    @router.post("/rounds/{round_id}/mark-rest")
    def mark_rest(round_id: int, body: MarkRestIn | None = None) -> dict[str, Any]:
        body = body or MarkRestIn()
        return _call(svc().mark_rest, round_id, body.rating, body.client, body.rater)

    @router.get("/images/{image_id}")
    def get_image(image_id: int, rater: str = Query("", max_length=100)) -> dict[str, Any]:
        """One image: `rater`'s rating (`rating`), every rater's (`ratings`), arm, round, seed, prompt, attachments."""
        return _call(svc().get_image, image_id, rater)

    def serve(s: BanditService, path_text: str, what: str) -> FileResponse:
        path = Path(path_text).resolve()
        roots = [Path(s.store.folder).resolve(), *(Path(r).resolve() for r in allowed_roots())]
        if not _inside(path, roots):
            raise HTTPException(status_code=403, detail=f"{what} is outside the data and output folders")
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"{what} is missing")
        return FileResponse(str(path))

    @router.get("/images/{image_id}/file")
    def image_file(image_id: int) -> FileResponse:
        s = svc()
        return serve(s, _call(s.get_image, image_id)["path"], f"image {image_id}'s file")

    @router.get("/images/{image_id}/attachments/{index}")
    def attachment_file(image_id: int, index: int) -> FileResponse:
        """The `index`-th image attached to an image (its word-heatmap grid), from 0."""
        s = svc()
        attached = _call(s.get_image, image_id)["attachments"]
        if not 0 <= index < len(attached):
            raise HTTPException(status_code=404, detail=f"image {image_id} has no attachment {index}")
        return serve(s, attached[index]["path"], f"attachment {index} of image {image_id}")

    def queues() -> QueueRunner:
        if runner is None:
            raise HTTPException(status_code=501, detail="this host runs no generation queue")
        _call(service_factory)  # the store's state (503 while a damaged database is unacknowledged)
        return runner

    @router.post("/sessions/{session_id}/queue", status_code=202)
    def start_queue(session_id: int, body: QueueIn) -> dict[str, Any]:
        """Queue N images; they are generated in the background (watch with GET /queues/{id})."""
        return _call(queues().start, session_id, body.images, body.local, body.mode, body.shared_seeds)

    @router.post("/sessions/{session_id}/rounds", status_code=202)
    def start_round(session_id: int, body: RoundIn | None = None) -> dict[str, Any]:
        """One round (k images, default the session's round size) as a queue, generated in the background."""
        body = body or RoundIn()
        k = body.k if body.k is not None else _call(svc().get_session, session_id)["options"]["round_size"]
        if not 1 <= k <= MAX_ROUND:
            raise HTTPException(status_code=422, detail=f"k must be an integer from 1 to {MAX_ROUND}, got {k}")
        return _call(queues().start, session_id, k, body.local, body.mode, body.shared_seeds)

    @router.get("/sessions/{session_id}/queues")
    def list_queues(session_id: int) -> list[dict[str, Any]]:
        return _call(queues().queues, session_id)

    @router.get("/queues/{queue_id}")
    def get_queue(queue_id: int) -> dict[str, Any]:
        """Counts by state, remaining, images per minute and ETA (while it runs here), executors, failed jobs."""
        return _call(queues().status, queue_id)

    @router.post("/queues/{queue_id}/cancel")
    def cancel_queue(queue_id: int) -> dict[str, Any]:
        return _call(queues().cancel, queue_id)

    @router.get("/sessions/{session_id}/workers")
    def list_workers(session_id: int) -> list[dict[str, Any]]:
        """The session's worker WebUIs: done, errors, last error; while a queue runs, live status and speed."""
        return _call(queues().workers, session_id)

    @router.post("/sessions/{session_id}/workers", status_code=201)
    def add_worker(session_id: int, body: WorkerIn) -> dict[str, Any]:
        return _call(queues().add_worker, session_id, body.url, body.username, body.password)

    @router.delete("/workers/{worker_id}")
    def remove_worker(worker_id: int) -> dict[str, Any]:
        return _call(queues().remove_worker, worker_id)

    @router.get("/sessions/{session_id}/next-image")
    def next_image(session_id: int, rater: str = Query("", max_length=100)) -> dict[str, Any]:
        """`rater`'s next image to rate in the backlog (see README: most to learn first, newest posterior first)."""
        image, pending = _call(svc().next_to_rate, session_id, rater)
        return {"image": image, "pending": pending}

    @router.get("/sessions/{session_id}/upcoming")
    def upcoming(
        session_id: int,
        rater: str = Query("", max_length=100),
        n: int = Query(4, ge=1, le=MAX_UPCOMING),
        start: int | None = None,
        after: int | None = None,
        exclude: str = Query("", max_length=4000),
    ) -> dict[str, Any]:
        """The next `n` images the rating view shows `rater`, in order (the page loads them ahead): `start` an
        image to show first, `after` the image the list continues from, `exclude` comma-separated ids the page
        holds already or has not sent the rating of yet."""
        try:
            skip = [int(x) for x in exclude.split(",") if x.strip()]
        except ValueError:
            raise HTTPException(status_code=422, detail="exclude must be comma-separated image ids") from None
        return _call(svc().upcoming, session_id, rater, n, start, after, skip)

    def provider() -> ServiceProvider:
        if not isinstance(service_factory, ServiceProvider):
            raise HTTPException(status_code=501, detail="this host's seed-bandit service has no store routes")
        return service_factory

    @router.get("/store")
    def store_status() -> dict[str, Any]:
        """The database's path and the moved-aside (damaged) databases nobody has acknowledged yet; answers even
        while those block every other route."""
        folder = _call(provider().data_dir)
        pending = unacknowledged_backups(folder)
        return {"database": str(folder / DB_FILENAME), "unacknowledged_backups": [str(b) for b in pending]}

    @router.post("/store/acknowledge")
    def store_acknowledge() -> dict[str, Any]:
        """The user has seen that the damaged database was moved aside (the backups stay): a new, empty one
        starts. Returns the backups acknowledged now (none if there were none)."""
        p = provider()
        done = _call(p.acknowledge)
        return {"acknowledged": [str(b) for b in done], "database": str(p.data_dir() / DB_FILENAME)}

    return router


__all__ = ["PREFIX", "make_router"]
