"""Generate-ahead queue: durable jobs, claims, crash points, workers giving jobs back, cancel, resume."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bench._sim_worker import SimWorker, png_of
from lib_ext.bandit.hosting import ServiceProvider, host_generator
from lib_ext.bandit.queue import JOB_KEY, QueueConflictError, QueueRunner, job_of, job_path
from lib_ext.bandit.service import ImageResult
from lib_ext.bandit.store import MIGRATIONS, SCHEMA_VERSION, Store, migrate
from lib_ext.bandit.workers import check_worker_url, txt2img_payload, with_infotext_keys


@pytest.fixture
def provider(tmp_path):
    p = ServiceProvider(tmp_path / "data", seed=0)
    yield p
    p.close()


def make_session(svc, n_arms=3, round_size=4, **settings):
    sid = svc.create_session("q", settings or {"steps": 5}, round_size=round_size)["id"]
    for i in range(n_arms):
        svc.add_arm(sid, f"prompt {i}")
    return sid


def local_generate(folder_fn, calls=None, delay=0.0, fail=None):
    """A host pipeline that writes a real PNG per job (with its infotext), as host_generator does."""
    from dataclasses import dataclass

    from PIL import Image

    @dataclass
    class Res:
        request: object
        image: object
        seed: int
        infotext: str
        path: str | None = None

    def run_jobs(requests, progress=None):
        out = []
        for r in requests:
            if fail is not None and fail(r):
                raise RuntimeError(f"boom for {r.prompt}")
            if delay:
                time.sleep(delay)
            if calls is not None:
                calls.append(r.infotext[JOB_KEY])
            info = r.prompt + "\nSteps: 5, " + ", ".join(f"{k}: {v}" for k, v in r.infotext.items())
            out.append(Res(r, Image.new("RGB", (8, 8), (r.seed & 255, 0, 0)), r.seed, info))
        return out

    from lib_ext.seam import GenerationRequest

    return host_generator(run_jobs, GenerationRequest, folder_fn)


def runner_for(provider, generate=None, **kw):
    kw.setdefault("poll_seconds", 0.02)
    kw.setdefault("backoff_scale", 0.02)
    kw.setdefault("heartbeat_seconds", 0.2)
    return QueueRunner(provider, generate, lambda: provider.data_dir() / "images", **kw)


def assert_exactly_once(svc, qid, total):
    store = svc.store
    jobs = store.list_queue_jobs(qid)
    assert len(jobs) == total
    assert all(j["state"] == "done" for j in jobs), Counter(j["state"] for j in jobs)
    image_ids = [j["image_id"] for j in jobs]
    assert len(set(image_ids)) == total
    sid = jobs[0]["session_id"]
    images = svc.images(sid)
    assert sorted(i["id"] for i in images) == sorted(image_ids)  # no image without a job, none twice
    assert len({i["path"] for i in images}) == total and all(Path(i["path"]).is_file() for i in images)
    for i in images:
        assert i["rating"] == "pending"


def test_migration_step_is_self_contained(tmp_path):
    """The queue's step applies on a database of the previous version and keeps its rows."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, SCHEMA_VERSION - 1)
    conn.execute("INSERT INTO sessions (name, created) VALUES ('s', 1)")
    conn.close()
    with Store(tmp_path, "old.sqlite3", checkpoint_seconds=None) as store:
        assert store.schema_version() == SCHEMA_VERSION == max(MIGRATIONS)
        assert store.get_session(1)["name"] == "s"
        assert store.list_queues() == [] and store.list_workers(1) == []


def test_local_queue_generates_exactly_n_with_progress(provider):
    svc = provider()
    sid = make_session(svc)
    calls: list[str] = []
    runner = runner_for(provider, local_generate(lambda: provider.data_dir() / "images", calls, delay=0.01))
    try:
        q = runner.start(sid, 10)
        assert q["total"] == 10 and q["state"] == "running" and q["running_here"]
        assert runner.wait(q["id"], 30)
        q = runner.status(q["id"])
        assert q["state"] == "done" and q["counts"]["done"] == 10 and q["remaining"] == 0
        assert_exactly_once(svc, q["id"], 10)
        assert len(calls) == len(set(calls)) == 10  # each job generated once
        # batches are rounds of the session's round size (4, 4, 2), planned from the posterior of their time
        rounds = svc.store.list_rounds(sid)
        assert [r["k"] for r in rounds] == [4, 4, 2]
        # the image's file carries session, arm, round and job (PNG Info)
        img = svc.images(sid)[0]
        from PIL import Image

        with Image.open(img["path"]) as im:
            text = im.info["parameters"]
        assert f"PromptScope session: {sid}" in text and f"{JOB_KEY}: " in text
    finally:
        runner.close()


