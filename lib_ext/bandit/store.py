"""Durable SQLite store of sessions, arms, rounds, images and rating events.

Guarantees, and how:
- Every rating is committed when made: each write is its own `BEGIN IMMEDIATE … COMMIT` in autocommit mode,
  `synchronous=FULL` in WAL mode, so a rating the caller saw returned survives kill -9 (and power loss).
- Two writers (two browser tabs, two processes): WAL + `busy_timeout` + `BEGIN IMMEDIATE` (the write lock is
  taken up front, so no deadlocking read→write upgrades); within a process a lock serialises the connection.
- History is never deleted: a rating, an undo, "mark the rest as bad" all append events. The current rating of
  an image for a rater is that rater's latest event ('pending' if they have none); each rater has their own, the
  unnamed rater '' included (every rating made before raters existed is theirs). Only like/dislike are
  observations for the model.
- A corrupt file raises `StoreCorruptError` naming it, after moving it (and its -wal/-shm) to a timestamped
  backup. Nothing is reset here: the caller decides to open a new, empty store. A backup stays *unacknowledged*
  until `acknowledge_backups` writes `<backup>.acknowledged` beside it: the fact lives in the data folder, not in
  memory, so a restart still knows (a backup without that file, e.g. from an older version, counts as unseen).
  The hosts' `ServiceProvider` refuses to serve a new, empty database while one is unacknowledged.
- A committed rating reaches the main file within `checkpoint_seconds` (default 2 s): a background thread runs a
  PASSIVE `wal_checkpoint` on its own connection after writes, so a damaged -wal file can lose at most the last
  seconds of ratings, and a rating never waits for the checkpoint (PASSIVE blocks no reader or writer).
- `PRAGMA user_version` holds the schema version; older files are migrated in one transaction, newer ones are
  refused (`StoreVersionError`) without being touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("promptscope")

DB_FILENAME = "seed_bandit.sqlite3"
ACK_SUFFIX = ".acknowledged"  # beside a moved-aside database: the user has seen that it was moved
_BACKUP_TAIL = re.compile(r"\.corrupt-\d{8}-\d{6}(-\d+)?")  # what `_quarantine` appends to the file name
# A committed rating is copied from the -wal into the main file at most this long (plus the checkpoint's own
# time) after its commit: what a damaged -wal can lose.
CHECKPOINT_SECONDS = 2.0
RATING_VALUES = ("like", "dislike", "skip")
_EVENT_VALUES = (*RATING_VALUES, "pending")  # 'pending' only comes from an undo back to "not rated"

# The generate-ahead queue (queue.py), one self-contained migration step: queues of N images, their planned jobs
# (claimed by one executor at a time; `image_id` is set in the same transaction that records the image, so a job
# has at most one image), and the session's worker WebUIs with their persisted counts.
_QUEUE_STEP: tuple[str, ...] = (
    """CREATE TABLE queues (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        total INTEGER NOT NULL,
        mode TEXT,
        shared_seeds INTEGER,
        use_local INTEGER NOT NULL DEFAULT 1,
        state TEXT NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'cancelled', 'done')),
        created REAL NOT NULL,
        finished REAL,
        owner TEXT,
        heartbeat REAL)""",
    "CREATE INDEX queues_session ON queues(session_id)",
    """CREATE TABLE queue_jobs (
        id INTEGER PRIMARY KEY,
        queue_id INTEGER NOT NULL REFERENCES queues(id),
        round_id INTEGER NOT NULL REFERENCES rounds(id),
        idx INTEGER NOT NULL,
        arm_id INTEGER NOT NULL REFERENCES arms(id),
        seed INTEGER NOT NULL,
        prompt TEXT NOT NULL,
        negative TEXT NOT NULL DEFAULT '',
        settings TEXT NOT NULL DEFAULT '{}',
        slot_choices TEXT NOT NULL DEFAULT '[]',
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'claimed', 'done', 'failed', 'cancelled')),
        claim TEXT,
        worker TEXT,
        claimed_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        image_id INTEGER UNIQUE REFERENCES images(id),
        finished REAL)""",
    "CREATE INDEX queue_jobs_state ON queue_jobs(queue_id, state, id)",
    """CREATE TABLE workers (
        id INTEGER PRIMARY KEY,
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        url TEXT NOT NULL,
        username TEXT,
        password TEXT,
        created REAL NOT NULL,
        removed INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_error_at REAL)""",
    "CREATE INDEX workers_session ON workers(session_id)",
)
QUEUE_JOB_STATES = ("pending", "claimed", "done", "failed", "cancelled")

# Schema history. Version 1 is the minimal schema; version 2 added arm versions (parent_id, updated) and the
# undo bookkeeping on rating events (undoes, batch, client); version 3 the current-rating table; version 4 the
# images' attachments; the raters' step (ratings.rater, rater_state) the current rating per (image, rater);
# then the generate-ahead queue (`_QUEUE_STEP`). Never edit a released step: append a new one.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            created REAL NOT NULL,
            settings TEXT NOT NULL DEFAULT '{}',
            options TEXT NOT NULL DEFAULT '{}')""",
        """CREATE TABLE arms (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            label TEXT NOT NULL DEFAULT '',
            prompt TEXT NOT NULL,
            negative TEXT NOT NULL DEFAULT '',
            settings TEXT NOT NULL DEFAULT '{}',
            is_template INTEGER NOT NULL DEFAULT 0,
            retired INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL)""",
        "CREATE INDEX arms_session ON arms(session_id)",
        """CREATE TABLE rounds (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            number INTEGER NOT NULL,
            mode TEXT NOT NULL,
            k INTEGER NOT NULL,
            shared_seeds INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            UNIQUE (session_id, number))""",
        """CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            arm_id INTEGER NOT NULL REFERENCES arms(id),
            round_id INTEGER REFERENCES rounds(id),
            seed INTEGER NOT NULL,
            prompt TEXT NOT NULL,
            negative TEXT NOT NULL DEFAULT '',
            slot_choices TEXT NOT NULL DEFAULT '[]',
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            created REAL NOT NULL)""",
        "CREATE INDEX images_session ON images(session_id, arm_id)",
        "CREATE INDEX images_round ON images(round_id)",
        """CREATE TABLE ratings (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id),
            value TEXT NOT NULL CHECK (value IN ('like', 'dislike', 'skip', 'pending')),
            created REAL NOT NULL)""",
    ),
    2: (
        "ALTER TABLE arms ADD COLUMN parent_id INTEGER REFERENCES arms(id)",
        "ALTER TABLE arms ADD COLUMN updated REAL",
        "UPDATE arms SET updated = created",
        "ALTER TABLE ratings ADD COLUMN undoes INTEGER REFERENCES ratings(id)",
        "ALTER TABLE ratings ADD COLUMN batch TEXT",
        "ALTER TABLE ratings ADD COLUMN client TEXT",
        "CREATE INDEX ratings_image ON ratings(image_id, id)",
        "CREATE INDEX ratings_undoes ON ratings(undoes)",
    ),
    3: (
        # The current rating of each image, kept equal to its latest event by a trigger (so no writer can forget
        # it); reads no longer scan events. Backfilled from the history.
        """CREATE TABLE image_state (
            image_id INTEGER PRIMARY KEY REFERENCES images(id),
            value TEXT NOT NULL,
            rated_at REAL NOT NULL,
            event_id INTEGER NOT NULL)""",
        """INSERT INTO image_state (image_id, value, rated_at, event_id)
           SELECT r.image_id, r.value, r.created, r.id FROM ratings r
           WHERE r.id = (SELECT MAX(r2.id) FROM ratings r2 WHERE r2.image_id = r.image_id)""",
        """CREATE TRIGGER ratings_current AFTER INSERT ON ratings BEGIN
             INSERT OR REPLACE INTO image_state (image_id, value, rated_at, event_id)
             VALUES (NEW.image_id, NEW.value, NEW.created, NEW.id);
           END""",
    ),
    4: (
        # Images the host attached to a generated one (word-heatmap grids): JSON [{"path", "caption"}, …].
        "ALTER TABLE images ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]'",
    ),
    # Raters (issue 14): every rating event names its rater ('' is the unnamed rater: every earlier rating is
    # theirs), and each (image, rater) has its own current rating, kept by a trigger like image_state (which stays
    # as it was: the image's latest event by anyone). Self-contained: it reads only tables of steps 1-4.
    5: (
        "ALTER TABLE ratings ADD COLUMN rater TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE rater_state (
            image_id INTEGER NOT NULL REFERENCES images(id),
            rater TEXT NOT NULL,
            value TEXT NOT NULL,
            rated_at REAL NOT NULL,
            event_id INTEGER NOT NULL,
            PRIMARY KEY (image_id, rater))""",
        """INSERT INTO rater_state (image_id, rater, value, rated_at, event_id)
           SELECT image_id, '', value, rated_at, event_id FROM image_state""",
        """CREATE TRIGGER ratings_rater_current AFTER INSERT ON ratings BEGIN
             INSERT OR REPLACE INTO rater_state (image_id, rater, value, rated_at, event_id)
             VALUES (NEW.image_id, NEW.rater, NEW.value, NEW.created, NEW.id);
           END""",
    ),
    6: _QUEUE_STEP,  # the generate-ahead queue and worker WebUIs (defined above)
}
SCHEMA_VERSION = max(MIGRATIONS)


class StoreError(Exception):
    """Base class of store failures that are not input errors."""


class StoreCorruptError(StoreError):
    def __init__(self, path: Path, backup: Path | None, detail: str):
        self.path, self.backup, self.detail = path, backup, detail
        where = f"it was moved to {backup}" if backup else "it could not be moved aside"
        super().__init__(
            f"The seed-bandit database {path} is corrupt ({detail}); {where}. "
            "Nothing was reset: acknowledge it to start a new, empty database (the Seed bandit tab's button, "
            "or POST /promptscope/v1/bandit/store/acknowledge), or restore a backup copy into that path."
        )


class StoreVersionError(StoreError):
    pass


class StoreQuarantinedError(StoreError):
    """A damaged database was moved aside and the user has not acknowledged it yet (see `acknowledge_backups`)."""

    def __init__(self, path: Path, backups: Sequence[Path], how_to_acknowledge: str):
        self.path, self.backups = path, list(backups)
        super().__init__(
            f"The seed-bandit database {path} was damaged and moved aside to {', '.join(map(str, self.backups))} "
            "(nothing was deleted: your earlier ratings are in that file). The seed bandit stays stopped until you "
            f"acknowledge this ({how_to_acknowledge}); then it starts a new, empty database. To recover instead, "
            f"stop the server and copy a backup back to {path}."
        )


class NotFoundError(ValueError):
    """An id that does not exist (a ValueError, so input validation catches it; HTTP maps it to 404)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def backups(folder: str | os.PathLike, filename: str = DB_FILENAME) -> list[Path]:
    """The moved-aside copies of the database in `folder` (not their -wal/-shm or markers), oldest first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [Path(folder) / n for n in sorted(names)
            if n.startswith(filename) and _BACKUP_TAIL.fullmatch(n[len(filename):])]  # fmt: skip


def unacknowledged_backups(folder: str | os.PathLike, filename: str = DB_FILENAME) -> list[Path]:
    return [b for b in backups(folder, filename) if not Path(str(b) + ACK_SUFFIX).exists()]


def acknowledge_backups(folder: str | os.PathLike, filename: str = DB_FILENAME) -> list[Path]:
    """Mark every unacknowledged backup as seen (a file `<backup>.acknowledged`, synced); returns those marked.
    The backups themselves stay: deleting them is the user's decision."""
    done = []
    for backup in unacknowledged_backups(folder, filename):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        try:
            with open(str(backup) + ACK_SUFFIX, "w", encoding="utf-8") as f:
                f.write(f"{when} UTC: the user acknowledged that the damaged seed-bandit database was moved to "
                        f"{backup.name}; a new database was started.\n")  # fmt: skip
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise StoreError(
                f"cannot record the acknowledgement beside {backup} ({exc}); make the data folder writable"
            ) from None
        done.append(backup)
    if done:
        log.warning("PromptScope: acknowledged the moved-aside seed-bandit database(s) %s; a new database starts "
                    "in %s", ", ".join(map(str, done)), folder)  # fmt: skip
    return done


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    msg = str(exc).lower()
    return any(s in msg for s in ("malformed", "not a database", "file is encrypted"))


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema from its `user_version` up to `target` in one transaction; returns the old version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise StoreVersionError(
                f"database schema version {current} is newer than this PromptScope supports ({SCHEMA_VERSION}); "
                "update PromptScope (the file was not modified)"
            )
        for version in range(current + 1, target + 1):
            for stmt in MIGRATIONS[version]:
                conn.execute(stmt)
        if target > current:
            conn.execute(f"PRAGMA user_version = {int(target)}")
        conn.execute("COMMIT")
        return current
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _row(cur: sqlite3.Cursor, row: tuple) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cur.description, row)}


