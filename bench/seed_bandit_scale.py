"""Generate ahead with several worker WebUIs: throughput, and nothing lost or made twice when something dies.

`python -m bench seed_bandit_scale [--quick]`:
- `images_per_minute[n]` (best of 2 runs) and `scale_efficiency_n` (= rate with n workers / (n × rate with 1))
  for 1, 2, 4, 8 simulated workers of fixed latency (`bench/_sim_worker.py`: HTTP servers on local ports that
  sleep a fixed time and answer with a PNG), driven by the real queue (claims, SQLite records with
  synchronous=FULL, PNG files);
- `app_speedup_2`: images per minute with 2 real standalone-app worker processes (`python -m lib_ext.app`, the toy
  model, CPU-bound) over 1; on a machine with few cores they compete for the CPU, so this shows the machine;
- `lost_jobs_after_worker_kill`: a worker process killed with SIGKILL mid-queue (3 simulated worker processes);
- `queue_resume_duplicates` (and `queue_resume_lost`): the host process killed with SIGKILL mid-queue, restarted,
  the queue finished: images recorded or files written beyond one per job, and jobs never done;
- `next_image_ms_p95` (and `_first_100`, `_last_100`): rating a backlog of 1,500 pending images (200 with --quick)
  in a real Chromium, key press to the next image painted (bench/_rating_speed.py); null with the reason in
  `next_image_skipped` where Chromium, chromedriver or selenium is missing.
The host child is `python -m bench.seed_bandit_scale host DATA N URL,URL` (`--resume` to carry on).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORKER_COUNTS = (1, 2, 4, 8)


def _runner(data: Path, **kw: Any) -> tuple[Any, Any]:
    from lib_ext.bandit.hosting import ServiceProvider
    from lib_ext.bandit.queue import QueueRunner

    provider = ServiceProvider(data, seed=0)
    kw.setdefault("poll_seconds", 0.02)
    kw.setdefault("backoff_scale", 0.1)
    return provider, QueueRunner(provider, None, **kw)


def _session(svc: Any, settings: dict | None = None, round_size: int = 8) -> int:
    sid = svc.create_session("scale", settings or {"steps": 8}, round_size=round_size)["id"]
    for prompt in ("a red circle", "a blue square", "a {red|green} triangle"):
        svc.add_arm(sid, prompt)
    return sid


def _check(svc: Any, qid: int) -> dict[str, int]:
    """Per queue: jobs not done (lost), images beyond one per job, image files beyond one per job."""
    jobs = svc.store.list_queue_jobs(qid)
    q = svc.store.get_queue(qid)
    done = [j for j in jobs if j["state"] == "done"]
    image_ids = [j["image_id"] for j in done]
    sid = q["session_id"]
    rounds = {j["round_id"] for j in jobs}
    images = [i for i in svc.images(sid) if i["round_id"] in rounds]
    folder = Path(svc.store.folder) / "images" / f"session_{sid}"
    stems = Counter()
    for f in folder.glob("r*.png"):
        if "-heatmaps" not in f.name:
            stems[f.name.rsplit("-", 1)[0] if f.stem.count("_") == 2 and "-" in f.stem else f.stem] += 1
    files = sum(stems.values())
    return {
        "jobs": q["total"],
        "done": len(done),
        "lost": q["total"] - len(done),
        "duplicate_images": len(images) - len(set(image_ids)),
        "duplicate_files": files - len(stems),
        "files": files,
    }


def _timed_queue(svc: Any, runner: Any, sid: int, total: int) -> float:
    """Seconds for a queue of `total` images on the session's workers; nothing lost or made twice, or it raises."""
    t0 = time.perf_counter()
    q = runner.start(sid, total, use_local=False)
    runner.wait(q["id"])
    seconds = time.perf_counter() - t0
    check = _check(svc, q["id"])
    assert check["lost"] == 0 and check["duplicate_images"] == 0, check
    return seconds


