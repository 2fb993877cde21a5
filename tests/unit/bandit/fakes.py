"""Stand-ins the bandit's service tests share: a clock that ticks on every read, and a generator that writes one
small file per job as the host's job runner would write a PNG."""

from __future__ import annotations

from pathlib import Path

from lib_ext.bandit.service import ImageResult


class Clock:
    def __init__(self, start: float = 1_700_000_000.0, tick: float = 0.5):
        self.t = start
        self.tick = tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


def fake_generator(folder: Path, limit: int | None = None):
    """Writes one small file per job (the first `limit` jobs only, as an interrupted run would)."""
    folder.mkdir(parents=True, exist_ok=True)

    def generate(jobs):
        out = []
        for job in jobs[:limit]:
            path = folder / f"r{job.round_number}_{job.index}_{job.seed}.png"
            path.write_bytes(f"{job.prompt}|{job.seed}".encode())
            out.append(ImageResult(job, str(path)))
        return out

    return generate