class _Checkpointer:
    """A thread that copies committed WAL frames into the main file `interval` s after a write (`notify`).

    PASSIVE on its own connection: it never takes the store's lock and blocks no reader or writer, so a rating never
    waits for it. Frames a reader still needs stay (busy): it tries again an interval later. `close` stops and
    joins the thread and closes its connection."""

    def __init__(self, path: Path, interval: float, busy_timeout_ms: int):
        self.path, self.interval, self._timeout = path, interval, busy_timeout_ms / 1000
        self.runs = 0  # checkpoints run (tests and benches read it)
        self.last: tuple[int, int, int] | None = None  # (busy, WAL frames, frames checkpointed) of the last run
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"promptscope-checkpoint-{path.name}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while self._wake.wait() and not self._stop.is_set():
                if self._stop.wait(self.interval):  # a burst of ratings shares one checkpoint
                    break
                self._wake.clear()  # writes from here on wake the next round; this one includes them anyway
                if self._stop.is_set():  # close() may have set both just before the clear: its wake is gone
                    break
                try:
                    conn = conn or self._connect()
                    self.last = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                except sqlite3.Error as exc:  # the store's own reads and writes report a damaged file
                    log.warning("PromptScope: seed-bandit WAL checkpoint of %s failed: %s", self.path, exc)
                    self.last = None
                if self.last is None or self.last[0] or self.last[2] < self.last[1]:
                    self._wake.set()  # not all copied (a reader held old frames, or it failed): again later
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: never create a file where the database was (another process may have moved it aside)
        uri = self.path.resolve().as_uri() + "?mode=rw"
        return sqlite3.connect(uri, uri=True, timeout=self._timeout, check_same_thread=False)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()


