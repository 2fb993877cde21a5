"""Worker WebUIs: other WebUIs (one per GPU, started with `--api`) that generate a queue's images through their own
`POST /sdapi/v1/txt2img`. Stdlib only (http.client): no cluster software, the WebUIs are the workers and our store
is the durable queue (queue.py).

- `check_worker_url`: http/https only, a host, no credentials in the URL (they go in username/password, the
  WebUI's `--api-auth`), no query or fragment; a base path (behind a proxy) is kept.
- `txt2img_payload`: one job → the request body: prompt, negative prompt, seed, batch size 1 and the generation
  settings the session/arm gives (what it does not give, the worker's defaults decide, as on this host), and
  `alwayson_scripts` for semantic guidance and word heatmaps when the prompt or settings ask for them.
- `WorkerClient.txt2img`: sends it, returns the images (base64 PNG decoded) and infotexts; every failure is a
  `WorkerError` with a message that names the worker. `abort()` closes the connection from another thread (a
  stopping queue does not wait for a long generation).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import io
import json
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

TXT2IMG_PATH = "/sdapi/v1/txt2img"
# The PromptScope scripts' titles in A1111 (promptscope_a1111/guidance_script.py and heatmaps_script.py: a test
# checks they agree).
GUIDANCE_SCRIPT = "PromptScope: Semantic guidance"
HEATMAPS_SCRIPT = "PromptScope: Attention heatmaps"
GUIDANCE_KEY = "semantic_guidance"
HEATMAPS_KEY = "heatmaps"
SCRIPT_ARGS_KEY = "script_args"
# Settings sent as they are (A1111's txt2img fields); batch_size is always 1 (one job, one image).
PASSED_SETTINGS = ("steps", "cfg_scale", "sampler_name", "width", "height", "scheduler", "denoising_strength")
MAX_RESPONSE_BYTES = 512 << 20  # a txt2img answer larger than this is not one image and its grids


class WorkerError(Exception):
    """A worker could not generate a job (down, refused, bad answer). `status`: the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def check_worker_url(url: Any) -> str:
    """The worker's base URL, normalised (no trailing slash); ValueError saying what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("worker url must be a non-empty string such as http://127.0.0.1:7861")
    text = url.strip()
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ValueError("worker url must not contain spaces or control characters")
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        got = parts.scheme or "none"
        raise ValueError(f"worker url must start with http:// or https:// (scheme {got!r} is not allowed): {text!r}")
    if "@" in parts.netloc:
        raise ValueError(
            "worker url must not contain a user name or password; give them as username and password (the "
            "worker's --api-auth) instead"
        )
    if not parts.hostname:
        raise ValueError(f"worker url has no host: {text!r}")
    try:
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise ValueError(f"worker url has a bad port: {text!r}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"worker url must not have a query or fragment (?… #…): {text!r}")
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"


def check_credentials(username: Any, password: Any) -> tuple[str | None, str | None]:
    """(username, password) for HTTP Basic auth, both or neither; ValueError naming the field."""
    for name, value in (("username", username), ("password", password)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"worker {name} must be a string")
        if isinstance(value, str) and (len(value) > 500 or any(ord(c) < 32 for c in value)):
            raise ValueError(f"worker {name} must be at most 500 characters without control characters")
    username, password = username or None, password or None
    if username is not None and ":" in username:
        raise ValueError("worker username must not contain ':' (HTTP Basic auth, as the WebUI's --api-auth)")
    if (username is None) != (password is None):
        raise ValueError("give both worker username and password (the worker's --api-auth user:password), or neither")
    return username, password


def _script_args(value: Any) -> list[Any]:
    """A script's args as the API wants them: a list (an object is the script's named arguments, one element)."""
    return list(value) if isinstance(value, list | tuple) else [value]


def txt2img_payload(prompt: str, negative: str, seed: int, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The `/sdapi/v1/txt2img` body for one image."""
    from ..guidance.parser import SEGA_TAG_NAME, has_keywords
    from ..heatmaps.controls import sweep_values

    body: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative, "seed": int(seed), "batch_size": 1}
    for key in PASSED_SETTINGS:
        if key in settings:
            body[key] = settings[key]
    scripts: dict[str, Any] = {}
    for title, args in dict(settings.get(SCRIPT_ARGS_KEY) or {}).items():
        scripts[str(title)] = {"args": _script_args(args)}
    given = settings.get(GUIDANCE_KEY)
    if has_keywords(prompt) or f"<{SEGA_TAG_NAME}:" in prompt or isinstance(given, dict):
        scripts.setdefault(GUIDANCE_SCRIPT, {"args": [{"enabled": True, **(given if isinstance(given, dict) else {})}]})
    heat = sweep_values(settings.get(HEATMAPS_KEY))
    if heat is not None:
        scripts.setdefault(HEATMAPS_SCRIPT, {"args": [{**heat, "save": False}]})
    if scripts:
        body["alwayson_scripts"] = scripts
    return body