def test_pending_images_are_not_ratings_and_ratings_steer_later_batches(provider):
    svc = provider()
    sid = make_session(svc, n_arms=2, round_size=10)
    good, bad = (a["id"] for a in svc.list_arms(sid))
    gate = threading.Event()
    runner = runner_for(provider, local_generate(lambda: provider.data_dir() / "images", delay=0.0,
                                                 fail=lambda r: not gate.wait(10)))  # fmt: skip
    try:
        # teach the model first: arm `good` liked, `bad` disliked
        for _ in range(3):
            res = svc.run_round(sid, lambda jobs: [ImageResult(j, str(_png(provider, j))) for j in jobs], k=10)
            for im in res["images"]:
                svc.rate(im["id"], "like" if im["arm_id"] == good else "dislike")
        before = svc.stats(sid)["arms"]
        q = runner.start(sid, 30)
        gate.set()
        assert runner.wait(q["id"], 30)
        after = svc.stats(sid)["arms"]
        assert [a["n"] for a in before] == [a["n"] for a in after]  # 30 pending images, no new observation
        counts = Counter(j["arm_id"] for j in svc.store.list_queue_jobs(q["id"]))
        assert counts[good] > counts[bad]  # Thompson sampling on the posterior
    finally:
        runner.close()


def _png(provider, job):
    from PIL import Image

    p = provider.data_dir() / "manual" / f"{job.round_id}_{job.index}.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(p)
    return p


def test_workers_share_the_queue_and_a_dead_worker_gives_its_jobs_back(provider):
    svc = provider()
    sid = make_session(svc)
    with SimWorker(0.02) as w1, SimWorker(0.02) as w2:
        dead = SimWorker(0.02)
        dead_url = dead.url
        dead.server.server_close()  # nobody listens there: connection refused
        runner = runner_for(provider)
        try:
            for url in (w1.url, w2.url, dead_url):
                runner.add_worker(sid, url)
            q = runner.start(sid, 24, use_local=False)
            assert runner.wait(q["id"], 60)
            assert_exactly_once(svc, q["id"], 24)
            assert w1.answered + w2.answered == 24 and w1.answered > 0 and w2.answered > 0
            workers = {w["url"]: w for w in runner.workers(sid)}
            assert workers[dead_url]["errors"] > 0 and "did not answer" in workers[dead_url]["last_error"]
            assert workers[w1.url]["done"] + workers[w2.url]["done"] == 24
            # a dead worker is not the job's fault
            assert all(j["attempts"] <= 1 for j in svc.store.list_queue_jobs(q["id"]))
        finally:
            runner.close()


def test_worker_killed_mid_job_loses_nothing(provider):
    """A worker that disappears while generating: its job goes to the other worker, recorded once."""
    svc = provider()
    sid = make_session(svc)
    with SimWorker(0.1) as good, SimWorker(0.02, die_on=3) as dying:
        runner = runner_for(provider, request_timeout=30)
        try:
            runner.add_worker(sid, good.url)
            runner.add_worker(sid, dying.url)
            q = runner.start(sid, 16, use_local=False)
            assert runner.wait(q["id"], 60)
            assert_exactly_once(svc, q["id"], 16)
            assert dying.requests >= 3 and dying.answered == 2 and good.answered == 14
            w = {x["url"]: x for x in runner.workers(sid)}[dying.url]
            assert w["errors"] >= 1 and w["done"] == 2
        finally:
            runner.close()


def test_cancel_stops_new_images_and_keeps_those_in_flight(provider):
    svc = provider()
    sid = make_session(svc)
    with SimWorker(0.1) as w:
        runner = runner_for(provider)
        try:
            runner.add_worker(sid, w.url)
            q = runner.start(sid, 50, use_local=False)
            while w.requests < 2:
                time.sleep(0.01)
            out = runner.cancel(q["id"])
            assert out["state"] == "cancelled"
            assert runner.wait(q["id"], 10)
            q = runner.status(q["id"])
            c = q["counts"]
            assert c["pending"] == 0 and c["claimed"] == 0 and c["done"] == w.answered
            assert c["done"] + c["cancelled"] == q["planned"]
            assert len(svc.images(sid)) == c["done"]
            # a cancelled queue frees the session for a new one
            q2 = runner.start(sid, 1, use_local=False)
            assert runner.wait(q2["id"], 10) and runner.status(q2["id"])["state"] == "done"
        finally:
            runner.close()


