"""A thread that owns one sqlite3 connection and group-commits queued operations.

Callers on any event loop submit `fn(conn, *args)`. What one loop submits while it
runs its ready callbacks is handed to the thread as one item when they are done
(a turn's post record and its next append, a run's last writes, a thousand runs'
appends): one wake-up of the thread. The thread drains everything queued so far,
runs it in ONE transaction (an operation that fails halfway undoes only itself),
commits, and only then settles the callers' futures, with one wake-up of each
loop. A thousand concurrent appends thus cost a handful of commits, and the event
loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from threadteam.bot.errors import PermanentStoreError, StoreError

__all__ = ["MAX_BATCH", "Op", "Writer", "error_class"]

# Bounds the work one transaction holds so a flood cannot starve the first caller.
MAX_BATCH = 2000

Op = Callable[..., Any]
_STOP = object()


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
    """Runs operations on a dedicated thread, many per transaction."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self._connect = connect
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._buffers: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        self.batches = 0  # transactions committed; tests read it to see grouping

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
        self._queue.put(batch)

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
        self._ready.set()
        try:
            stop = False
            while not stop:
                batch, stop = self._drain()
                if batch:
                    self._run(conn, batch)
                    self._hand_back(batch)
        finally:
            conn.close()
            self._refuse_late()

    def _drain(self) -> tuple[list[_Pending], bool]:
        item = self._queue.get()
        batch: list[_Pending] = []
        while True:
            if item is _STOP:
                return batch, True
            batch.extend(item)
            if len(batch) >= MAX_BATCH:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _refuse_late(self) -> None:
        # A loop that flushed just as another closed the writer: its callers must not hang.
        late: list[_Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
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
        """Run and commit the batch; False (rolled back) if an operation failed halfway."""
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