def scale(latency: float, per_worker: int, repeats: int = 2) -> dict[str, Any]:
    """Images per minute with n simulated workers: the best of `repeats` runs (a shared machine's load only ever
    slows a run down)."""
    from bench._sim_worker import SimWorker

    rates: dict[int, float] = {}
    runs = [0] + [n for n in WORKER_COUNTS for _ in range(repeats)]  # 0: a warm-up (imports, first PNG)
    with tempfile.TemporaryDirectory(prefix="ps-scale-") as tmp:
        for r, n in enumerate(runs):
            workers = [SimWorker(latency).start() for _ in range(max(n, 1))]
            provider, runner = _runner(Path(tmp) / f"w{n}_{r}")
            try:
                svc = provider()
                sid = _session(svc)
                for w in workers:
                    runner.add_worker(sid, w.url)
                total = max(n, 1) * per_worker if n else 2
                seconds = _timed_queue(svc, runner, sid, total)
                if n:
                    rates[n] = max(rates.get(n, 0.0), total / seconds * 60.0)
            finally:
                runner.close()
                provider.close()
                for w in workers:
                    w.close()
    ideal = 60.0 / latency
    return {
        "latency_s": latency,
        "images_per_worker": per_worker,
        "best_of": repeats,
        "ideal_images_per_minute_per_worker": ideal,
        "images_per_minute": {str(n): r for n, r in rates.items()},
        **{f"scale_efficiency_{n}": rates[n] / (n * rates[1]) for n in WORKER_COUNTS if n > 1},
        **{f"efficiency_vs_ideal_{n}": rates[n] / (n * ideal) for n in WORKER_COUNTS},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], ready: str, timeout: float = 180) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if ready in line:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    if not seen.wait(timeout):
        _stop(proc)
        raise RuntimeError(f"{' '.join(args)} did not start: {''.join(lines[-20:])}")
    return proc, lines


def _stop(proc: subprocess.Popen, kill: bool = False) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _sim_process(latency: float) -> tuple[subprocess.Popen, str]:
    proc, lines = _start(["-m", "bench._sim_worker", "--latency", str(latency)], "PORT ")
    port = next(line.split()[1] for line in lines if line.startswith("PORT "))
    return proc, f"http://127.0.0.1:{port}"


def app_speedup(per_worker: int, steps: int) -> dict[str, Any]:
    """Images per minute with 1 and with 2 real app worker processes (each torch on 1 thread)."""
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="ps-app-") as tmp:
        try:
            urls = []
            for _ in range(2):
                port = _free_port()
                proc, _ = _start(["-m", "lib_ext.app", "--port", str(port), "--threads", "1", "--data-dir",
                                  str(Path(tmp) / f"app{port}")], "PromptScope app on")  # fmt: skip
                procs.append(proc)
                urls.append(f"http://127.0.0.1:{port}")
            from lib_ext.bandit.workers import WorkerClient

            for url in urls:  # warm-up (the model's first call), not timed
                WorkerClient(url, timeout=120).txt2img("a red circle", "", 1, {"steps": steps})
            rates = {}
            for n in (1, 2):
                provider, runner = _runner(Path(tmp) / f"host{n}")
                try:
                    svc = provider()
                    sid = _session(svc, {"steps": steps})
                    for url in urls[:n]:
                        runner.add_worker(sid, url)
                    total = max(n, 1) * per_worker if n else 2
                    seconds = _timed_queue(svc, runner, sid, total)
                    rates[n] = total / seconds * 60.0
                finally:
                    runner.close()
                    provider.close()
        finally:
            for proc in procs:
                _stop(proc)
    return {"app_steps": steps, "app_images_per_worker": per_worker, "cpu_count": os.cpu_count(),
            "app_images_per_minute": {str(n): r for n, r in rates.items()},
            "app_speedup_2": rates[2] / rates[1]}  # fmt: skip


def worker_kill(total: int, latency: float) -> dict[str, Any]:
    """3 simulated worker processes; one is killed with SIGKILL while the queue runs."""
    procs = []
    with tempfile.TemporaryDirectory(prefix="ps-kill-") as tmp:
        provider, runner = _runner(Path(tmp) / "data", request_timeout=30)
        try:
            urls = []
            for _ in range(3):
                proc, url = _sim_process(latency)
                procs.append(proc)
                urls.append(url)
            svc = provider()
            sid = _session(svc)
            for url in urls:
                runner.add_worker(sid, url)
            q = runner.start(sid, total, use_local=False)
            while svc.store.get_queue(q["id"])["counts"]["done"] < total // 4:
                time.sleep(0.01)
            in_flight = svc.store.get_queue(q["id"])["counts"]["claimed"]
            _stop(procs[0], kill=True)
            runner.wait(q["id"])
            check = _check(svc, q["id"])
            killed = next(w for w in runner.workers(sid) if w["url"] == urls[0])
        finally:
            runner.close()
            provider.close()
            for proc in procs:
                _stop(proc)
    return {"kill_jobs": total, "kill_in_flight_at_kill": in_flight, "killed_worker_errors": killed["errors"],
            "lost_jobs_after_worker_kill": check["lost"],
            "duplicates_after_worker_kill": check["duplicate_images"] + check["duplicate_files"]}  # fmt: skip