def test_close_aborts_in_flight_and_a_new_runner_resumes_without_duplicates(provider):
    svc = provider()
    sid = make_session(svc)
    with SimWorker(0.05) as w:
        r1 = runner_for(provider)
        r1.add_worker(sid, w.url)
        q = r1.start(sid, 20, use_local=False)
        while w.answered < 5:
            time.sleep(0.01)
        t0 = time.time()
        r1.close()  # server shutdown: threads joined, claims given back
        assert time.time() - t0 < 5
        assert not [t for t in threading.enumerate() if t.name.startswith(f"promptscope-queue-{q['id']}-")]
        mid = svc.store.get_queue(q["id"])
        assert mid["state"] == "running" and mid["counts"]["claimed"] == 0 and mid["owner"] is None
        r2 = runner_for(provider)
        try:
            assert r2.resume_all() == [q["id"]]
            assert r2.wait(q["id"], 30)
            assert_exactly_once(svc, q["id"], 20)
        finally:
            r2.close()


def test_crash_points(provider):
    """kill -9 between the steps of a job, simulated on the store: claim, file written, record."""
    svc = provider()
    sid = make_session(svc)
    dead_owner = "otherhost:1:dead"  # another machine's owner: taken over once its lease runs out
    store = svc.store
    qid = store.create_queue(sid, 3, None, None, True)
    assert store.take_queue(qid, dead_owner, 30, lambda o: False)
    runner = runner_for(provider, local_generate(lambda: provider.data_dir() / "images"), lease_seconds=0.5)
    run_plan = __import__("lib_ext.bandit.queue", fromlist=["QueueRun"]).QueueRun(runner, store.get_queue(qid), [])
    assert run_plan._plan()  # one batch of 3 jobs, one transaction
    jobs = store.list_queue_jobs(qid)
    assert [j["state"] for j in jobs] == ["pending"] * 3
    # crash 1: job A claimed, nothing generated but a temporary file (killed inside the atomic write)
    a = store.claim_queue_job(qid, "claimA", "dead")
    a_path = job_path(provider.data_dir() / "images", job_of(a))
    a_path.parent.mkdir(parents=True, exist_ok=True)
    a_tmp = a_path.with_name(f".{a_path.name}.0badc0de.tmp")
    a_tmp.write_bytes(b"half a png")
    # crash 2: job B claimed and its file written completely, not recorded
    b = store.claim_queue_job(qid, "claimB", "dead")
    b_job = job_of(b)
    b_path = job_path(provider.data_dir() / "images", b_job)
    b_path.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "made before the crash, " + ", ".join(f"{k}: {v}" for k, v in b_job.infotext.items()))
    Image.new("RGB", (8, 8), (1, 2, 3)).save(b_path, pnginfo=info)
    b_sha_before = b_path.read_bytes()
    # crash 3: job C claimed, its file cut short
    c = store.claim_queue_job(qid, "claimC", "dead")
    c_path = job_path(provider.data_dir() / "images", job_of(c))
    c_path.write_bytes(png_of(5)[:30])
    # the owner is still within its lease: nobody else may take the queue
    assert runner.resume(qid) is False
    time.sleep(0.6)
    calls: list[str] = []
    runner.generate = local_generate(lambda: provider.data_dir() / "images", calls)
    try:
        assert runner.resume(qid)
        assert runner.wait(qid, 30)
    finally:
        runner.close()
    assert_exactly_once(svc, qid, 3)
    assert sorted(calls) == sorted([str(a["id"]), str(c["id"])])  # B was adopted, not generated again
    assert b_path.read_bytes() == b_sha_before
    assert store.get_image(store.get_queue_job(b["id"])["image_id"])["path"] == str(b_path.resolve())
    assert not list(b_path.parent.glob("*-1.png"))  # no second file for any job
    assert not a_tmp.exists()


