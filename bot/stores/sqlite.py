"""The embedded store: one SQLite file in WAL mode, one group-committing connection
(committing on the event loop; checkpoints and waits on a thread of its own, see `_writer`).

The file holds adapter secrets (webhook tokens) and everything people wrote, so it
is owner-only: the file and any directory the store creates for it are made 0600 /
0700 whatever the umask (SQLite gives its -wal and -shm files the file's mode), and
an existing file readable by others is tightened when the store opens it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from threadteam.bot.errors import ConflictError, PermanentStoreError
from threadteam.bot.stores._text import clean_args
from threadteam.bot.stores._workqueue import WorkQueue
from threadteam.bot.stores._writer import Op, Writer, error_class
from threadteam.bot.stores.base import RunInfo, Store, queued

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    thread     TEXT NOT NULL UNIQUE,
    length     INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    active     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_active ON runs (active) WHERE active = 1;
-- A rowid table: appends of many interleaved runs land at its end, and only the
-- small (run_id, seq) index is written out of order (5x faster than WITHOUT ROWID).
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    body   TEXT NOT NULL,
    UNIQUE (run_id, seq)
);
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
    event_id TEXT PRIMARY KEY, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS posts (
    key TEXT PRIMARY KEY, message_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deadlines (
    run_id TEXT PRIMARY KEY, at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deadlines_at ON deadlines (at);
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
-- Keyed external appends: a retried append_external with the same key appends nothing.
CREATE TABLE IF NOT EXISTS appended (
    run_id TEXT NOT NULL, key TEXT NOT NULL, length INTEGER NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
"""

# Expired de-duplication ids are swept once per this many first_sight calls.
_SWEEP_EVERY = 1000