def host_kill(total: int, latency: float) -> dict[str, Any]:
    """The host process runs a queue over 2 simulated worker processes and is killed with SIGKILL mid-queue; a
    new host process resumes the queue and finishes it."""
    procs = []
    with tempfile.TemporaryDirectory(prefix="ps-resume-") as tmp:
        data = Path(tmp) / "data"
        try:
            urls = []
            for _ in range(2):
                proc, url = _sim_process(latency)
                procs.append(proc)
                urls.append(url)
            host, lines = _start(["-m", "bench.seed_bandit_scale", "host", str(data), str(total), ",".join(urls)],
                                 "QUEUE ")  # fmt: skip
            from lib_ext.bandit.store import Store

            with Store(data, checkpoint_seconds=None) as store:
                qid = int(next(line.split()[1] for line in lines if line.startswith("QUEUE ")))
                while store.get_queue(qid)["counts"]["done"] < total // 3:
                    time.sleep(0.01)
                at_kill = store.get_queue(qid)["counts"]
            _stop(host, kill=True)
            resumed, lines = _start(["-m", "bench.seed_bandit_scale", "host", str(data), str(total), ",".join(urls),
                                     "--resume"], "FINISHED", timeout=300)  # fmt: skip
            _stop(resumed)
            from lib_ext.bandit.service import BanditService

            with BanditService(data) as svc:
                check = _check(svc, qid)
        finally:
            for proc in procs:
                _stop(proc)
    return {"resume_jobs": total, "resume_done_at_kill": at_kill["done"], "resume_claimed_at_kill": at_kill["claimed"],
            "queue_resume_duplicates": check["duplicate_images"] + check["duplicate_files"],
            "queue_resume_lost": check["lost"]}  # fmt: skip


def host_main(argv: list[str]) -> int:
    """The host child: start (or `--resume`) a queue over the given worker URLs, print QUEUE <id>, wait for it."""
    ap = argparse.ArgumentParser(prog="python -m bench.seed_bandit_scale host")
    ap.add_argument("data")
    ap.add_argument("images", type=int)
    ap.add_argument("urls")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    provider, runner = _runner(Path(args.data), request_timeout=30)
    try:
        svc = provider()
        if args.resume:
            ids = runner.resume_all()
            qid = ids[0]
        else:
            sid = _session(svc)
            for url in args.urls.split(","):
                runner.add_worker(sid, url)
            qid = runner.start(sid, args.images, use_local=False)["id"]
        print(f"QUEUE {qid}", flush=True)
        runner.wait(qid)
        print(f"FINISHED {qid}", flush=True)
    finally:
        runner.close()
        provider.close()
    return 0


def rating_speed(n: int) -> dict[str, Any]:
    """The rating view in Chromium over a backlog of `n` images (see bench/_rating_speed.py)."""
    from bench import _rating_speed

    why = _rating_speed.chromium_missing()
    if why is not None:
        return {"next_image_ms_p95": None, "next_image_skipped": why}
    return _rating_speed.measure(n, interval=0.15)


# Two raters with different tastes over the four prompts (the seed essay: the author and his wife rate the same images).
TASTES = {"ann": (0.6, 0.3, 0.1, 0.45), "ben": (0.1, 0.3, 0.6, 0.2)}


