"""Store: WAL, migrations, corruption handling, rating events and undo, concurrent writers, kill -9."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lib_ext.bandit.store import (
    CHECKPOINT_SECONDS,
    DB_FILENAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    NotFoundError,
    Store,
    StoreCorruptError,
    StoreError,
    StoreVersionError,
    acknowledge_backups,
    backups,
    migrate,
    unacknowledged_backups,
)

REPO = Path(__file__).resolve().parents[3]


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        self.t += 1.0
        return self.t


def _populate(store, n_images=4):
    sid = store.create_session("s", {"steps": 20}, {"mode": "more_good"})
    arm = store.add_arm(sid, "a cat", "blurry", {"cfg": 7}, "A")
    rnd = store.create_round(sid, "more_good", n_images, False)
    imgs = [
        store.add_image(sid, arm, rnd["id"], 1000 + i, "a cat", "blurry", [], f"/x/{i}.png", "0" * 64)
        for i in range(n_images)
    ]
    return sid, arm, rnd, imgs


def test_wal_and_schema_version(tmp_path):
    with Store(tmp_path) as store:
        assert store.journal_mode() == "wal"
        assert store.schema_version() == SCHEMA_VERSION
        assert (tmp_path / DB_FILENAME).exists()


def test_synchronous_setting_is_validated(tmp_path):
    with pytest.raises(ValueError, match="synchronous"):
        Store(tmp_path, synchronous="OFF; DROP TABLE sessions")
    with Store(tmp_path, synchronous="NORMAL") as store:
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1


def test_ratings_are_events_and_current_is_latest(tmp_path):
    with Store(tmp_path, clock=Clock()) as store:
        sid, arm, rnd, imgs = _populate(store)
        store.add_rating(imgs[0], "like")
        store.add_rating(imgs[0], "dislike")
        store.add_rating(imgs[1], "skip")
        assert store.get_image(imgs[0])["rating"] == "dislike"
        assert [e["value"] for e in store.rating_events(imgs[0])] == ["like", "dislike"]
        # Pending and skipped images are not observations.
        cur = store.current_ratings(sid)
        assert [(r["image_id"], r["rating"]) for r in cur] == [(imgs[0], "dislike")]
        assert store.get_image(imgs[2])["rating"] == "pending"
        with pytest.raises(ValueError, match="rating must be"):
            store.add_rating(imgs[0], "meh")
        with pytest.raises(NotFoundError):
            store.add_rating(99999, "like")


def test_undo_restores_previous_state_and_keeps_history(tmp_path):
    with Store(tmp_path, clock=Clock()) as store:
        sid, arm, rnd, imgs = _populate(store)
        store.add_rating(imgs[0], "like", client="tab1")
        store.add_rating(imgs[0], "dislike", client="tab1")
        store.add_rating(imgs[1], "like", client="tab1")
        assert store.undo_last(sid, "tab1") == [{"image_id": imgs[1], "value": "pending", "rater": ""}]
        assert store.undo_last(sid, "tab1") == [{"image_id": imgs[0], "value": "like", "rater": ""}]
        assert store.undo_last(sid, "tab1") == [{"image_id": imgs[0], "value": "pending", "rater": ""}]
        assert store.undo_last(sid, "tab1") == []
        assert len(store.rating_events(imgs[0])) == 4  # nothing deleted
        assert store.current_ratings(sid) == []


def test_a_retried_rating_is_one_event_and_one_undo_takes_it_back(tmp_path):
    # the rating view's outbox retries a request whose answer was lost: the server may get it twice
    with Store(tmp_path, clock=Clock()) as store:
        sid, arm, rnd, imgs = _populate(store)
        first = store.add_rating(imgs[0], "like", client="page:1", rater="ann")
        assert store.add_rating(imgs[0], "like", client="page:1", rater="ann") == first
        assert len(store.rating_events(imgs[0])) == 1
        assert store.undo_last(sid, "page:1", "ann") == [{"image_id": imgs[0], "value": "pending", "rater": "ann"}]
        # after an undo, the same rating again is a new event; another value or client always is
        assert store.add_rating(imgs[0], "like", client="page:1", rater="ann") != first
        store.add_rating(imgs[0], "dislike", client="page:1", rater="ann")
        store.add_rating(imgs[0], "dislike", client="page:2", rater="ann")
        store.add_rating(imgs[1], "like", rater="ann")
        store.add_rating(imgs[1], "like", rater="ann")  # no client id: every request is an event
        assert len(store.rating_events(imgs[0])) == 5 and len(store.rating_events(imgs[1])) == 2


def test_undo_never_erases_another_tabs_later_rating(tmp_path):
    with Store(tmp_path, clock=Clock()) as store:
        sid, arm, rnd, imgs = _populate(store)
        store.add_rating(imgs[0], "like", client="tab1")
        store.add_rating(imgs[0], "dislike", client="tab2")
        assert store.undo_last(sid, "tab1") == [{"image_id": imgs[0], "value": "dislike", "rater": ""}]
        assert store.get_image(imgs[0])["rating"] == "dislike"


def test_mark_rest_rates_only_pending_and_undoes_as_a_batch(tmp_path):
    with Store(tmp_path, clock=Clock()) as store:
        sid, arm, rnd, imgs = _populate(store, 5)
        store.add_rating(imgs[0], "like")
        store.add_rating(imgs[1], "skip")
        assert store.mark_rest(rnd["id"]) == imgs[2:]
        assert [store.get_image(i)["rating"] for i in imgs] == ["like", "skip", "dislike", "dislike", "dislike"]
        undone = store.undo_last(sid)
        assert sorted(u["image_id"] for u in undone) == imgs[2:]
        assert [store.get_image(i)["rating"] for i in imgs] == ["like", "skip", "pending", "pending", "pending"]


def test_arm_versions(tmp_path):
    with Store(tmp_path, clock=Clock()) as store:
        sid, arm, rnd, imgs = _populate(store)
        new = store.replace_arm(arm, "a black cat", "", {}, "A2", False)
        assert store.get_arm(arm)["retired"] and not store.get_arm(new)["retired"]
        assert store.get_arm(new)["parent_id"] == arm
        assert [a["id"] for a in store.list_arms(sid, include_retired=False)] == [new]
        assert store.get_image(imgs[0])["arm_id"] == arm  # images keep the version that made them


def _v1_database(folder):
    conn = sqlite3.connect(folder / DB_FILENAME, isolation_level=None)
    migrate(conn, target=1)
    conn.execute("INSERT INTO sessions (id, name, created) VALUES (1, 'old', 1.0)")
    conn.execute("INSERT INTO arms (id, session_id, prompt, created) VALUES (1, 1, 'old prompt', 1.0)")
    conn.execute("INSERT INTO rounds (id, session_id, number, mode, k, created) VALUES (1, 1, 1, 'uniform', 2, 1.0)")
    for i in (1, 2):
        conn.execute(
            "INSERT INTO images (id, session_id, arm_id, round_id, seed, prompt, path, sha256, created) "
            "VALUES (?, 1, 1, 1, 5, 'old prompt', 'p.png', 'h', 1.0)",
            (i,),
        )
    conn.execute("INSERT INTO ratings (image_id, value, created) VALUES (1, 'like', 2.0)")
    conn.execute("INSERT INTO ratings (image_id, value, created) VALUES (2, 'dislike', 3.0)")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


def test_migrates_a_version_1_database(tmp_path):
    _v1_database(tmp_path)
    with Store(tmp_path, clock=Clock()) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.get_arm(1)["parent_id"] is None
        assert store.get_arm(1)["updated"] == 1.0
        assert [r["rated_at"] for r in store.current_ratings(1)] == [2.0, 3.0]  # v3 backfilled from events
        assert [r["rating"] for r in store.current_ratings(1)] == ["like", "dislike"]
        # New-version features work on migrated data.
        assert store.undo_last(1) == [{"image_id": 2, "value": "pending", "rater": ""}]
    with Store(tmp_path) as store:  # reopening is a no-op migration
        assert store.schema_version() == SCHEMA_VERSION


# The raters' migration step, found by what it creates (another branch's step may take its number in a merge).
RATERS_STEP = next(v for v, steps in MIGRATIONS.items() if any("CREATE TABLE rater_state" in s for s in steps))


def _pre_raters_database(folder):
    """A database as the code before raters wrote it (schema up to the step before the raters'): two images rated
    through the old write paths — a rating, a re-rating, an undo event, a "mark the rest" batch."""
    conn = sqlite3.connect(folder / DB_FILENAME, isolation_level=None)
    migrate(conn, target=RATERS_STEP - 1)
    conn.execute("INSERT INTO sessions (id, name, created) VALUES (1, 'old', 1.0)")
    conn.execute("INSERT INTO arms (id, session_id, prompt, created, updated) VALUES (1, 1, 'old prompt', 1.0, 1.0)")
    conn.execute("INSERT INTO rounds (id, session_id, number, mode, k, created) VALUES (1, 1, 1, 'uniform', 3, 1.0)")
    for i in (1, 2, 3):
        conn.execute(
            "INSERT INTO images (id, session_id, arm_id, round_id, seed, prompt, path, sha256, created) "
            "VALUES (?, 1, 1, 1, 5, 'old prompt', 'p.png', 'h', 1.0)",
            (i,),
        )
    rows = [  # id, image, value, created, undoes, batch, client
        (1, 1, "dislike", 2.0, None, None, "tab:a"),
        (2, 1, "like", 3.0, None, None, "tab:a"),
        (3, 2, "skip", 4.0, None, None, "tab:a"),
        (4, 2, "pending", 5.0, 3, None, "tab:a"),  # the skip undone
        (5, 2, "dislike", 6.0, None, "b1", "tab:a"),  # mark the rest as bad
        (6, 3, "dislike", 6.0, None, "b1", "tab:a"),
    ]
    conn.executemany(
        "INSERT INTO ratings (id, image_id, value, created, undoes, batch, client) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
    )
    assert conn.execute("PRAGMA user_version").fetchone()[0] == RATERS_STEP - 1
    conn.close()
    return rows


def test_migrates_a_database_from_before_raters_keeping_every_rating(tmp_path):
    rows = _pre_raters_database(tmp_path)
    with Store(tmp_path, clock=Clock()) as store:
        assert store.schema_version() == SCHEMA_VERSION
        # nothing lost: every event kept, each now the unnamed rater's
        events = store.rating_history(1)
        assert [(e["id"], e["value"], e["undoes"], e["batch"], e["client"]) for e in events] == [
            (r[0], r[2], r[4], r[5], r[6]) for r in rows
        ]
        assert {e["rater"] for e in events} == {""}
        # the current ratings are the unnamed rater's (like, dislike, dislike) with their times
        cur = store.current_ratings(1)
        assert [(r["image_id"], r["rater"], r["rating"], r["rated_at"]) for r in cur] == [
            (1, "", "like", 3.0), (2, "", "dislike", 6.0), (3, "", "dislike", 6.0),
        ]  # fmt: skip
        assert [i["rating"] for i in store.list_images(1)] == ["like", "dislike", "dislike"]
        assert [i["ratings"] for i in store.list_images(1)] == [{"": "like"}, {"": "dislike"}, {"": "dislike"}]
        assert store.rating_tallies(1) == {1: {"like": 1, "dislike": 2, "skip": 0, "pending": 0}}
        # a named rater starts with everything pending and rates on their own
        assert [i["rating"] for i in store.list_images(1, rater="mika")] == ["pending"] * 3
        store.add_rating(1, "dislike", client="tab:b", rater="mika")
        assert store.get_image(1)["rating"] == "like" and store.get_image(1, "mika")["rating"] == "dislike"
        assert store.get_image(1)["ratings"] == {"": "like", "mika": "dislike"}
        assert [i["id"] for i in store.list_images(1, rating="disagree")] == [1]
        # the old undo history still works: the batch first, then the re-rating of image 1 — mika's rating stays
        assert store.undo_last(1, "tab:a") == [
            {"image_id": 2, "value": "pending", "rater": ""}, {"image_id": 3, "value": "pending", "rater": ""},
        ]  # fmt: skip
        assert store.undo_last(1, "tab:a") == [{"image_id": 1, "value": "dislike", "rater": ""}]
        assert store.get_image(1)["ratings"] == {"": "dislike", "mika": "dislike"}
    with Store(tmp_path) as store:  # reopening is a no-op migration
        assert store.schema_version() == SCHEMA_VERSION


def test_each_rater_has_their_own_rating_undo_and_rest(tmp_path):
    with Store(tmp_path, clock=Clock()) as store:
        sid, _arm, rnd, imgs = _populate(store)
        store.add_rating(imgs[0], "like", client="tab", rater="ann")
        store.add_rating(imgs[0], "dislike", client="tab", rater="bob")
        store.add_rating(imgs[1], "like", client="tab", rater="bob")
        # same client (one shared browser tab), two raters: each undoes only their own last rating
        assert store.undo_last(sid, "tab", rater="ann") == [{"image_id": imgs[0], "value": "pending", "rater": "ann"}]
        assert store.get_image(imgs[0])["ratings"] == {"bob": "dislike"}
        assert store.undo_last(sid, "tab", rater="ann") == []
        # "mark the rest" marks what is pending for that rater only
        assert store.mark_rest(rnd["id"], "dislike", "tab", rater="bob") == [imgs[2], imgs[3]]
        assert store.mark_rest(rnd["id"], "dislike", "tab", rater="ann") == imgs
        assert store.rating_tallies(sid, "bob")[1] == {"like": 1, "dislike": 3, "skip": 0, "pending": 0}
        pooled = store.rating_tallies(sid, None)[1]
        assert pooled == {"like": 1, "dislike": 7, "skip": 0, "pending": 0}
        assert len(store.current_ratings(sid)) == 8 and len(store.current_ratings(sid, "bob")) == 4
        assert [r["rater"] for r in store.raters(sid)] == ["ann", "bob"]
        # undoing ann's batch leaves bob's ratings as they are
        assert {u["rater"] for u in store.undo_last(sid, "tab", rater="ann")} == {"ann"}
        assert store.rating_tallies(sid, None)[1] == {"like": 1, "dislike": 3, "skip": 0, "pending": 0}
        assert store.rating_tallies(sid, "ann")[1]["pending"] == 4


def test_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreVersionError, match="newer"):
        Store(tmp_path)
    assert path.read_bytes() == before


def test_garbage_file_is_moved_aside_with_a_clear_message(tmp_path):
    path = tmp_path / DB_FILENAME
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreCorruptError) as info:
        Store(tmp_path)
    err = info.value
    assert str(path) in str(err) and "corrupt" in str(err) and "Nothing was reset" in str(err)
    assert not path.exists()
    assert err.backup.exists() and err.backup.read_bytes() == b"this is not sqlite at all" * 100
    assert ".corrupt-" in err.backup.name
    # The caller decides to start again: a new, empty store.
    with Store(tmp_path) as store:
        assert store.list_sessions() == []


def test_a_moved_aside_database_stays_unacknowledged_on_disk_until_acknowledged(tmp_path, caplog):
    path = tmp_path / DB_FILENAME
    path.write_bytes(b"this is not sqlite at all" * 100)
    with caplog.at_level("ERROR", logger="promptscope"), pytest.raises(StoreCorruptError) as info:
        Store(tmp_path)
    backup = info.value.backup
    assert str(backup) in caplog.text  # said in the console when it happens
    Path(str(backup) + "-wal").write_bytes(b"junk")  # a moved -wal/-shm is not a backup of its own
    assert backups(tmp_path) == unacknowledged_backups(tmp_path) == [backup]
    with Store(tmp_path) as store:  # a new store opens; the fact that nobody saw the backup is still on disk
        store.create_session("new")
    assert unacknowledged_backups(tmp_path) == [backup]
    assert acknowledge_backups(tmp_path) == [backup]
    marker = Path(str(backup) + ".acknowledged")
    assert backup.name in marker.read_text()
    assert unacknowledged_backups(tmp_path) == [] and backups(tmp_path) == [backup]
    assert acknowledge_backups(tmp_path) == []
    assert backup.read_bytes() == b"this is not sqlite at all" * 100  # the backup itself is never touched
    marker.unlink()  # e.g. a backup copied in from elsewhere: unseen again
    assert unacknowledged_backups(tmp_path) == [backup]


def test_acknowledging_in_a_read_only_folder_says_what_to_do(tmp_path, monkeypatch):
    (tmp_path / f"{DB_FILENAME}.corrupt-20260101-000000").write_bytes(b"x")

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(StoreError, match="cannot record the acknowledgement.*make the data folder writable"):
        acknowledge_backups(tmp_path)


def test_a_store_knows_when_its_file_was_moved_away(tmp_path):
    with Store(tmp_path) as store:
        assert not store.moved_away()
        os.replace(tmp_path / DB_FILENAME, tmp_path / "elsewhere.sqlite3")
        assert store.moved_away()


def _rating_in_main_file(folder: Path, image_id: int, scratch: Path) -> bool:
    """Whether a copy of the main database file alone (no -wal) holds a rating of `image_id`."""
    scratch.mkdir(exist_ok=True)
    copy = scratch / "main-only.sqlite3"
    shutil.copyfile(folder / DB_FILENAME, copy)
    conn = sqlite3.connect(copy)
    try:
        return conn.execute("SELECT COUNT(*) FROM ratings WHERE image_id = ?", (image_id,)).fetchone()[0] > 0
    except sqlite3.DatabaseError:  # no schema yet, or caught mid-checkpoint (the main file alone is not whole)
        return False
    finally:
        conn.close()
        copy.unlink()


def _seconds_until_in_main_file(folder: Path, image_id: int, scratch: Path, limit: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if _rating_in_main_file(folder, image_id, scratch):
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


@pytest.mark.parametrize("interval", [None, 0.3, CHECKPOINT_SECONDS])
def test_a_rating_reaches_the_main_file_within_the_checkpoint_interval(tmp_path, interval):
    """What a damaged -wal can lose: without the checkpoint thread (None) a rating stays in the -wal (SQLite
    checkpoints by itself only every 1000 pages); with it, it is in the main file an interval later (run with -s
    to see the measured seconds)."""
    data = tmp_path / "data"
    store = Store(data, checkpoint_seconds=interval)
    try:
        sid, arm, rnd, imgs = _populate(store)
        time.sleep((interval or 0.3) + 0.2)  # the set-up's own checkpoint, if any, is done
        store.add_rating(imgs[0], "like")
        seconds = _seconds_until_in_main_file(data, imgs[0], tmp_path / "scratch", limit=(interval or 1.5) + 2.0)
        print(f"checkpoint_seconds={interval}: the rating was in the main file after {seconds} s")
        if interval is None:
            assert seconds is None
        else:
            # interval + the checkpoint's own time; the slack is for a busy 2-core test machine
            assert seconds is not None and seconds <= interval + 1.5, seconds
            assert store._checkpointer.last[2] == store._checkpointer.last[1]  # every frame copied
    finally:
        store.close()


def test_a_reader_holding_old_frames_only_delays_the_checkpoint(tmp_path):
    data = tmp_path / "data"
    with Store(data, checkpoint_seconds=0.2) as store:
        sid, arm, rnd, imgs = _populate(store)
        reader = sqlite3.connect(data / DB_FILENAME, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM ratings").fetchone()  # holds its snapshot: frames after it must stay
        store.add_rating(imgs[0], "like")
        assert _seconds_until_in_main_file(data, imgs[0], tmp_path / "scratch", limit=1.0) is None
        reader.execute("COMMIT")
        reader.close()
        assert _seconds_until_in_main_file(data, imgs[0], tmp_path / "scratch", limit=3.0) is not None


def test_close_between_the_interval_and_the_wake_clear_still_ends_the_checkpoint_thread(tmp_path, monkeypatch):
    """The race a CI run hung on: close() sets stop and wake after the thread's interval wait returned and before
    it cleared its wake, so the clear erased close()'s wake. The thread must see stop and end, not wait for a wake
    that never comes (close() would join it forever)."""
    from lib_ext.bandit import store as store_module

    class CloseBeforeClear(threading.Event):
        owner = None

        def clear(self):
            if self.owner is not None:  # close() lands here, once (on the thread itself it sets and does not join)
                owner, self.owner = self.owner, None
                owner.close()
            super().clear()

    made: list[threading.Event] = []
    real_event = threading.Event

    def event():
        made.append(CloseBeforeClear() if not made else real_event())
        return made[-1]

    path = tmp_path / DB_FILENAME  # a whole WAL database: a checkpoint of it succeeds and asks for no rerun
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with monkeypatch.context() as m:
        m.setattr(store_module.threading, "Event", event)  # the first Event the checkpointer makes is its wake
        checkpointer = store_module._Checkpointer(path, 0.01, 1000)
    wake = made[0]
    assert checkpointer._wake is wake
    wake.owner = checkpointer
    checkpointer.notify()
    checkpointer._thread.join(timeout=10)
    stuck = checkpointer._thread.is_alive()
    if stuck:  # let the daemon thread go before failing
        threading.Event.set(wake)
        checkpointer._thread.join(timeout=10)
    assert not stuck, "the checkpoint thread waited for a wake that close() had already given"
    closer = threading.Thread(target=checkpointer.close, daemon=True)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive()
    assert checkpointer.runs == 0  # it stopped without a checkpoint


def test_closing_stops_the_checkpoint_thread(tmp_path):
    def checkpoint_threads():
        return [t for t in threading.enumerate() if t.name.startswith("promptscope-checkpoint")]

    before = len(checkpoint_threads())
    store = Store(tmp_path, checkpoint_seconds=0.05)
    assert len(checkpoint_threads()) == before + 1
    _populate(store)
    store.close()
    assert len(checkpoint_threads()) == before
    store.close()  # twice is fine
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / DB_FILENAME).write_bytes(b"not sqlite" * 500)
    with pytest.raises(StoreCorruptError):
        Store(tmp_path / "bad", checkpoint_seconds=0.05)
    assert len(checkpoint_threads()) == before  # a store that failed to open leaves no thread
    assert Store(tmp_path, checkpoint_seconds=None)._checkpointer is None


def test_damaged_pages_are_detected(tmp_path):
    with Store(tmp_path) as store:
        sid = store.create_session("s")
        arm = store.add_arm(sid, "p" * 500)
        for i in range(300):
            store.add_image(sid, arm, None, i, "p" * 200, "", [], f"/img/{i}.png", "f" * 64)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / DB_FILENAME
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for p in range(2, len(data) // page, 2):  # trash every other page's b-tree header (keep the file header)
        data[p * page : p * page + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError) as info:
        Store(tmp_path)
    assert info.value.backup.exists()


def test_second_store_on_the_same_folder_sees_committed_ratings(tmp_path):
    a = Store(tmp_path)
    b = Store(tmp_path)
    sid, arm, rnd, imgs = _populate(a)
    a.add_rating(imgs[0], "like")
    assert b.get_image(imgs[0])["rating"] == "like"
    a.close()
    b.close()


_WRITER = textwrap.dedent(
    """
    import sys
    from lib_ext.bandit.store import Store
    folder, images, n, client = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3]), sys.argv[4]
    store = Store(folder)
    print("ready", flush=True)
    for j in range(n):  # each visit to an image changes its rating (a repeat of the same one is one event)
        event = store.add_rating(images[j % len(images)], ("like", "dislike")[j // len(images) % 2], client=client)
        print(event, flush=True)  # reported only after add_rating returned, i.e. after COMMIT
    """
)


def _writer(folder, images, n, client):
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(folder), ",".join(map(str, images)), str(n), client],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_writer_processes_lose_nothing(tmp_path):
    with Store(tmp_path) as store:
        sid, arm, rnd, imgs = _populate(store, 6)
    n = 150
    procs = [_writer(tmp_path, imgs, n, f"tab{i}") for i in range(2)]
    reported = [p.communicate(timeout=120)[0].split()[1:] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    with Store(tmp_path) as store:
        events = store.rating_history(sid)
        assert len(events) == 2 * n
        assert {e["client"] for e in events} == {"tab0", "tab1"}
        assert sorted(int(x) for r in reported for x in r) == sorted(e["id"] for e in events)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs kill -9")
def test_kill_9_loses_no_reported_rating(tmp_path):
    with Store(tmp_path) as store:
        sid, arm, rnd, imgs = _populate(store, 6)
    proc = _writer(tmp_path, imgs, 100_000, "victim")
    assert proc.stdout.readline().strip() == "ready"
    reported = [int(proc.stdout.readline()) for _ in range(200)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reported += [int(x) for x in proc.stdout.read().split()]  # lines flushed before the kill
    with Store(tmp_path) as store:
        stored = {e["id"] for e in store.rating_history(sid)}
    assert set(reported) <= stored
    assert len(stored) >= len(reported)


def test_undo_after_undo_and_rerating(tmp_path):
    with Store(tmp_path, clock=Clock()) as store:
        sid, arm, rnd, imgs = _populate(store)
        store.add_rating(imgs[0], "like")
        store.add_rating(imgs[0], "dislike")
        assert store.undo_last(sid) == [{"image_id": imgs[0], "value": "like", "rater": ""}]
        store.add_rating(imgs[0], "skip")
        assert store.undo_last(sid) == [{"image_id": imgs[0], "value": "like", "rater": ""}]
        assert store.get_image(imgs[0])["rating"] == "like"


def test_current_rating_table_always_equals_the_latest_event(tmp_path):
    import random

    rnd_gen = random.Random(0)
    with Store(tmp_path, clock=Clock()) as store:
        sid, arm, rnd, imgs = _populate(store, 8)
        for _ in range(120):
            op = rnd_gen.random()
            if op < 0.7:
                store.add_rating(
                    rnd_gen.choice(imgs), rnd_gen.choice(["like", "dislike", "skip"]), client=rnd_gen.choice(["a", "b"])
                )
            elif op < 0.9:
                store.undo_last(sid, rnd_gen.choice(["a", "b", None]))
            else:
                store.mark_rest(rnd["id"])
        for i in imgs:
            events = store.rating_events(i)
            expected = events[-1]["value"] if events else "pending"
            assert store.get_image(i)["rating"] == expected
        slow = store.conn.execute(
            "SELECT COUNT(*) FROM ratings r WHERE r.id = (SELECT MAX(id) FROM ratings WHERE image_id = r.image_id) "
            "AND r.value IN ('like', 'dislike')"
        ).fetchone()[0]
        assert len(store.current_ratings(sid)) == slow
