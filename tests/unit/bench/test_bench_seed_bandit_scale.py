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