def two_raters(n_images: int, seed: int = 0) -> dict[str, Any]:
    """Both raters rate every image of a backlog (like with their own rate per prompt); the per-rater views of the
    service's statistics must recover each one's rates: max |posterior mean − true rate| and how many true rates lie
    in the 95 % credible intervals; the pooled view and Cohen's κ beside them."""
    import numpy as np

    from bench import _rating_speed as rs
    from lib_ext.bandit.hosting import ServiceProvider

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="two-raters-") as tmp:
        data = Path(tmp)
        sid = rs.seed_backlog(data, n_images, round_size=8, size=8)
        provider = ServiceProvider(data, seed=seed)
        try:
            svc = provider()
            arms = [a["id"] for a in svc.list_arms(sid)]
            for im in svc.images(sid):
                k = arms.index(im["arm_id"])
                for rater, rates in TASTES.items():
                    svc.rate(im["id"], "like" if rng.random() < rates[k] else "dislike", client="sim", rater=rater)
            errors, inside = [], 0
            views: dict[str, list[float]] = {}
            for rater, rates in TASTES.items():
                rows = {r["arm_id"]: r for r in svc.stats(sid, rater=rater)["arms"]}
                views[rater] = [round(rows[a]["mean"], 3) for a in arms]
                for a, true in zip(arms, rates):
                    errors.append(abs(rows[a]["mean"] - true))
                    inside += rows[a]["ci_low"] <= true <= rows[a]["ci_high"]
            pooled = {r["arm_id"]: r for r in svc.stats(sid, rater="pooled")["arms"]}
            pair = svc.raters(sid)["agreement"][0]
        finally:
            provider.close()
    return {
        "two_rater_images": n_images,
        "two_rater_true_rates": {k: list(v) for k, v in TASTES.items()},
        "two_rater_posterior_means": views,
        "two_rater_pooled_means": [round(pooled[a]["mean"], 3) for a in arms],
        "two_rater_max_abs_error": max(errors),
        "two_rater_true_in_95_interval": f"{inside}/{len(errors)}",
        "two_rater_kappa": pair.get("kappa"),
    }


def main(quick: bool = False) -> dict[str, Any]:
    out_speed = rating_speed(200 if quick else 1500)
    out_speed.update(two_raters(150 if quick else 900))
    if quick:
        out = scale(latency=0.25, per_worker=8)
        out.update(app_speedup(per_worker=4, steps=8))
        out.update(worker_kill(total=24, latency=0.1))
        out.update(host_kill(total=24, latency=0.1))
    else:
        out = scale(latency=0.5, per_worker=16)
        out.update(app_speedup(per_worker=12, steps=20))
        out.update(worker_kill(total=80, latency=0.2))
        out.update(host_kill(total=80, latency=0.2))
    out.update(out_speed)
    out["quick"] = quick
    print(f"{'workers':>8} {'images/min':>11} {'efficiency':>10}")
    for n in WORKER_COUNTS:
        eff = 1.0 if n == 1 else out[f"scale_efficiency_{n}"]
        print(f"{n:>8} {out['images_per_minute'][str(n)]:>11.1f} {eff:>10.3f}")
    print(f"ideal per worker: {out['ideal_images_per_minute_per_worker']:.1f}/min (latency {out['latency_s']} s)")
    app = out["app_images_per_minute"]
    print(f"app workers ({out['cpu_count']} CPUs): 1 → {app['1']:.1f}/min, 2 → {app['2']:.1f}/min, "
          f"speed-up {out['app_speedup_2']:.2f}")  # fmt: skip
    print(
        f"worker killed mid-queue: lost {out['lost_jobs_after_worker_kill']}, "
        f"duplicates {out['duplicates_after_worker_kill']} ({out['kill_in_flight_at_kill']} in flight)"
    )
    print(
        f"two raters, opposite tastes, {out['two_rater_images']} images each: posterior means "
        f"{out['two_rater_posterior_means']} vs true {out['two_rater_true_rates']}; max error "
        f"{out['two_rater_max_abs_error']:.3f}, true rate in the 95% interval {out['two_rater_true_in_95_interval']}"
    )
    print(
        f"host killed mid-queue and resumed: duplicates {out['queue_resume_duplicates']}, "
        f"lost {out['queue_resume_lost']} ({out['resume_claimed_at_kill']} claimed at the kill)"
    )
    if out["next_image_ms_p95"] is None:
        print(f"rating view: not measured ({out['next_image_skipped']})")
    else:
        print(
            f"rating view, {out['key_presses']} key presses {out['press_interval_ms']:.0f} ms apart: next image "
            f"p95 {out['next_image_ms_p95']:.1f} ms (first 100 {out['next_image_ms_p95_first_100']:.1f}, last 100 "
            f"{out['next_image_ms_p95_last_100']:.1f}), median {out['next_image_ms_median']:.1f}, max "
            f"{out['next_image_ms_max']:.1f}; {out['ratings_stored']} ratings stored"
        )
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "host":
        sys.exit(host_main(sys.argv[2:]))
    print("usage: python -m bench seed_bandit_scale [--quick]", file=sys.stderr)
    sys.exit(2)
