"""One sqlite3 connection that group-commits queued operations, on the event loop when it
is cheap and on a thread of its own when it may wait.

Callers on any event loop submit `fn(conn, *args)`. What one loop submits while it
runs its ready callbacks is run as one batch when they are done (a turn's post record
and its next append, a run's last writes, a thousand runs' appends): ONE transaction
(an operation that fails halfway undoes only itself), committed before the callers'
futures are settled.

A small batch runs right there on the loop: in WAL mode with synchronous=NORMAL a
commit appends to the WAL and does not fsync, so it costs tens of microseconds, while
handing the batch to a thread and back cost several times that (a queue, two wake-ups,
the GIL going back and forth). Whatever may wait goes to the writer thread instead:

- a checkpoint (it fsyncs the WAL and the database): the loop's connection never
  checkpoints by itself (wal_autocheckpoint=0); the thread does every so often, and
  then writes the first frame of the restarted WAL itself, since that write fsyncs the
  WAL's header;
- a batch that meets the file locked by another connection (the loop does not wait on
  a lock; the thread does, up to the busy timeout);
- a large batch (a burst of many runs' appends), whose SQLite work then overlaps the
  loop's own;
- anything submitted while the thread has work queued, so that operations still run
  (and commit) in the order they were submitted.

The thread and the loops take turns on the one connection (never two at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from threadteam.bot.errors import PermanentStoreError, StoreError

__all__ = ["CHECKPOINT_AFTER", "INLINE_MAX", "MAX_BATCH", "Op", "Writer", "error_class"]

log = logging.getLogger("threadteam.store")

# Bounds the work one transaction holds so a flood cannot starve the first caller.
MAX_BATCH = 2000
# A batch of more operations than this goes to the writer thread, not run on the loop.
INLINE_MAX = 256
# Rows changed between checkpoints (SQLite's own default is every 1000 WAL pages).
CHECKPOINT_AFTER = 1000

Op = Callable[..., Any]
_STOP = object()
_CHECKPOINT = object()


class _Pending:
    __slots__ = ("args", "error", "fn", "future", "loop", "result")

    def __init__(self, fn: Op, args: tuple[Any, ...], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.args = args
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.result: Any = None
        self.error: BaseException | None = None


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(error)


def _settle(batch: list[_Pending]) -> None:
    for p in batch:
        if p.future.done():  # the caller was cancelled; the work still happened
            continue
        if p.error is not None:
            p.future.set_exception(p.error)
        else:
            p.future.set_result(p.result)


class Writer:
    """Runs operations on one connection, many per transaction: on the caller's event loop
    when that cannot wait, on a dedicated thread otherwise."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        """`connect` opens the connection (on the writer thread); the writer may use it
        from other threads (check_same_thread=False), one at a time."""
        self._connect = connect
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._busy_ms = 0  # the connection's busy timeout, used on the thread only
        self._closed = False
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._buffers: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        # Guards the two below. `_using`: someone runs statements on the connection;
        # `_queued`: items handed to the thread that it has not finished.
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)  # the thread waits on it for its turn
        self._waiting = False  # the thread waits: whoever ends a turn wakes it
        self._using = False
        self._queued = 0
        self._checkpointed_at = 0  # the connection's total_changes at the last checkpoint
        self.batches = 0  # transactions committed; tests read it to see grouping
        self.inline = 0  # of which on an event loop

    async def start(self) -> None:
        """Open the connection on the writer thread; raise what opening raised."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        # The thread only connects and creates the schema; waiting is short.
        await asyncio.to_thread(self._ready.wait)
        if self._open_error is not None:
            error, self._open_error, self._thread = self._open_error, None, None
            self._ready.clear()  # so a later start() can try again
            raise error

    async def submit(self, fn: Op, *args: Any) -> Any:
        """Run `fn(conn, *args)` in the next transaction; return once it is committed."""
        return await self.put(fn, *args)

    def put(self, fn: Op, *args: Any) -> asyncio.Future[Any]:
        """`submit` without a coroutine: the future of `fn(conn, *args)`'s result. Call it
        on a running loop; the operation is queued even if nobody awaits the future."""
        if self._thread is None or self._closed:
            raise StoreError(f"{self._name} is not open; call start() first (or it was closed).")
        loop = asyncio.get_running_loop()
        pending = _Pending(fn, args, loop)
        # Only this loop's thread touches its buffer; the dict itself is shared, and each
        # of its operations is atomic.
        buffer = self._buffers.get(loop)
        if buffer is None:
            self._buffers[loop] = [pending]
            loop.call_soon(self._flush, loop)
        else:
            buffer.append(pending)
        return pending.future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        # On `loop`, once the callbacks that were ready when the first operation came are run.
        batch = self._buffers.pop(loop, None)
        if not batch:
            return
        if self._closed:  # closed meanwhile (from another loop): nothing will run these
            _fail(batch, StoreError(f"{self._name} was closed before this could be written."))
            return
        with self._lock:  # the lock itself: cheaper than the condition's Python methods
            conn = self._conn
            if conn is None:  # the thread has closed the connection (another loop closed)
                _fail(batch, StoreError(f"{self._name} was closed before this could be written."))
                return
            if self._using or self._queued or len(batch) > INLINE_MAX:
                self._send(batch)
                return
            self._using = True
        began = ran = checkpoint = False
        try:
            began = self._begin_inline(conn)
            if began:
                self._run(conn, batch)
                self.inline += 1
                ran = True
                checkpoint = conn.total_changes - self._checkpointed_at >= CHECKPOINT_AFTER
        finally:
            if began and not ran:  # interrupted halfway (operations' own errors are caught)
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                _fail(batch, StoreError(f"{self._name}: the write was interrupted."))
            with self._lock:
                self._using = False
                if not began:  # the file was locked: the thread waits for it instead
                    self._send(batch)
                elif checkpoint:
                    self._send(_CHECKPOINT)
                    self._checkpointed_at = conn.total_changes
                if self._waiting:
                    self._turn.notify_all()
        if ran:
            _settle(batch)

    def _send(self, item: object) -> None:
        # Holding `_lock`.
        self._queued += 1
        self._queue.put(item)

    @staticmethod
    def _begin_inline(conn: sqlite3.Connection) -> bool:
        """Begin a transaction on this loop; False if the file is locked by another
        connection (the busy timeout is 0 here): the thread begins it instead, waiting as
        long as the busy timeout says."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return False
        return True

    async def aclose(self) -> None:
        """Commit what is queued, then stop the thread and close the connection."""
        if self._thread is None or self._closed:
            return
        self._flush(asyncio.get_running_loop())  # this loop's last operations go first
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    # -- on the writer thread ------------------------------------------------
    def _main(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._open_error = exc
            self._ready.set()
            return
        try:
            self._busy_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
            conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints are the thread's
            self._restart_wal(conn)  # a fresh WAL's first write fsyncs: made here, not on a loop
            conn.execute("PRAGMA busy_timeout=0")  # a loop never waits on a lock
        except BaseException as exc:
            conn.close()
            self._open_error = _wrap(exc, self._name)
            self._ready.set()
            return
        self._conn = conn
        self._checkpointed_at = conn.total_changes
        self._ready.set()
        try:
            stop = False
            while not stop:
                batch, items, marker = self._drain()
                stop = marker is _STOP
                if batch or marker is _CHECKPOINT:
                    self._take_turn(conn, batch, marker is _CHECKPOINT, items)
                if batch:
                    self._hand_back(batch)
        finally:
            with self._turn:  # a loop still running a batch finishes it first
                self._wait_for_turn()
                self._conn = None
            conn.close()
            self._refuse_late()

    def _take_turn(self, conn: sqlite3.Connection, batch: list[_Pending], checkpoint: bool,
                   items: int) -> None:
        with self._turn:
            self._wait_for_turn()
            self._using = True
        try:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")  # the thread may wait
            if batch:
                self._run(conn, batch)
            if checkpoint:
                self._checkpoint(conn)
        finally:
            try:
                conn.execute("PRAGMA busy_timeout=0")
            except sqlite3.Error:  # pragma: no cover - the connection is unusable anyway
                pass
            with self._turn:
                self._using = False
                self._queued -= items
                self._turn.notify_all()

    def _wait_for_turn(self) -> None:
        # Holding `_turn`: until no loop runs statements on the connection.
        while self._using:
            self._waiting = True
            self._turn.wait()
            self._waiting = False

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL into the database without waiting for anyone (PASSIVE); when all of
        it is copied, restart the WAL here, where its header's fsync waits on no loop."""
        try:
            _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames > 0 and copied == frames:
                self._restart_wal(conn)
        except sqlite3.Error:  # the WAL grows meanwhile; the next checkpoint tries again
            log.warning("%s: a checkpoint failed", self._name, exc_info=True)
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @staticmethod
    def _restart_wal(conn: sqlite3.Connection) -> None:
        # The first write after a full checkpoint (or into a new WAL) starts the WAL over
        # and fsyncs its header. A write that changes nothing: page 1's header.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"PRAGMA user_version={int(version)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _drain(self) -> tuple[list[_Pending], int, object]:
        """Queued batches (up to MAX_BATCH operations) to run as one; how many items they
        were; and the marker (_STOP, _CHECKPOINT) that ended them, if one did."""
        item = self._queue.get()
        batch: list[_Pending] = []
        items = 0
        while True:
            if item is _STOP:
                return batch, items, _STOP
            items += 1
            if item is _CHECKPOINT:
                return batch, items, _CHECKPOINT
            batch.extend(item)
            if len(batch) >= MAX_BATCH:
                return batch, items, None
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, items, None

    def _refuse_late(self) -> None:
        # A loop that flushed just as another closed the writer: its callers must not hang.
        late: list[_Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and item is not _CHECKPOINT:
                late.extend(item)
        if late:
            for p in late:
                p.error = StoreError(f"{self._name} was closed before this could be written.")
            self._hand_back(late)

    def _run(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        try:
            # Savepoints per operation would cost ~40% of the throughput, so they are
            # only used to redo a batch in which an operation failed halfway.
            if not self._transaction(conn, batch, isolate=False):
                self._transaction(conn, batch, isolate=True)
            self.batches += 1
        except sqlite3.Error as exc:
            # The transaction as a whole failed (disk full, locked too long, ...):
            # nothing in it is durable, so every caller hears about it.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = _wrap(exc, self._name)
            for p in batch:
                p.result, p.error = None, error

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Pending], isolate: bool) -> bool:
        """Run and commit the batch; False (rolled back) if an operation failed halfway.
        Begins the transaction unless the caller has."""
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
        for p in batch:
            p.result, p.error = None, None
            if isolate:
                conn.execute("SAVEPOINT op")
            try:
                p.result = p.fn(conn, *p.args)
            except Exception as exc:
                # Operations raise StoreError (a conflict, an unknown run) before they
                # write; anything else may have left half an operation behind.
                if isolate:
                    conn.execute("ROLLBACK TO op")
                elif not isinstance(exc, StoreError):
                    conn.execute("ROLLBACK")
                    return False
                p.error = exc if isinstance(exc, StoreError) else _wrap(exc, self._name)
            if isolate:
                conn.execute("RELEASE op")
        conn.execute("COMMIT")
        return True

    def _hand_back(self, batch: list[_Pending]) -> None:
        # One wake-up per event loop per batch, not one per caller.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = defaultdict(list)
        for p in batch:
            by_loop[p.loop].append(p)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # that loop is closed; nobody is waiting any more
                pass


# SQLite's primary result codes that may pass by themselves: busy or locked by another
# connection, out of memory, interrupted, an I/O error, a full disk, a lock protocol race.
_TRANSIENT_CODES = frozenset({5, 6, 7, 9, 10, 13, 15})


def error_class(exc: BaseException) -> type[StoreError]:
    """`StoreError` for a failure that may pass by retrying (the file is locked, the disk
    is full), `PermanentStoreError` for one that will not (a corrupt file, a value SQLite
    cannot bind, a broken constraint, a path that cannot be opened)."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # raised by the sqlite3 module itself: a value it cannot bind, ...
            return StoreError if isinstance(exc, sqlite3.OperationalError) else PermanentStoreError
        return StoreError if code & 0xFF in _TRANSIENT_CODES else PermanentStoreError
    return PermanentStoreError  # OSError when opening, or a value no code path can store


def _wrap(exc: BaseException, name: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    error = error_class(exc)(f"{name} failed: {exc}")
    error.__cause__ = exc
    return error
