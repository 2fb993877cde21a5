"""A simulated worker WebUI: `POST /sdapi/v1/txt2img` that sleeps a fixed time and answers with a small PNG.

In-process (`SimWorker(latency).start()` → its URL; `close()`), or as a process that can be killed:
`python -m bench._sim_worker --port 0 --latency 0.3 [--auth user:pass]` prints `PORT <n>` once it listens.
Counts its requests (`requests`, `answered`); `fail_first` answers that many requests with HTTP 500 first.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def png_of(seed: int, size: int = 16) -> bytes:
    from PIL import Image

    colour = (seed & 255, (seed >> 8) & 255, (seed >> 16) & 255)
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


class SimWorker:
    def __init__(
        self, latency: float = 0.1, auth: str | None = None, fail_first: int = 0, port: int = 0, die_on: int = 0
    ):
        """`die_on`: at that request the worker disappears mid-job: stops listening and drops the connection
        without an answer (as a killed WebUI)."""
        self.latency, self.auth, self.fail_first, self.die_on = latency, auth, fail_first, die_on
        self.requests = self.answered = 0
        self.seeds: list[int] = []
        self._lock = threading.Lock()
        worker = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                worker._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> SimWorker:
        self._thread = threading.Thread(target=self.server.serve_forever, name="sim-worker", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> SimWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests += 1
            n = self.requests
        if h.path != "/sdapi/v1/txt2img":
            return self._send(h, 404, {"detail": "Not Found"})
        if self.auth is not None:
            token = "Basic " + base64.b64encode(self.auth.encode()).decode()
            if h.headers.get("Authorization") != token:
                return self._send(h, 401, {"detail": "Incorrect username or password"})
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length", 0))) or b"{}")
        if self.die_on and n >= self.die_on:  # dead from here on: connections dropped without an answer
            time.sleep(self.latency / 2 if n == self.die_on else 0)
            h.close_connection = True
            h.connection.shutdown(2)
            return None
        if n <= self.fail_first:
            return self._send(h, 500, {"detail": "simulated failure"})
        time.sleep(self.latency)
        seed = int(body.get("seed", -1))
        info = f"{body.get('prompt', '')}\nSteps: {body.get('steps', 20)}, Seed: {seed}, Size: 16x16"
        with self._lock:
            self.answered += 1
            self.seeds.append(seed)
        self._send(h, 200, {
            "images": [base64.b64encode(png_of(seed)).decode()],
            "parameters": body,
            "info": json.dumps({"infotexts": [info], "all_seeds": [seed], "seed": seed}),
        })  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench._sim_worker")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--auth", default=None)
    args = ap.parse_args(argv)
    worker = SimWorker(args.latency, args.auth, port=args.port)
    print(f"PORT {worker.server.server_address[1]}", flush=True)
    try:
        worker.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        worker.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