@dataclass
class WorkerImages:
    """A worker's answer: PNG bytes of the image and of what its scripts attached (heatmap grids), infotexts."""

    image: bytes
    infotext: str
    extras: list[tuple[bytes, str]] = field(default_factory=list)
    seed: int | None = None


def _decode_png(data: Any, what: str) -> bytes:
    if not isinstance(data, str):
        raise WorkerError(f"{what} is not a base64 string")
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise WorkerError(f"{what} is not valid base64") from None
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        raise WorkerError(f"{what} is not a PNG (set the worker's image format to png)")
    return raw


def parse_txt2img_response(payload: bytes) -> WorkerImages:
    """`{images: [b64 PNG, …], info: JSON string with infotexts / all_seeds}` → WorkerImages."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise WorkerError("the answer is not JSON") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise WorkerError("the answer has no images")
    info: Any = data.get("info")
    try:
        info = json.loads(info) if isinstance(info, str) else (info or {})
    except ValueError:
        info = {}
    info = info if isinstance(info, dict) else {}
    infotexts = [str(t) for t in info.get("infotexts") or [] if t is not None]
    seeds = info.get("all_seeds") or []
    pngs = [_decode_png(b, f"image {n} of the answer") for n, b in enumerate(images)]
    texts = infotexts + [""] * (len(pngs) - len(infotexts))
    seed = seeds[0] if seeds and isinstance(seeds[0], int) and not isinstance(seeds[0], bool) else None
    return WorkerImages(pngs[0], texts[0], list(zip(pngs[1:], texts[1 : len(pngs)])), seed)


class WorkerClient:
    """One worker WebUI. Thread-safe enough for one request at a time per client (one queue executor each)."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None, timeout: float = 600.0):
        self.url = check_worker_url(url)
        self.username, self.password = check_credentials(username, password)
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._aborted = False

    def _connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return cls(parts.hostname, parts.port, timeout=self.timeout)

    def abort(self) -> None:
        """Close the connection of a request in flight (from another thread): it raises WorkerError at once."""
        with self._lock:
            self._aborted = True
            conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def post(self, path: str, body: dict[str, Any]) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        conn = self._connection()
        with self._lock:
            if self._aborted:
                raise WorkerError(f"worker {self.url}: stopped")
            self._conn = conn
        try:
            conn.request("POST", urlsplit(self.url).path + path, json.dumps(body).encode(), headers)
            resp = conn.getresponse()
            data = resp.read(MAX_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            if self._aborted:
                raise WorkerError(f"worker {self.url}: stopped") from None
            raise WorkerError(f"worker {self.url} did not answer: {type(exc).__name__}: {exc}") from None
        finally:
            with self._lock:
                self._conn = None
            conn.close()
        if len(data) > MAX_RESPONSE_BYTES:
            raise WorkerError(f"worker {self.url}: the answer is larger than {MAX_RESPONSE_BYTES >> 20} MB")
        if resp.status != 200:
            detail = data[:300].decode("utf-8", "replace").strip()
            hint = " (check the worker's username and password: its --api-auth)" if resp.status == 401 else ""
            raise WorkerError(f"worker {self.url} answered HTTP {resp.status}{hint}: {detail}", resp.status)
        return data

    def txt2img(self, prompt: str, negative: str, seed: int, settings: Mapping[str, Any]) -> WorkerImages:
        data = self.post(TXT2IMG_PATH, txt2img_payload(prompt, negative, seed, settings))
        try:
            return parse_txt2img_response(data)
        except WorkerError as exc:
            raise WorkerError(f"worker {self.url}: {exc}") from None


def quote_infotext(value: str) -> str:
    """A value as A1111's infotext writes it (`generation_parameters_copypaste.quote`): JSON-quoted if it has a
    comma, colon or quote."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:"\n') else text


def with_infotext_keys(infotext: str, keys: Mapping[str, str]) -> str:
    """The worker's infotext with our keys (session, arm, round, job) appended to its parameters line."""
    extra = ", ".join(f"{k}: {quote_infotext(v)}" for k, v in keys.items())
    if not infotext.strip():
        return extra
    return f"{infotext.rstrip()}, {extra}"


def png_with_infotext(png: bytes, infotext: str) -> bytes:
    """The PNG re-written with `infotext` in its `parameters` chunk (what PNG Info reads)."""
    from PIL import Image, PngImagePlugin

    with Image.open(io.BytesIO(png)) as im:
        im.load()
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", infotext)
        out = io.BytesIO()
        im.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


__all__ = [
    "WorkerClient",
    "WorkerError",
    "WorkerImages",
    "check_credentials",
    "check_worker_url",
    "parse_txt2img_response",
    "png_with_infotext",
    "txt2img_payload",
    "with_infotext_keys",
]
