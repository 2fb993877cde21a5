"""bench seed_bandit_scale: the scaling run on a small scale, and its checks find what they count."""

from __future__ import annotations

import shutil

from bench import seed_bandit_scale as b


def test_scale_measures_every_worker_count():
    out = b.scale(latency=0.05, per_worker=2, repeats=1)
    assert set(out["images_per_minute"]) == {"1", "2", "4", "8"}
    assert all(r > 0 for r in out["images_per_minute"].values())
    assert out["scale_efficiency_2"] > 0 and out["efficiency_vs_ideal_1"] <= 1.05


def test_check_counts_lost_jobs_and_second_files(tmp_path):
    from bench._sim_worker import SimWorker

    provider, runner = b._runner(tmp_path / "data")
    try:
        svc = provider()
        sid = b._session(svc)
        with SimWorker(0.0) as w:
            runner.add_worker(sid, w.url)
            q = runner.start(sid, 4, use_local=False)
            runner.wait(q["id"])
        clean = b._check(svc, q["id"])
        assert clean == {"jobs": 4, "done": 4, "lost": 0, "duplicate_images": 0, "duplicate_files": 0, "files": 4}
        first = svc.images(sid)[0]["path"]
        shutil.copyfile(first, first.replace(".png", "-1.png"))  # a second file for one job
        job = svc.store.list_queue_jobs(q["id"])[0]
        with svc.store._write() as conn:  # a job that never got its image
            conn.execute("UPDATE queue_jobs SET state = 'pending', image_id = NULL WHERE id = ?", (job["id"],))
        bad = b._check(svc, q["id"])
        assert bad["duplicate_files"] == 1 and bad["lost"] == 1 and bad["duplicate_images"] == 1
    finally:
        runner.close()
        provider.close()


def test_sigkill_of_a_worker_or_of_the_host_loses_and_duplicates_nothing():
    """Real processes killed with SIGKILL mid-queue (the bench's own runs, small)."""
    # latencies long enough that the kill lands mid-queue on a busy machine (the queue takes 0.6 s and 1.2 s)
    worker = b.worker_kill(total=12, latency=0.15)
    assert worker["lost_jobs_after_worker_kill"] == 0 and worker["duplicates_after_worker_kill"] == 0
    assert worker["killed_worker_errors"] >= 1  # it was killed while the queue still needed it
    host = b.host_kill(total=16, latency=0.15)
    assert host["queue_resume_duplicates"] == 0 and host["queue_resume_lost"] == 0
    assert 0 < host["resume_done_at_kill"] < 16  # killed mid-queue


def test_rating_speed_is_null_with_the_reason_without_chromium(monkeypatch):
    from bench import _rating_speed

    monkeypatch.setattr(_rating_speed, "chromium_missing", lambda: "Chromium not installed (test)")
    assert b.rating_speed(10) == {"next_image_ms_p95": None, "next_image_skipped": "Chromium not installed (test)"}


def test_the_seeded_backlog_is_pending_in_rounds_with_files(tmp_path):
    from bench import _rating_speed
    from lib_ext.bandit.store import Store

    sid = _rating_speed.seed_backlog(tmp_path / "data", 20, round_size=8, size=16)
    with Store(tmp_path / "data") as store:
        pending = store.pending_images(sid)
        assert len(pending) == 20 and len({r for _i, _a, r in pending}) == 3  # rounds of 8, 8, 4
        assert all(store.verify_image(i) == "ok" for i, _a, _r in pending)
    figures = _rating_speed.summarize([{"ms": float(m), "key": "l", "ready": m < 90} for m in range(100)], 100)
    assert figures["next_image_ms_p95"] == 94.05 and figures["next_image_not_loaded_at_press"] == 10


def test_two_raters_views_recover_each_raters_rates():
    from bench.seed_bandit_scale import TASTES, two_raters

    out = two_raters(400, seed=1)
    means = out["two_rater_posterior_means"]
    for rater, rates in TASTES.items():
        other = next(v for k, v in TASTES.items() if k != rater)
        own_error = max(abs(m - t) for m, t in zip(means[rater], rates))
        other_error = max(abs(m - t) for m, t in zip(means[rater], other))
        assert own_error < 0.15 < other_error, (rater, means[rater])
    assert out["two_rater_kappa"] < 0.2  # opposite tastes do not agree