def test_record_is_atomic_and_claims_are_exclusive(provider):
    svc = provider()
    sid = make_session(svc)
    store = svc.store
    qid = store.create_queue(sid, 2, None, None, True)
    store.add_queue_batch(qid, "more_good", False, [
        {"arm_id": svc.list_arms(sid)[0]["id"], "seed": s, "prompt": "p", "negative": "", "settings": {},
         "slot_choices": []} for s in (1, 2)
    ])  # fmt: skip
    assert (
        store.add_queue_batch(
            qid,
            "more_good",
            False,
            [{"arm_id": 1, "seed": 3, "prompt": "p", "negative": "", "settings": {}, "slot_choices": []}],
        )
        is None
    )  # over total
    j = store.claim_queue_job(qid, "c1", "w")
    f = provider.data_dir() / "x.png"
    f.write_bytes(b"x")
    assert store.complete_queue_job(j["id"], "wrong claim", str(f), "0" * 64) is None
    assert store.complete_queue_job(j["id"], "c1", str(f), "0" * 64) is not None
    assert store.complete_queue_job(j["id"], "c1", str(f), "0" * 64) is None  # done: never a second image
    assert len(svc.images(sid)) == 1
    # an image insert that fails rolls the job back too
    j2 = store.claim_queue_job(qid, "c2", "w")
    with pytest.raises(KeyError):
        store.complete_queue_job(j2["id"], "c2", str(f), "0" * 64, attachments=[{"no path": 1}])
    assert store.get_queue_job(j2["id"])["state"] == "claimed" and len(svc.images(sid)) == 1
    # a job error counts; after MAX_ATTEMPTS it is failed with its message
    assert store.release_queue_job(j2["id"], "c2", "bad", 3) == "pending"
    for n in range(2):
        jj = store.claim_queue_job(qid, f"c{n + 3}", "w")
        store.release_queue_job(jj["id"], f"c{n + 3}", "bad settings", 3)
    assert store.get_queue_job(j2["id"])["state"] == "failed"
    assert store.get_queue_job(j2["id"])["error"] == "bad settings"


def test_job_errors_fail_the_job_after_attempts_and_are_reported(provider):
    svc = provider()
    sid = svc.create_session("f", {"steps": 5}, round_size=2)["id"]
    svc.add_arm(sid, "fine")
    runner = runner_for(provider, local_generate(lambda: provider.data_dir() / "images", fail=lambda r: True))
    try:
        q = runner.start(sid, 2)
        assert runner.wait(q["id"], 30)
        st = runner.status(q["id"])
        assert st["counts"]["failed"] == 2 and st["state"] == "done"
        assert "boom for fine" in st["failed_jobs"][0]["error"]
    finally:
        runner.close()


def test_start_validation(provider):
    svc = provider()
    sid = make_session(svc)
    runner = runner_for(provider, local_generate(lambda: provider.data_dir() / "images", delay=0.2))
    try:
        for bad, msg in ((0, "images must be an integer"), (True, "images must be"), ("5", "images must be"),
                         (100_001, "from 1 to 100000")):  # fmt: skip
            with pytest.raises(ValueError, match=msg):
                runner.start(sid, bad)
        with pytest.raises(ValueError, match="no workers"):
            runner.start(sid, 3, use_local=False)
        empty = svc.create_session("empty")["id"]
        with pytest.raises(ValueError, match="no active arms"):
            runner.start(empty, 3)
        q = runner.start(sid, 3)
        with pytest.raises(QueueConflictError, match="already has a running queue"):
            runner.start(sid, 3)
        runner.cancel(q["id"])
    finally:
        runner.close()
    workers_only = runner_for(provider)
    with pytest.raises(ValueError, match="cannot generate images itself"):
        workers_only.start(sid, 3)


@pytest.mark.parametrize(
    ("url", "msg"),
    [
        ("ftp://x:1", "http:// or https://"),
        ("127.0.0.1:7860", "http:// or https://"),
        ("http://user:pw@host:7860", "must not contain a user name or password"),
        ("http://:7860", "no host"),
        ("http://host:99999", "bad port"),
        ("http://host:7860/?a=1", "query"),
        ("", "non-empty"),
        ("http://host :1", "spaces"),
    ],
)
def test_worker_url_validation(url, msg):
    with pytest.raises(ValueError, match=msg):
        check_worker_url(url)


def test_worker_url_normalised_and_credentials(provider):
    assert check_worker_url(" HTTP://Host:7860/sd/ ") == "http://Host:7860/sd"
    svc = provider()
    sid = make_session(svc)
    runner = runner_for(provider)
    w = runner.add_worker(sid, "http://127.0.0.1:7861", "me", "secret")
    assert w["has_password"] and "password" not in w and w["username"] == "me"
    with pytest.raises(ValueError, match="both worker username and password"):
        runner.add_worker(sid, "http://127.0.0.1:7862", "me", None)
    with pytest.raises(QueueConflictError, match="already"):
        runner.add_worker(sid, "http://127.0.0.1:7861/")
    assert runner.remove_worker(w["id"])["removed"] and runner.workers(sid) == []


