"""The SQLite store commits small batches on the event loop, and leaves to its thread what
may wait: a file locked by another connection, and checkpoints; `soon` starts a queued
write without a task. Real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from threadteam.bot.errors import StoreError
from threadteam.bot.stores import SQLiteStore
from threadteam.bot.stores._writer import CHECKPOINT_AFTER
from threadteam.bot.stores.base import soon


@pytest.fixture
def store(sqlite_store: SQLiteStore) -> SQLiteStore:
    return sqlite_store  # SQLite alone, not the suite's every store


def _committed(path: str, key: str) -> str | None:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT value FROM kv WHERE namespace = 't' AND key = ?",
                           (key,)).fetchone()
    return None if row is None else row[0]


async def test_a_small_batch_commits_on_the_loop_and_is_in_the_file(store: SQLiteStore) -> None:
    writer = store._writer
    before = writer.inline
    await store.kv_set("t", "a", "1")
    assert writer.inline == before + 1
    assert _committed(store.path, "a") == "1"  # committed, as another connection sees it


async def test_a_file_locked_elsewhere_is_waited_for_by_the_thread_not_the_loop(
        store: SQLiteStore) -> None:
    writer = store._writer
    other = sqlite3.connect(store.path, isolation_level=None)
    gaps: list[float] = []
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        first = asyncio.ensure_future(store.kv_set("t", "a", "1"))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(store.kv_set("t", "a", "2"))  # behind the first
        last = time.monotonic()
        for _ in range(30):  # the loop keeps turning while the writes wait
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        assert not first.done() and not second.done()
        other.execute("COMMIT")
        async with asyncio.timeout(5):
            await asyncio.gather(first, second)
    finally:
        other.close()
    assert max(gaps) < 0.1, f"the loop stalled for {max(gaps):.3f}s"
    assert _committed(store.path, "a") == "2", "the later write landed last"
    before = writer.inline
    await store.kv_set("t", "b", "3")
    assert writer.inline == before + 1, "with the lock free, commits are the loop's again"


async def test_the_wal_is_checkpointed_while_the_loop_commits(store: SQLiteStore) -> None:
    assert await store.create_run("run-1", "thread-1", ['{"kind":"task_started"}'])
    appends = 3 * CHECKPOINT_AFTER
    for n in range(1, appends + 1):
        await store.append("run-1", n, ['{"kind":"agent_message","text":"a point"}'])
    assert store._writer.inline >= appends * 0.9, "most commits were the loop's"
    with sqlite3.connect(store.path) as other:
        # Every commit wrote at least one frame: a WAL never restarted would hold them all.
        _, frames, _ = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert 0 < frames < appends / 2, frames
    assert len(await store.load("run-1")) == appends + 1


class _RefusesPosts:
    """A wrapper around a store (as tests and adapters make them) overriding one method."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def put_post(self, key: str, message_id: str) -> None:
        raise StoreError("refused by the wrapper")


async def test_soon_queues_a_write_at_once_without_a_task(store: SQLiteStore) -> None:
    write = soon(store.put_post, "run-1:0", "m1")
    assert not isinstance(write, asyncio.Task), "the queued operation's own future"
    assert await store.get_post("run-1:0") == "m1", "queued before the read that follows"
    await write
    # Awaited directly, the method is the ordinary coroutine it always was.
    await store.put_post("run-1:1", "m2")
    assert await store.get_post("run-1:1") == "m2"


async def test_soon_calls_what_a_wrapper_overrides(store: SQLiteStore) -> None:
    wrapped = _RefusesPosts(store)
    with pytest.raises(StoreError, match="refused by the wrapper"):
        await soon(wrapped.put_post, "run-1:0", "m1")
    assert await store.get_post("run-1:0") is None
    await soon(wrapped.set_active, "run-1", True)  # not overridden: the store's own


async def test_soon_on_a_closed_store_fails_when_awaited(tmp_path: Path) -> None:
    closed = SQLiteStore(str(tmp_path / "closed.sqlite3"))
    await closed.start()
    await closed.aclose()
    write = soon(closed.put_post, "run-1:0", "m1")  # does not raise here
    with pytest.raises(StoreError, match="not open"):
        await write


async def test_work_reaches_a_waiting_consumer_at_once_and_no_waiter_is_left(
        store: SQLiteStore) -> None:
    first = asyncio.ensure_future(store.next_work("c1", 5))
    second = asyncio.ensure_future(store.next_work("c2", 0.2))
    await asyncio.sleep(0.01)  # both wait
    started = time.monotonic()
    await store.enqueue("run-1")
    [(receipt, run_id)] = await asyncio.wait_for(first, 1)
    assert run_id == "run-1" and time.monotonic() - started < 0.1
    assert await second == [], "one consumer per item; the other's wait ran out"
    await store.ack_work(receipt)
    assert not store._queue("")._waiters, "no consumer is still registered as waiting"


async def test_work_for_a_consumer_cancelled_as_it_was_woken_goes_to_another(
        store: SQLiteStore) -> None:
    first = asyncio.ensure_future(store.next_work("c1", 5))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(store.next_work("c2", 5))
    await asyncio.sleep(0.01)
    await store.enqueue("run-1")  # wakes the first...
    first.cancel()  # ...which is cancelled before it can take the run
    [(_, run_id)] = await asyncio.wait_for(second, 1)
    assert run_id == "run-1"
    assert first.cancelled()