class SQLiteStore(Store):
    """Run logs and keyed side effects in one SQLite file; a single process uses it."""

    def __init__(self, path: str, *, reclaim_after: float = 60.0,
                 busy_timeout: float = 5.0) -> None:
        self._path = path
        self._busy_ms = max(int(busy_timeout * 1000), 0)
        self._writer = Writer(self._connect, f"The SQLite store at {path!r}")
        self._reclaim_after = reclaim_after
        self._work: dict[str, WorkQueue] = {}
        self._last_update = 0.0
        self._sightings = 0

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    async def start(self) -> None:
        """Create the file's directory and the schema; StoreError if the file cannot be opened."""
        await self._writer.start()

    async def aclose(self) -> None:
        """Commit queued writes and close the file."""
        await self._writer.aclose()

    def _connect(self) -> sqlite3.Connection:
        # Runs on the writer thread; the writer hands the connection between that thread and
        # the event loop, never to two at once.
        in_memory = self._path in (":memory:", "")
        conn: sqlite3.Connection | None = None
        try:
            if not in_memory:
                _owner_only(Path(self._path).expanduser())
            conn = sqlite3.connect(
                self._path if in_memory else Path(self._path).expanduser(),
                isolation_level=None,  # transactions are the writer's, explicitly
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # In WAL, NORMAL survives process crashes; only power loss may drop the last commits.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute("PRAGMA cache_size=-16000")  # 16 MB: the index pages of busy runs stay hot
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            # A corrupt file, a path that is not a directory, no permission: permanent.
            # Locked by another process for longer than the busy timeout: transient.
            raise error_class(exc)(
                f"Could not open the SQLite store at {self._path!r}: {exc}. "
                "Check THREADTEAM_STORE and that the directory is writable."
            ) from exc
        return conn

    def _submit(self, fn: Op, *args: Any) -> asyncio.Future[Any]:
        # The store boundary: every string argument is made encodable (lone surrogates
        # become U+FFFD), so no text a person or a model wrote can fail a call.
        return self._writer.put(fn, *clean_args(args))

    def _now(self) -> float:
        # Strictly increasing so `runs()` has a stable order even within one clock tick.
        now = max(time.time(), self._last_update + 1e-6)
        self._last_update = now
        return now

    # -- run logs ---------------------------------------------------------
    async def create_run(self, run_id: str, thread: str, events: list[str]) -> bool:
        """Create a run for `thread` with its first events, active from birth (one
        transaction); False if the thread has a run."""
        return await self._submit(_create_run, run_id, thread, events, self._now())

    async def run_for_thread(self, thread: str) -> str | None:
        """The run id living in `thread`, if any."""
        return await self._submit(
            _one, "SELECT run_id FROM runs WHERE thread = ?", (thread,)
        )

    @queued
    def thread_of(self, run_id: str) -> asyncio.Future[str | None]:
        """The thread a run lives in."""
        return self._submit(_one, "SELECT thread FROM runs WHERE run_id = ?", (run_id,))

    @queued
    def load(self, run_id: str, start: int = 0) -> asyncio.Future[list[str]]:
        """The run's events from index `start` on."""
        return self._submit(_load, run_id, start)

    @queued
    def append(self, run_id: str, expected: int, events: list[str]) -> asyncio.Future[int]:
        """Append if the log has exactly `expected` events; return the new length."""
        return self._submit(_append, run_id, expected, events, self._now())

    async def append_external(self, run_id: str, events: list[str], *,
                              key: str | None = None) -> int:
        """Append at the end, whatever the length (one transaction); the new length."""
        return await self._submit(_append_external, run_id, events, key, self._now())

    async def runs(self, limit: int = 20) -> list[RunInfo]:
        """Most recently updated runs first."""
        if limit <= 0:  # LIMIT -1 would mean "all of them"
            return []
        # No index on updated_at: every append moves it, and keeping an index in step
        # cost ~30% of append throughput; a listing scans the (event-free) runs table.
        rows = await self._submit(_all, (
            "SELECT run_id, thread, length, updated_at FROM runs "
            "ORDER BY updated_at DESC LIMIT ?"
        ), (limit,))
        return [RunInfo(*row) for row in rows]

    # -- one driver per run ------------------------------------------------
    @queued
    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> asyncio.Future[bool]:
        """Take (or renew, if `owner` holds it) the run's lease for `ttl` seconds."""
        return self._submit(_acquire_lease, run_id, owner, ttl)

    @queued
    def release_lease(self, run_id: str, owner: str) -> asyncio.Future[None]:
        """Give the lease up if `owner` holds it."""
        return self._submit(
            _exec, "DELETE FROM leases WHERE run_id = ? AND owner = ?", (run_id, owner)
        )

    # -- runs that need driving --------------------------------------------
    @queued
    def set_active(self, run_id: str, active: bool) -> asyncio.Future[None]:
        """Mark a run as mid-turn or settled."""
        return self._submit(
            _exec, "UPDATE runs SET active = ? WHERE run_id = ?", (int(active), run_id)
        )

    async def active_runs(self) -> list[str]:
        """Runs marked active: the ones to resume after a crash."""
        rows = await self._submit(_all, "SELECT run_id FROM runs WHERE active = 1", ())
        return [row[0] for row in rows]

    @queued
    def set_deadline(self, run_id: str, at: float | None) -> asyncio.Future[None]:
        """Wake the run at `at` (its time limit, while it waits for a person); None: never."""
        if at is None:
            return self._submit(_exec, "DELETE FROM deadlines WHERE run_id = ?", (run_id,))
        return self._submit(
            _exec, "INSERT INTO deadlines (run_id, at) VALUES (?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET at = excluded.at", (run_id, at))

    async def due_runs(self, now: float, limit: int = 100, grace: float = 60.0) -> list[str]:
        """Runs whose deadline has passed, earliest first; each goes to one caller."""
        return await self._submit(_take_due, now, limit, grace)

    # -- keyed side effects -------------------------------------------------
    async def get_post(self, key: str) -> str | None:
        """The platform message id recorded for an idempotency key."""
        return await self._submit(
            _one, "SELECT message_id FROM posts WHERE key = ?", (key,)
        )

    @queued
    def put_post(self, key: str, message_id: str) -> asyncio.Future[None]:
        """Record that the post with this key succeeded as `message_id`."""
        return self._submit(
            _exec, "INSERT OR REPLACE INTO posts (key, message_id) VALUES (?, ?)",
            (key, message_id),
        )

    async def first_sight(self, event_id: str, ttl: float = 86400.0) -> bool:
        """True the first time an inbound event id is seen within `ttl`; False after."""
        self._sightings += 1
        sweep = self._sightings % _SWEEP_EVERY == 0
        return await self._submit(_first_sight, event_id, ttl, sweep)

    # -- small adapter state --------------------------------------------------
    async def kv_get(self, namespace: str, key: str) -> str | None:
        """A value an adapter stored."""
        return await self._submit(
            _one, "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
        )

    async def kv_set(self, namespace: str, key: str, value: str) -> None:
        """Store a small value for an adapter."""
        await self._submit(
            _exec, "INSERT OR REPLACE INTO kv (namespace, key, value) VALUES (?, ?, ?)",
            (namespace, key, value),
        )

    async def kv_delete(self, namespace: str, key: str) -> None:
        """Forget a value (nothing happens if there is none)."""
        await self._submit(_exec, "DELETE FROM kv WHERE namespace = ? AND key = ?",
                           (namespace, key))

    async def kv_items(self, namespace: str) -> dict[str, str]:
        """Every key and value of a namespace."""
        rows = await self._submit(_all, "SELECT key, value FROM kv WHERE namespace = ?",
                                  (namespace,))
        return {key: value for key, value in rows}

    # -- work queue -----------------------------------------------------------
    async def enqueue(self, run_id: str, queue: str = "") -> None:
        """Ask some worker (in this process) reading `queue` to drive `run_id`."""
        self._queue(queue).put(run_id)

    async def next_work(self, consumer: str, timeout: float, queue: str = ""
                        ) -> list[tuple[str, str]]:
        """Up to a few (receipt, run_id) pairs of `queue`; [] after `timeout` seconds."""
        return [(f"{queue}|{receipt}", run_id)
                for receipt, run_id in await self._queue(queue).take(timeout)]

    async def ack_work(self, receipt: str) -> None:
        """The work named by `receipt` is done."""
        queue, _, own = receipt.rpartition("|")
        self._queue(queue).ack(own)

    def _queue(self, name: str) -> WorkQueue:
        work = self._work.get(name)
        if work is None:
            work = self._work[name] = WorkQueue(self._reclaim_after)
        return work


# -- operations: run on the writer thread inside its transaction ---------------
def _one(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> str | None:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def _all(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> list[tuple]:
    return conn.execute(sql, params).fetchall()


def _exec(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> None:
    conn.execute(sql, params)


def _create_run(
    conn: sqlite3.Connection, run_id: str, thread: str, events: list[str], now: float
) -> bool:
    inserted = conn.execute(
        "INSERT INTO runs (run_id, thread, length, updated_at, active) VALUES (?, ?, ?, ?, 1) "
        "ON CONFLICT DO NOTHING",
        (run_id, thread, len(events), now),
    ).rowcount
    if not inserted:
        owner = _one(conn, "SELECT thread FROM runs WHERE run_id = ?", (run_id,))
        if owner not in (None, thread):
            raise PermanentStoreError(
                f"A run with id {run_id!r} already exists in another thread.")
        return False  # the thread has a run (perhaps this one: a retried create)
    _insert_events(conn, run_id, 0, events)
    return True


def _load(conn: sqlite3.Connection, run_id: str, start: int) -> list[str]:
    rows = conn.execute(
        "SELECT body FROM events WHERE run_id = ? AND seq >= ? ORDER BY seq",
        (run_id, max(start, 0)),
    ).fetchall()
    return [row[0] for row in rows]


def _append(
    conn: sqlite3.Connection, run_id: str, expected: int, events: list[str], now: float
) -> int:
    # The check and the length bump are one statement, so the happy path costs two.
    new_length = expected + len(events)
    updated = conn.execute(
        "UPDATE runs SET length = ?, updated_at = ? WHERE run_id = ? AND length = ?",
        (new_length, now, run_id, expected),
    ).rowcount
    if not updated:
        row = conn.execute("SELECT length FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise PermanentStoreError(f"No run {run_id!r} in the store; it cannot be appended to.")
        raise ConflictError(run_id, expected, row[0])
    _insert_events(conn, run_id, expected, events)
    return new_length


def _append_external(
    conn: sqlite3.Connection, run_id: str, events: list[str], key: str | None, now: float
) -> int:
    if key is not None:
        done = conn.execute("SELECT length FROM appended WHERE run_id = ? AND key = ?",
                            (run_id, key)).fetchall()
        if done:
            return int(done[0][0])
    rows = conn.execute(
        "UPDATE runs SET length = length + ?, updated_at = ? WHERE run_id = ? RETURNING length",
        (len(events), now, run_id),
    ).fetchall()
    if not rows:  # raised before anything is written, as the writer requires
        raise PermanentStoreError(f"No run {run_id!r} in the store; it cannot be appended to.")
    new_length = int(rows[0][0])
    if key is not None:
        conn.execute("INSERT INTO appended (run_id, key, length) VALUES (?, ?, ?)",
                     (run_id, key, new_length))
    if events:
        _insert_events(conn, run_id, new_length - len(events), events)
    return new_length


def _insert_events(conn: sqlite3.Connection, run_id: str, first: int, events: list[str]) -> None:
    sql = "INSERT INTO events (run_id, seq, body) VALUES (?, ?, ?)"
    if not events:
        return
    if len(events) == 1:  # the common case; execute is cheaper than executemany
        conn.execute(sql, (run_id, first, events[0]))
    else:
        conn.executemany(sql, [(run_id, first + i, body) for i, body in enumerate(events)])


def _take_due(conn: sqlite3.Connection, now: float, limit: int, grace: float) -> list[str]:
    rows = conn.execute("SELECT run_id FROM deadlines WHERE at <= ? ORDER BY at LIMIT ?",
                        (now, limit)).fetchall()
    conn.executemany("UPDATE deadlines SET at = ? WHERE run_id = ?",
                     [(now + grace, row[0]) for row in rows])
    return [row[0] for row in rows]


def _acquire_lease(conn: sqlite3.Connection, run_id: str, owner: str, ttl: float) -> bool:
    now = time.time()
    return bool(conn.execute(
        "INSERT INTO leases (run_id, owner, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, "
        "expires_at = excluded.expires_at "
        "WHERE leases.owner = excluded.owner OR leases.expires_at <= ?",
        (run_id, owner, now + ttl, now),
    ).rowcount)


def _first_sight(conn: sqlite3.Connection, event_id: str, ttl: float, sweep: bool) -> bool:
    now = time.time()
    if sweep:
        conn.execute("DELETE FROM seen WHERE expires_at <= ?", (now,))
    return bool(conn.execute(
        "INSERT INTO seen (event_id, expires_at) VALUES (?, ?) "
        "ON CONFLICT (event_id) DO UPDATE SET expires_at = excluded.expires_at "
        "WHERE seen.expires_at <= ?",
        (event_id, now + ttl, now),
    ).rowcount)


def _owner_only(path: Path) -> None:
    """Make the missing directories of `path` 0700 and the file 0600, whatever the umask."""
    missing: list[Path] = []
    directory = path.parent
    while not os.path.lexists(directory):
        missing.append(directory)
        directory = directory.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by someone else: theirs, left as it is
            continue
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        info = os.fstat(fd)
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)  # made by an older version, or under a lax umask
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):  # SQLite creates them with the file's mode
        side = path.with_name(path.name + suffix)
        try:
            info = side.stat()
            if info.st_mode & 0o077 and info.st_uid == os.geteuid():
                side.chmod(0o600)
        except FileNotFoundError:
            pass