_JOB_SELECT = "SELECT j.*, r.number AS round_number, r.session_id FROM queue_jobs j JOIN rounds r ON r.id = j.round_id"
# The current rating of an image for one rater (bound as the first parameter): 'pending' if they have none.
_STATE_JOIN = "LEFT JOIN rater_state s ON s.image_id = i.id AND s.rater = ?"
_CURRENT = "COALESCE(s.value, 'pending')"


class Store:
    """One SQLite file in `folder`. Thread-safe; several processes may open the same folder."""

    def __init__(
        self,
        folder: str | os.PathLike,
        filename: str = DB_FILENAME,
        clock: Callable[[], float] = time.time,
        busy_timeout_ms: int = 10_000,
        synchronous: str = "FULL",
        checkpoint_seconds: float | None = CHECKPOINT_SECONDS,
    ):
        """`checkpoint_seconds`: how soon after a write its WAL frames are copied into the main file (None: only
        SQLite's own checkpoint every 1000 pages and at the last close)."""
        if synchronous not in ("FULL", "EXTRA", "NORMAL"):
            # NORMAL (WAL): a commit survives kill -9 but not power loss; FULL/EXTRA survive both (≈5 ms fsync).
            raise ValueError(f"synchronous must be FULL, EXTRA or NORMAL, got {synchronous!r}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / filename
        self.clock = clock
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._identity: tuple[int, int] | None = None
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
            self._conn = conn
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if existed:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:  # before any PRAGMA that writes (journal_mode) touches the file
                    raise StoreVersionError(
                        f"{self.path} has schema version {version}, newer than this PromptScope supports "
                        f"({SCHEMA_VERSION}); update PromptScope (the file was not modified)"
                    )
                check = conn.execute("PRAGMA quick_check").fetchall()
                if check != [("ok",)]:
                    raise sqlite3.DatabaseError(
                        "database disk image is malformed: " + "; ".join(r[0] for r in check[:3])
                    )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn)
            self._identity = self._file_identity()
            if checkpoint_seconds is not None:
                self._checkpointer = _Checkpointer(self.path, float(checkpoint_seconds), busy_timeout_ms)
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                self.close()
                raise
            self._quarantine(str(exc))
        except BaseException:
            self.close()
            raise

    # ---- plumbing -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the checkpoint thread, then close (the last connection to close copies the rest of the WAL)."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._conn is None

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def moved_away(self) -> bool:
        """The file this store has open is no longer at its path (another process moved it aside)."""
        return self._identity is not None and self._file_identity() != self._identity

    def _quarantine(self, detail: str) -> None:
        """Close, move the bad file (and its WAL/SHM) to a timestamped backup, raise StoreCorruptError."""
        self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while backup.exists():
            backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        moved: Path | None = None
        try:
            os.replace(self.path, backup)
            moved = backup
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(backup) + suffix))
        except OSError:
            pass
        err = StoreCorruptError(self.path, moved, detail)
        log.error("PromptScope: %s", err)
        raise err

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self.conn
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    self._quarantine(str(exc))
                raise

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction; the write lock is taken at BEGIN (IMMEDIATE) so writers queue, not fail."""
        with self._lock:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                checkpointer = self._checkpointer
                if checkpointer is not None:
                    checkpointer.notify()
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    self._quarantine(str(exc))
                raise

    def _one(self, sql: str, args: Sequence[Any] = ()) -> dict[str, Any] | None:
        with self._read() as conn:
            cur = conn.execute(sql, args)
            row = cur.fetchone()
            return _row(cur, row) if row else None

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._read() as conn:
            cur = conn.execute(sql, args)
            return [_row(cur, r) for r in cur.fetchall()]

    def schema_version(self) -> int:
        with self._read() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    def journal_mode(self) -> str:
        with self._read() as conn:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]

    # ---- sessions ---------------------------------------------------------------------------------------------
    @staticmethod
    def _session_out(row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        row["settings"] = json.loads(row["settings"])
        row["options"] = json.loads(row["options"])
        return row

    def create_session(self, name: str, settings: dict | None = None, options: dict | None = None) -> int:
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO sessions (name, created, settings, options) VALUES (?, ?, ?, ?)",
                (name, self.clock(), json.dumps(settings or {}), json.dumps(options or {})),
            )
            return int(cur.lastrowid)

    def get_session(self, session_id: int) -> dict[str, Any]:
        row = self._session_out(self._one("SELECT * FROM sessions WHERE id = ?", (session_id,)))
        if row is None:
            raise NotFoundError(f"no session with id {session_id}")
        return row

    def list_sessions(self) -> list[dict[str, Any]]:
        rows = self._all(
            """SELECT s.*, (SELECT COUNT(*) FROM arms a WHERE a.session_id = s.id) AS n_arms,
                      (SELECT COUNT(*) FROM images i WHERE i.session_id = s.id) AS n_images
               FROM sessions s ORDER BY s.id"""
        )
        return [self._session_out(r) for r in rows]

    def update_session(
        self, session_id: int, name: str | None = None, settings: dict | None = None, options: dict | None = None
    ) -> None:
        self.get_session(session_id)
        with self._write() as conn:
            if name is not None:
                conn.execute("UPDATE sessions SET name = ? WHERE id = ?", (name, session_id))
            if settings is not None:
                conn.execute("UPDATE sessions SET settings = ? WHERE id = ?", (json.dumps(settings), session_id))
            if options is not None:
                conn.execute("UPDATE sessions SET options = ? WHERE id = ?", (json.dumps(options), session_id))

    # ---- arms -------------------------------------------------------------------------------------------------
    @staticmethod
    def _arm_out(row: dict[str, Any]) -> dict[str, Any]:
        row["settings"] = json.loads(row["settings"])
        row["is_template"] = bool(row["is_template"])
        row["retired"] = bool(row["retired"])
        return row

    def add_arm(
        self,
        session_id: int,
        prompt: str,
        negative: str = "",
        settings: dict | None = None,
        label: str = "",
        is_template: bool = False,
        parent_id: int | None = None,
        _conn: sqlite3.Connection | None = None,
    ) -> int:
        self.get_session(session_id)
        now = self.clock()
        args = (session_id, label, prompt, negative, json.dumps(settings or {}), int(is_template), now, now, parent_id)
        sql = """INSERT INTO arms (session_id, label, prompt, negative, settings, is_template, created, updated,
                                   parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"""
        if _conn is not None:
            return int(_conn.execute(sql, args).lastrowid)
        with self._write() as conn:
            return int(conn.execute(sql, args).lastrowid)

    def get_arm(self, arm_id: int) -> dict[str, Any]:
        row = self._one("SELECT * FROM arms WHERE id = ?", (arm_id,))
        if row is None:
            raise NotFoundError(f"no arm with id {arm_id}")
        return self._arm_out(row)

    def list_arms(self, session_id: int, include_retired: bool = True) -> list[dict[str, Any]]:
        self.get_session(session_id)
        sql = "SELECT * FROM arms WHERE session_id = ?" + ("" if include_retired else " AND retired = 0")
        return [self._arm_out(r) for r in self._all(sql + " ORDER BY id", (session_id,))]

    def set_arm_retired(self, arm_id: int, retired: bool) -> None:
        self.get_arm(arm_id)
        with self._write() as conn:
            conn.execute("UPDATE arms SET retired = ?, updated = ? WHERE id = ?", (int(retired), self.clock(), arm_id))

    def set_arm_label(self, arm_id: int, label: str) -> None:
        self.get_arm(arm_id)
        with self._write() as conn:
            conn.execute("UPDATE arms SET label = ?, updated = ? WHERE id = ?", (label, self.clock(), arm_id))

    def replace_arm(
        self, arm_id: int, prompt: str, negative: str, settings: dict, label: str, is_template: bool
    ) -> int:
        """A new version of an arm (its images keep pointing at the version that made them): the old one is
        retired and the new one records it as its parent, in one transaction. The new version of a retired arm
        stays retired (editing is not restoring)."""
        old = self.get_arm(arm_id)
        with self._write() as conn:
            conn.execute("UPDATE arms SET retired = 1, updated = ? WHERE id = ?", (self.clock(), arm_id))
            new_id = self.add_arm(old["session_id"], prompt, negative, settings, label, is_template, arm_id, conn)
            if old["retired"]:
                conn.execute("UPDATE arms SET retired = 1 WHERE id = ?", (new_id,))
            return new_id

    # ---- rounds and images ------------------------------------------------------------------------------------
    def create_round(self, session_id: int, mode: str, k: int, shared_seeds: bool) -> dict[str, Any]:
        self.get_session(session_id)
        with self._write() as conn:
            number = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM rounds WHERE session_id = ?", (session_id,)
            ).fetchone()[0]
            cur = conn.execute(
                "INSERT INTO rounds (session_id, number, mode, k, shared_seeds, created) VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, number, mode, k, int(shared_seeds), self.clock()),
            )
            return {
                "id": int(cur.lastrowid),
                "session_id": session_id,
                "number": int(number),
                "mode": mode,
                "k": k,
                "shared_seeds": bool(shared_seeds),
            }

    def get_round(self, round_id: int) -> dict[str, Any]:
        row = self._one("SELECT * FROM rounds WHERE id = ?", (round_id,))
        if row is None:
            raise NotFoundError(f"no round with id {round_id}")
        row["shared_seeds"] = bool(row["shared_seeds"])
        return row

    def list_rounds(self, session_id: int) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM rounds WHERE session_id = ? ORDER BY number", (session_id,))

    def add_image(
        self,
        session_id: int,
        arm_id: int,
        round_id: int | None,
        seed: int,
        prompt: str,
        negative: str,
        slot_choices: Sequence[int],
        path: str,
        sha256: str,
        attachments: Sequence[dict[str, str]] = (),
        _conn: sqlite3.Connection | None = None,
    ) -> int:
        """`attachments`: [{"path", "caption"}, …] of images the host attached to this one (heatmap grids).
        `_conn`: inside a caller's transaction (the queue records an image and completes its job together)."""
        with contextlib.nullcontext(_conn) if _conn is not None else self._write() as conn:
            cur = conn.execute(
                """INSERT INTO images (session_id, arm_id, round_id, seed, prompt, negative, slot_choices, path,
                                       sha256, created, attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    session_id,
                    arm_id,
                    round_id,
                    int(seed),
                    prompt,
                    negative,
                    json.dumps(list(slot_choices)),
                    path,
                    sha256,
                    self.clock(),
                    json.dumps([{"path": str(a["path"]), "caption": str(a.get("caption", ""))} for a in attachments]),
                ),
            )
            return int(cur.lastrowid)

    @staticmethod
    def _image_out(row: dict[str, Any]) -> dict[str, Any]:
        row["slot_choices"] = json.loads(row["slot_choices"])
        row["attachments"] = json.loads(row.get("attachments") or "[]")
        return row

    _IMAGE_SELECT = f"""SELECT i.*, ro.number AS round_number, {_CURRENT} AS rating, s.rated_at AS rated_at
                        FROM images i LEFT JOIN rounds ro ON ro.id = i.round_id {_STATE_JOIN}"""

    def _with_raters(self, rows: list[dict[str, Any]], where: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        """Adds `ratings` {rater: like|dislike|skip} (every rater's current rating, pending ones left out) to
        image rows selected by `where` (on images i) with `args`."""
        by_image: dict[int, dict[str, str]] = {}
        for r in self._all(
            f"""SELECT s.image_id, s.rater, s.value FROM rater_state s JOIN images i ON i.id = s.image_id
                WHERE {where} AND s.value != 'pending' ORDER BY s.image_id, s.rater""",
            args,
        ):
            by_image.setdefault(r["image_id"], {})[r["rater"]] = r["value"]
        for row in rows:
            row["ratings"] = by_image.get(row["id"], {})
        return rows

    def get_image(self, image_id: int, rater: str = "") -> dict[str, Any]:
        """One image; `rating` is `rater`'s current rating, `ratings` every rater's."""
        row = self._one(self._IMAGE_SELECT + " WHERE i.id = ?", (rater, image_id))
        if row is None:
            raise NotFoundError(f"no image with id {image_id}")
        return self._with_raters([self._image_out(row)], "i.id = ?", (image_id,))[0]

    def list_images(
        self,
        session_id: int,
        arm_id: int | None = None,
        round_id: int | None = None,
        rating: str | None = None,
        rater: str = "",
    ) -> list[dict[str, Any]]:
        """Images in id order; `rating` is `rater`'s current rating ('pending' if none), `ratings` every rater's
        {rater: value}. The filter `rating` is on `rater`'s rating, except "disagree": images one rater liked and
        another disliked."""
        where, args = "i.session_id = ?", [session_id]
        if arm_id is not None:
            where += " AND i.arm_id = ?"
            args.append(arm_id)
        if round_id is not None:
            where += " AND i.round_id = ?"
            args.append(round_id)
        sql = self._IMAGE_SELECT + " WHERE " + where
        if rating is not None and rating != "disagree":
            sql += f" AND {_CURRENT} = ?"
        full = [rater, *args] + ([rating] if rating is not None and rating != "disagree" else [])
        rows = [self._image_out(r) for r in self._all(sql + " ORDER BY i.id", full)]
        rows = self._with_raters(rows, where, args)
        if rating == "disagree":
            rows = [r for r in rows if {"like", "dislike"} <= set(r["ratings"].values())]
        return rows

    def pending_by_arm(self, session_id: int, rater: str = "") -> dict[int, tuple[int, int]]:
        """Per arm with images `rater` has not rated: (its newest pending image id, how many are pending)."""
        rows = self._all(
            f"""SELECT i.arm_id, MAX(i.id) AS newest, COUNT(*) AS n FROM images i {_STATE_JOIN}
                WHERE i.session_id = ? AND {_CURRENT} = 'pending' GROUP BY i.arm_id""",
            (rater, session_id),
        )
        return {r["arm_id"]: (r["newest"], r["n"]) for r in rows}

    def pending_images(self, session_id: int, rater: str = "") -> list[tuple[int, int, int | None]]:
        """(id, arm id, round id) of every image `rater` has not rated, in id order: one indexed scan, a few ms
        for thousands (the rating view plans its next images from it)."""
        with self._read() as conn:  # tuples, not a dict per row: a backlog has thousands
            rows = conn.execute(
                f"""SELECT i.id, i.arm_id, i.round_id FROM images i {_STATE_JOIN}
                    WHERE i.session_id = ? AND {_CURRENT} = 'pending' ORDER BY i.id""",
                (rater, session_id),
            ).fetchall()
        return [(int(r[0]), int(r[1]), None if r[2] is None else int(r[2])) for r in rows]

    def image_counts(self, session_id: int) -> dict[int, int]:
        """Images generated per arm (rated or not)."""
        rows = self._all("SELECT arm_id, COUNT(*) AS n FROM images WHERE session_id = ? GROUP BY arm_id", (session_id,))
        return {r["arm_id"]: r["n"] for r in rows}

    def verify_image(self, image_id: int) -> str:
        """'ok', 'missing' (no file at the stored path) or 'changed' (the file's SHA-256 differs)."""
        img = self.get_image(image_id)
        if not os.path.isfile(img["path"]):
            return "missing"
        return "ok" if sha256_file(img["path"]) == img["sha256"] else "changed"

    def relink_image(self, image_id: int, new_path: str) -> None:
        """Point an image at a moved file, after checking it is the same file (by hash)."""
        img = self.get_image(image_id)
        if sha256_file(new_path) != img["sha256"]:
            raise ValueError(f"{new_path} is not image {image_id}: its SHA-256 differs")
        with self._write() as conn:
            conn.execute("UPDATE images SET path = ? WHERE id = ?", (str(new_path), image_id))

    # ---- ratings ----------------------------------------------------------------------------------------------
    def add_rating(
        self, image_id: int, value: str, client: str | None = None, batch: str | None = None, rater: str = ""
    ) -> int:
        """Append one rating event of `rater` ('' the unnamed rater) and commit it before returning its id.

        A repeat of the rater's latest event on this image (same value, same client id, not undone) adds nothing and
        returns that event's id: a client retrying a request whose answer was lost (the rating view's outbox) must
        not leave two events, or one undo would seem to do nothing."""
        if value not in RATING_VALUES:
            raise ValueError(f"rating must be one of {RATING_VALUES}, got {value!r}")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is None:
                raise NotFoundError(f"no image with id {image_id}")
            last = conn.execute(
                "SELECT r.id, r.value, r.client, r.undoes, r.batch, "
                "EXISTS (SELECT 1 FROM ratings u WHERE u.undoes = r.id) FROM ratings r "
                "WHERE r.image_id = ? AND r.rater = ? ORDER BY r.id DESC LIMIT 1",
                (image_id, rater),
            ).fetchone()
            if (
                client is not None
                and last is not None
                and (last[1], last[2]) == (value, client)
                and last[3] is None
                and last[4] is None
                and not last[5]
            ):
                return int(last[0])
            cur = conn.execute(
                "INSERT INTO ratings (image_id, value, created, batch, client, rater) VALUES (?, ?, ?, ?, ?, ?)",
                (image_id, value, self.clock(), batch, client, rater),
            )
            return int(cur.lastrowid)

    def mark_rest(self, round_id: int, value: str = "dislike", client: str | None = None, rater: str = "") -> list[int]:
        """Rate every image of a round still pending for `rater` (one batch, undone together); returns their ids."""
        if value not in RATING_VALUES:
            raise ValueError(f"rating must be one of {RATING_VALUES}, got {value!r}")
        self.get_round(round_id)
        batch = uuid.uuid4().hex
        with self._write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    f"SELECT i.id FROM images i {_STATE_JOIN} WHERE i.round_id = ? AND {_CURRENT} = 'pending' "
                    "ORDER BY i.id",
                    (rater, round_id),
                )
            ]
            now = self.clock()
            conn.executemany(
                "INSERT INTO ratings (image_id, value, created, batch, client, rater) VALUES (?, ?, ?, ?, ?, ?)",
                [(i, value, now, batch, client, rater) for i in ids],
            )
            return ids

    def undo_last(self, session_id: int, client: str | None = None, rater: str | None = None) -> list[dict[str, Any]]:
        """Undo the latest not-yet-undone rating action in a session (of `client` and of `rater`, if given).

        Appends one event per image restoring what was current for the undone event's rater before it. If that
        rater rated the image again since, their current value stays (the undo event repeats it), so an undo never
        erases a later rating; other raters' ratings are never touched. A "mark the rest" batch is undone as a
        whole. Returns [{image_id, value, rater}] written.
        """
        with self._write() as conn:
            sql = """SELECT r.id, r.batch FROM ratings r JOIN images i ON i.id = r.image_id
                     WHERE i.session_id = ? AND r.undoes IS NULL
                       AND NOT EXISTS (SELECT 1 FROM ratings u WHERE u.undoes = r.id)"""
            args: list[Any] = [session_id]
            if client is not None:
                sql += " AND r.client = ?"
                args.append(client)
            if rater is not None:
                sql += " AND r.rater = ?"
                args.append(rater)
            last = conn.execute(sql + " ORDER BY r.id DESC LIMIT 1", args).fetchone()
            if last is None:
                return []
            if last[1] is not None:
                targets = conn.execute(
                    """SELECT id, image_id, rater FROM ratings r WHERE batch = ? AND undoes IS NULL
                       AND NOT EXISTS (SELECT 1 FROM ratings u WHERE u.undoes = r.id) ORDER BY id""",
                    (last[1],),
                ).fetchall()
            else:
                targets = conn.execute("SELECT id, image_id, rater FROM ratings WHERE id = ?", (last[0],)).fetchall()
            batch = uuid.uuid4().hex if len(targets) > 1 else None
            now = self.clock()
            out = []
            for event_id, image_id, who in targets:
                # The rater's effective history of the image: their rating events that are not undos, not undone.
                effective = conn.execute(
                    """SELECT id, value FROM ratings r WHERE image_id = ? AND rater = ? AND undoes IS NULL
                       AND NOT EXISTS (SELECT 1 FROM ratings u WHERE u.undoes = r.id) ORDER BY id DESC LIMIT 2""",
                    (image_id, who),
                ).fetchall()
                if effective[0][0] == event_id:
                    value = effective[1][1] if len(effective) > 1 else "pending"
                else:  # rated again since (e.g. in another browser tab): keep that rating
                    value = conn.execute(
                        "SELECT value FROM ratings WHERE image_id = ? AND rater = ? ORDER BY id DESC LIMIT 1",
                        (image_id, who),
                    ).fetchone()[0]
                conn.execute(
                    """INSERT INTO ratings (image_id, value, created, undoes, batch, client, rater)
                       VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    (image_id, value, now, event_id, batch, client, who),
                )
                out.append({"image_id": image_id, "value": value, "rater": who})
            return out

    def rating_tallies(self, session_id: int, rater: str | None = "") -> dict[int, dict[str, int]]:
        """Per arm, how many images are currently like / dislike / skip / pending for `rater`. `rater=None`
        (pooled): like / dislike / skip count every rater's ratings (an image two raters liked counts twice) and
        pending the images nobody has rated."""
        out: dict[int, dict[str, int]] = {}

        def add(arm_id: int, rating: str, n: int) -> None:
            out.setdefault(arm_id, dict.fromkeys((*RATING_VALUES, "pending"), 0))[rating] += n

        if rater is not None:
            rows = self._all(
                f"""SELECT i.arm_id, {_CURRENT} AS rating, COUNT(*) AS n FROM images i {_STATE_JOIN}
                    WHERE i.session_id = ? GROUP BY i.arm_id, rating""",
                (rater, session_id),
            )
            for r in rows:
                add(r["arm_id"], r["rating"], r["n"])
            return out
        for r in self._all(
            """SELECT i.arm_id, s.value AS rating, COUNT(*) AS n FROM images i JOIN rater_state s ON s.image_id = i.id
               WHERE i.session_id = ? AND s.value != 'pending' GROUP BY i.arm_id, s.value""",
            (session_id,),
        ):
            add(r["arm_id"], r["rating"], r["n"])
        for r in self._all(
            """SELECT i.arm_id, COUNT(*) AS n FROM images i WHERE i.session_id = ? AND NOT EXISTS
               (SELECT 1 FROM rater_state s WHERE s.image_id = i.id AND s.value != 'pending') GROUP BY i.arm_id""",
            (session_id,),
        ):
            add(r["arm_id"], "pending", r["n"])
        for r in self._all("SELECT DISTINCT arm_id FROM images WHERE session_id = ?", (session_id,)):
            add(r["arm_id"], "pending", 0)
        return out

    def rating_events(self, image_id: int) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM ratings WHERE image_id = ? ORDER BY id", (image_id,))

    def current_ratings(self, session_id: int, rater: str | None = None) -> list[dict[str, Any]]:
        """The model's observations: every current like or dislike in the session, one row per (image, rater) —
        all raters' (`rater=None`, pooled) or one rater's. Rows: image_id, rater, arm_id, round_id, slot_choices,
        rating, rated_at; in image order."""
        sql = """SELECT i.id AS image_id, s.rater, i.arm_id, i.round_id, i.slot_choices, s.value AS rating, s.rated_at
                 FROM images i JOIN rater_state s ON s.image_id = i.id
                 WHERE i.session_id = ? AND s.value IN ('like', 'dislike')"""
        args: list[Any] = [session_id]
        if rater is not None:
            sql += " AND s.rater = ?"
            args.append(rater)
        rows = self._all(sql + " ORDER BY i.id, s.rater", args)
        for r in rows:
            r["slot_choices"] = [] if r["slot_choices"] == "[]" else json.loads(r["slot_choices"])
        return rows

    def raters(self, session_id: int) -> list[dict[str, Any]]:
        """The raters who have rated in a session (their current ratings): [{rater, like, dislike, skip}],
        by name ('' — the unnamed rater — first)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self._all(
            """SELECT s.rater, s.value, COUNT(*) AS n FROM rater_state s JOIN images i ON i.id = s.image_id
               WHERE i.session_id = ? AND s.value != 'pending' GROUP BY s.rater, s.value""",
            (session_id,),
        ):
            out.setdefault(r["rater"], {"rater": r["rater"], **dict.fromkeys(RATING_VALUES, 0)})[r["value"]] = r["n"]
        return [out[k] for k in sorted(out)]

    def rating_history(self, session_id: int) -> list[dict[str, Any]]:
        """All rating events of a session in order, with the image's arm (for history plots)."""
        return self._all(
            """SELECT r.id, r.image_id, i.arm_id, r.value, r.created, r.undoes, r.batch, r.client, r.rater
               FROM ratings r JOIN images i ON i.id = r.image_id WHERE i.session_id = ? ORDER BY r.id""",
            (session_id,),
        )

    # ---- generate-ahead queue (queue.py) -----------------------------------------------------------------------
    # A job is 'pending' → 'claimed' (one executor, a random claim token) → 'done' (its image recorded in the same
    # transaction) | back to 'pending' (the executor failed; 'failed' after too many attempts) | 'cancelled'.
    # A queue is run by one owner at a time (a process; `take_queue`), which keeps `heartbeat` fresh.
    @staticmethod
    def _queue_job_out(row: dict[str, Any]) -> dict[str, Any]:
        row["settings"] = json.loads(row["settings"])
        row["slot_choices"] = json.loads(row["slot_choices"])
        return row

    def create_queue(
        self, session_id: int, total: int, mode: str | None, shared_seeds: bool | None, use_local: bool
    ) -> int:
        self.get_session(session_id)
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO queues (session_id, total, mode, shared_seeds, use_local, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, int(total), mode, None if shared_seeds is None else int(shared_seeds), int(use_local),
                 self.clock()),
            )  # fmt: skip
            return int(cur.lastrowid)

    def get_queue(self, queue_id: int) -> dict[str, Any]:
        """The queue with its jobs counted by state (`planned`: all its jobs)."""
        row = self._one("SELECT * FROM queues WHERE id = ?", (queue_id,))
        if row is None:
            raise NotFoundError(f"no queue with id {queue_id}")
        counts = dict.fromkeys(QUEUE_JOB_STATES, 0)
        sql = "SELECT state, COUNT(*) AS n FROM queue_jobs WHERE queue_id = ? GROUP BY state"
        for r in self._all(sql, (queue_id,)):
            counts[r["state"]] = r["n"]
        row["counts"] = counts
        row["planned"] = sum(counts.values())
        row["use_local"] = bool(row["use_local"])
        row["shared_seeds"] = None if row["shared_seeds"] is None else bool(row["shared_seeds"])
        return row

    def list_queues(self, session_id: int | None = None, state: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT id FROM queues WHERE 1 = 1", []
        if session_id is not None:
            sql, args = sql + " AND session_id = ?", [*args, session_id]
        if state is not None:
            sql, args = sql + " AND state = ?", [*args, state]
        return [self.get_queue(r["id"]) for r in self._all(sql + " ORDER BY id", args)]

    def add_queue_batch(
        self, queue_id: int, mode: str, shared_seeds: bool, jobs: Sequence[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """A new round holding `jobs` ({arm_id, seed, prompt, negative, settings, slot_choices}) of a running
        queue, all in one transaction; None (nothing written) if the queue is no longer running or would exceed
        its total. Returns the round."""
        with self._write() as conn:
            q = conn.execute("SELECT session_id, total, state FROM queues WHERE id = ?", (queue_id,)).fetchone()
            if q is None:
                raise NotFoundError(f"no queue with id {queue_id}")
            planned = conn.execute("SELECT COUNT(*) FROM queue_jobs WHERE queue_id = ?", (queue_id,)).fetchone()[0]
            if q[2] != "running" or not jobs or planned + len(jobs) > q[1]:
                return None
            number = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM rounds WHERE session_id = ?", (q[0],)
            ).fetchone()[0]
            round_id = conn.execute(
                "INSERT INTO rounds (session_id, number, mode, k, shared_seeds, created) VALUES (?, ?, ?, ?, ?, ?)",
                (q[0], number, mode, len(jobs), int(shared_seeds), self.clock()),
            ).lastrowid
            conn.executemany(
                """INSERT INTO queue_jobs (queue_id, round_id, idx, arm_id, seed, prompt, negative, settings,
                                           slot_choices) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [(queue_id, round_id, i, j["arm_id"], int(j["seed"]), j["prompt"], j["negative"],
                  json.dumps(j["settings"]), json.dumps(list(j["slot_choices"]))) for i, j in enumerate(jobs)],
            )  # fmt: skip
            return {"id": int(round_id), "session_id": q[0], "number": int(number), "mode": mode, "k": len(jobs),
                    "shared_seeds": bool(shared_seeds)}  # fmt: skip

    def get_queue_job(self, job_id: int) -> dict[str, Any]:
        row = self._one(_JOB_SELECT + " WHERE j.id = ?", (job_id,))
        if row is None:
            raise NotFoundError(f"no queue job with id {job_id}")
        return self._queue_job_out(row)

    def list_queue_jobs(self, queue_id: int, state: str | None = None) -> list[dict[str, Any]]:
        sql = _JOB_SELECT + " WHERE j.queue_id = ?"
        args: list[Any] = [queue_id]
        if state is not None:
            sql, args = sql + " AND j.state = ?", [*args, state]
        return [self._queue_job_out(r) for r in self._all(sql + " ORDER BY j.id", args)]

    def claim_queue_job(self, queue_id: int, claim: str, worker: str) -> dict[str, Any] | None:
        """Claim the oldest pending job of a running queue for `worker` (committed); None if there is none."""
        with self._write() as conn:
            state = conn.execute("SELECT state FROM queues WHERE id = ?", (queue_id,)).fetchone()
            if state is None or state[0] != "running":
                return None
            row = conn.execute(
                "SELECT id FROM queue_jobs WHERE queue_id = ? AND state = 'pending' ORDER BY id LIMIT 1", (queue_id,)
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                """UPDATE queue_jobs SET state = 'claimed', claim = ?, worker = ?, claimed_at = ?,
                   attempts = attempts + 1 WHERE id = ?""",
                (claim, worker, self.clock(), row[0]),
            )
        return self.get_queue_job(row[0])

    def release_queue_job(
        self, job_id: int, claim: str, error: str, max_attempts: int, count: bool = True
    ) -> str | None:
        """Give a claimed job back after its executor failed: 'pending' again, or 'failed' (with the error) once it
        has had `max_attempts`. `count=False`: the failure was not the job's (a worker down, a shutdown), so this
        attempt does not count. Returns the new state; None if the claim is not (or no longer) this one."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT attempts FROM queue_jobs WHERE id = ? AND state = 'claimed' AND claim = ?", (job_id, claim)
            ).fetchone()
            if row is None:
                return None
            attempts = row[0] if count else row[0] - 1
            new = "failed" if attempts >= max_attempts else "pending"
            conn.execute(
                "UPDATE queue_jobs SET state = ?, claim = NULL, error = ?, attempts = ?, finished = ? WHERE id = ?",
                (new, error, attempts, self.clock() if new == "failed" else None, job_id),
            )
            return new

    def complete_queue_job(
        self,
        job_id: int,
        claim: str,
        path: str,
        sha256: str,
        attachments: Sequence[dict[str, str]] = (),
        worker_id: int | None = None,
    ) -> int | None:
        """Record a claimed job's image and mark the job done, in ONE transaction: a crash leaves either both or
        neither. Returns the image id; None (nothing written) if the job is not claimed with `claim`."""
        with self._write() as conn:
            job = conn.execute(
                """SELECT j.arm_id, j.round_id, j.seed, j.prompt, j.negative, j.slot_choices, r.session_id
                   FROM queue_jobs j JOIN rounds r ON r.id = j.round_id
                   WHERE j.id = ? AND j.state = 'claimed' AND j.claim = ?""",
                (job_id, claim),
            ).fetchone()
            if job is None:
                return None
            arm_id, round_id, seed, prompt, negative, slots, session_id = job
            image_id = self.add_image(session_id, arm_id, round_id, seed, prompt, negative, json.loads(slots), path,
                                      sha256, attachments, _conn=conn)  # fmt: skip
            conn.execute(
                "UPDATE queue_jobs SET state = 'done', image_id = ?, claim = NULL, finished = ? WHERE id = ?",
                (image_id, self.clock(), job_id),
            )
            if worker_id is not None:
                conn.execute("UPDATE workers SET done = done + 1 WHERE id = ?", (worker_id,))
            return image_id

    def take_queue(self, queue_id: int, owner: str, lease_seconds: float, owner_gone: Callable[[str], bool]) -> bool:
        """Become the queue's runner if it is running and unowned, owned by us, or its owner is gone (`owner_gone`)
        or silent for `lease_seconds`. Taking it from another owner gives that owner's claimed jobs back."""
        with self._write() as conn:
            row = conn.execute("SELECT state, owner, heartbeat FROM queues WHERE id = ?", (queue_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no queue with id {queue_id}")
            state, current, beat = row
            now = self.clock()
            if state != "running":
                return False
            free = current is None or current == owner or owner_gone(current) or (beat or 0) < now - lease_seconds
            if not free:
                return False
            if current != owner:
                conn.execute(
                    "UPDATE queue_jobs SET state = 'pending', claim = NULL WHERE queue_id = ? AND state = 'claimed'",
                    (queue_id,),
                )
            conn.execute("UPDATE queues SET owner = ?, heartbeat = ? WHERE id = ?", (owner, now, queue_id))
            return True

    def queue_heartbeat(self, queue_id: int, owner: str) -> bool:
        """Keep our ownership fresh; False if another owner took the queue (or it stopped running)."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE queues SET heartbeat = ? WHERE id = ? AND owner = ? AND state = 'running'",
                (self.clock(), queue_id, owner),
            )
            return cur.rowcount == 1

    def release_queue(self, queue_id: int, owner: str) -> None:
        """The owner stops running the queue (it stays 'running' for the next start): its claims go back."""
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM queues WHERE id = ? AND owner = ?", (queue_id, owner)).fetchone():
                conn.execute(
                    "UPDATE queue_jobs SET state = 'pending', claim = NULL WHERE queue_id = ? AND state = 'claimed'",
                    (queue_id,),
                )
                conn.execute("UPDATE queues SET owner = NULL, heartbeat = NULL WHERE id = ?", (queue_id,))

    def cancel_queue(self, queue_id: int) -> int:
        """Stop a queue: its pending jobs become 'cancelled' (claimed ones may still finish). Returns how many."""
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM queues WHERE id = ?", (queue_id,)).fetchone() is None:
                raise NotFoundError(f"no queue with id {queue_id}")
            n = conn.execute(
                "UPDATE queue_jobs SET state = 'cancelled', finished = ? WHERE queue_id = ? AND state = 'pending'",
                (self.clock(), queue_id),
            ).rowcount
            conn.execute(
                "UPDATE queues SET state = 'cancelled', finished = COALESCE(finished, ?) WHERE id = ? "
                "AND state = 'running'",
                (self.clock(), queue_id),
            )
            return n

    def finish_queue(self, queue_id: int) -> bool:
        """Mark a running queue 'done' if every job is planned and none is pending or claimed."""
        with self._write() as conn:
            cur = conn.execute(
                """UPDATE queues SET state = 'done', finished = ? WHERE id = ? AND state = 'running'
                   AND (SELECT COUNT(*) FROM queue_jobs WHERE queue_id = queues.id) >= total
                   AND NOT EXISTS (SELECT 1 FROM queue_jobs WHERE queue_id = queues.id
                                   AND state IN ('pending', 'claimed'))""",
                (self.clock(), queue_id),
            )
            return cur.rowcount == 1

    # ---- worker WebUIs ------------------------------------------------------------------------------------------
    def add_worker(self, session_id: int, url: str, username: str | None, password: str | None) -> int:
        self.get_session(session_id)
        with self._write() as conn:
            cur = conn.execute(
                "INSERT INTO workers (session_id, url, username, password, created) VALUES (?, ?, ?, ?, ?)",
                (session_id, url, username, password, self.clock()),
            )
            return int(cur.lastrowid)

    def get_worker(self, worker_id: int) -> dict[str, Any]:
        row = self._one("SELECT * FROM workers WHERE id = ?", (worker_id,))
        if row is None:
            raise NotFoundError(f"no worker with id {worker_id}")
        row["removed"] = bool(row["removed"])
        return row

    def list_workers(self, session_id: int, include_removed: bool = False) -> list[dict[str, Any]]:
        self.get_session(session_id)
        sql = "SELECT id FROM workers WHERE session_id = ?" + ("" if include_removed else " AND removed = 0")
        return [self.get_worker(r["id"]) for r in self._all(sql + " ORDER BY id", (session_id,))]

    def remove_worker(self, worker_id: int) -> None:
        self.get_worker(worker_id)
        with self._write() as conn:
            conn.execute("UPDATE workers SET removed = 1 WHERE id = ?", (worker_id,))

    def worker_error(self, worker_id: int, error: str) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE workers SET errors = errors + 1, last_error = ?, last_error_at = ? WHERE id = ?",
                (error[:2000], self.clock(), worker_id),
            )