def test_worker_auth_and_payload(provider):
    svc = provider()
    sid = make_session(svc)
    with SimWorker(0.0, auth="u:p") as w:
        runner = runner_for(provider)
        try:
            wrong = runner.add_worker(sid, w.url, "u", "wrong")
            q = runner.start(sid, 2, use_local=False)
            deadline = time.time() + 5
            while not runner.workers(sid)[0]["errors"] and time.time() < deadline:
                time.sleep(0.02)
            last_error = runner.workers(sid)[0]["last_error"]
            assert "HTTP 401" in last_error and "--api-auth" in last_error
            runner.cancel(q["id"])
            runner.wait(q["id"], 5)
            runner.remove_worker(wrong["id"])
            runner.add_worker(sid, w.url, "u", "p")
            q = runner.start(sid, 2, use_local=False)
            assert runner.wait(q["id"], 10)
            assert runner.status(q["id"])["counts"]["done"] == 2
        finally:
            runner.close()
    body = txt2img_payload(
        "a AND_TOPK b :1",
        "neg",
        7,
        {"steps": 9, "heatmaps": {"words": "cat"}, "semantic_guidance": {"warmup": 2}, "batch_size": 4},
    )
    assert body["seed"] == 7 and body["steps"] == 9 and body["batch_size"] == 1
    assert body["alwayson_scripts"]["PromptScope: Semantic guidance"]["args"] == [{"enabled": True, "warmup": 2}]
    assert body["alwayson_scripts"]["PromptScope: Attention heatmaps"]["args"][0]["words"] == "cat"
    assert "alwayson_scripts" not in txt2img_payload("plain", "", 1, {})
    text = with_infotext_keys("p\nSteps: 5", {"PromptScope slots": "[0, 1]"})
    assert text == 'p\nSteps: 5, PromptScope slots: "[0, 1]"' and json.loads(text.split(": ", 2)[2]) == "[0, 1]"


def test_a_worker_added_while_the_queue_runs_joins_it(provider):
    svc = provider()
    sid = make_session(svc)
    with SimWorker(0.1) as slow, SimWorker(0.01) as fast:
        runner = runner_for(provider)
        try:
            runner.add_worker(sid, slow.url)
            q = runner.start(sid, 20, use_local=False)
            while slow.answered < 1:
                time.sleep(0.01)
            runner.add_worker(sid, fast.url)
            assert runner.wait(q["id"], 30)
            assert_exactly_once(svc, q["id"], 20)
            assert fast.answered > 0 and slow.answered + fast.answered == 20
        finally:
            runner.close()


def test_backlog_rating_order(provider):
    """Most to learn first, newest posterior first: the session's sampling rule over arms with pending images,
    the newest pending image of the arm it picks; pending images are counted over the session."""
    svc = provider()
    sid = make_session(svc, n_arms=2, round_size=10)
    good, bad = (a["id"] for a in svc.list_arms(sid))

    def gen(jobs):
        return [ImageResult(j, str(_png(provider, j))) for j in jobs]

    for _ in range(4):
        for im in svc.run_round(sid, gen, k=10, mode="uniform")["images"]:
            svc.rate(im["id"], "like" if im["arm_id"] == good else "dislike")
    assert svc.next_to_rate(sid) == (None, 0)
    backlog = svc.run_round(sid, gen, k=10, mode="uniform")["images"]  # 5 pending per arm
    picks = Counter()
    for _ in range(200):
        img, pending = svc.next_to_rate(sid)
        assert pending == 10 and img["rating"] == "pending"
        newest = max(i["id"] for i in backlog if i["arm_id"] == img["arm_id"])
        assert img["id"] == newest
        picks[img["arm_id"]] += 1
    assert picks[good] > 150  # Thompson: the arm likely to be best is rated first
    svc.update_session(sid, mode="uniform")
    svc.rate(svc.images(sid, arm_id=bad, rating="pending")[0]["id"], "dislike")  # bad: one rating more
    assert {svc.next_to_rate(sid)[0]["arm_id"] for _ in range(20)} == {good}  # uniform: the least-rated arm
    for im in svc.images(sid, arm_id=good, rating="pending"):
        svc.rate(im["id"], "like")
    img, pending = svc.next_to_rate(sid)
    assert img["arm_id"] == bad and pending == 4


def test_a_host_that_reports_a_missing_file_fails_the_job_not_the_executor(provider):
    svc = provider()
    sid = make_session(svc, n_arms=1, round_size=2)

    def generate(jobs, progress=None):
        return [ImageResult(j, str(provider.data_dir() / "nowhere.png")) for j in jobs]

    runner = runner_for(provider, generate)
    try:
        q = runner.start(sid, 2)
        assert runner.wait(q["id"], 30)
        st = runner.status(q["id"])
        assert st["counts"]["failed"] == 2 and "cannot be read" in st["failed_jobs"][0]["error"]
        assert svc.images(sid) == []
    finally:
        runner.close()
