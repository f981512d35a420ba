"""The SQLite store writes a turn in one transaction, and a post's record is in the file at once.

What one event loop submits in one pass goes to the writer thread as one item and
commits in one transaction: a turn's append carries the last post's record when the
two meet (a model that answers at once), so a message costs one transaction, not two.
A record is never held back for the next append: while the next model call takes its
time, the record is already in the file, so a process killed then does not post the
message again on a platform that cannot look a post up (the console).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from tests.bot.helpers import make_host, summon, thread, write_teams
from tests.fakes.poster import RecordingPoster
from threadteam.bot.errors import ConflictError, StoreError
from threadteam.bot.stores import SQLiteStore
from threadteam.teams.models import ModelRequest, ModelResponse, Usage
from threadteam.teams.models.scripted import ScriptedModel

TEAM = """
name: trio
description: Three agents take turns.
model: scripted
agents:
  - {{name: bull, persona: {{display_name: Bull}}, system_message: Argue for.}}
  - {{name: bear, persona: {{display_name: Bear}}, system_message: Argue against.}}
  - {{name: synthesis, persona: {{display_name: Synthesis}}, system_message: Weigh them.}}
termination: {{max_messages: {messages}}}
"""


async def _debate(store: SQLiteStore, tmp_path: Path, messages: int, name: str
                  ) -> tuple[list[list[str]], RecordingPoster, object]:
    """Run the trio for `messages` messages on `store`: what each committed transaction
    held, the poster, and the thread."""
    poster, transactions = RecordingPoster(), []
    run_batch = store._writer._run

    def recording(conn: sqlite3.Connection, batch: list) -> None:
        transactions.append([_what(p.fn, p.args) for p in batch])
        run_batch(conn, batch)

    store._writer._run = recording  # type: ignore[method-assign]
    host = make_host(store, poster, ScriptedModel(default="A point, made at once."),
                     write_teams(tmp_path / "teams", TEAM.format(messages=messages)))
    await host.start()
    try:
        key = thread(name)
        await host.handle(summon(key, "trio Should the bakery take orders online?"))
        await host.idle()
    finally:
        await host.aclose()
    return transactions, poster, key


async def test_each_turn_is_one_transaction_with_the_last_post_record_in_it(
        sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    store = sqlite_store
    transactions, poster, key = await _debate(store, tmp_path, 9, "turns")
    # Each append goes with the record of the post before it (it was two transactions:
    # the record, then the append); only the last post's record goes without one.
    turns = [t for t in transactions if "append" in t]
    assert len(turns) >= 9
    assert all("post record" in t for t in turns), transactions
    assert len([t for t in transactions if "post record" in t and "append" not in t]) == 1
    agent_posts = [p for p in poster.posts if p.key == key and not p.notice]
    assert len(agent_posts) == 9
    for post in agent_posts:  # every post recorded, so none is made again after a restart
        assert await store.get_post(post.idempotency_key) == post.id


async def test_a_drive_reads_in_its_lease_s_transaction_and_releases_in_its_last(
        sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    store = sqlite_store
    transactions, _, key = await _debate(store, tmp_path, 3, "lease")
    [taken] = [t for t in transactions if "lease" in t]
    assert taken == ["lease", "_one", "_load"], "the log is read with the lease taken"
    [released] = [t for t in transactions if "release" in t]
    assert released == ["post record", "active", "release"], transactions
    assert transactions.index(released) == len(transactions) - 1
    assert await store.acquire_lease(await store.run_for_thread(str(key)), "another", 10)


def _what(fn: object, args: tuple) -> str:
    name = getattr(fn, "__name__", "?")
    if name == "_append":
        return "append"
    if name == "_exec" and "INTO posts" in str(args[0]):
        return "post record"
    if name == "_exec" and "FROM leases" in str(args[0]):
        return "release"
    if name == "_exec" and "SET active" in str(args[0]):
        return "active"
    if name == "_acquire_lease":
        return "lease"
    return name


class SecondCallWaits:
    """Answers its first call at once; the second waits until the test lets it go."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0
        self.second_called = asyncio.Event()
        self.release = asyncio.Event()

    async def complete(self, request: ModelRequest, on_text=None, *, on_retry=None
                       ) -> ModelResponse:
        self.calls += 1
        if self.calls == 2:
            self.second_called.set()
            await self.release.wait()
        return ModelResponse(text=f"Point {self.calls}.", usage=Usage(10, 5), model="scripted")

    async def aclose(self) -> None:
        return None


def _recorded(path: Path, key: str) -> str | None:
    # Another connection sees only what is committed to the file: what survives a SIGKILL.
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT message_id FROM posts WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


async def test_a_post_record_is_in_the_file_while_the_next_model_call_runs(
        sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    poster, model = RecordingPoster(), SecondCallWaits()
    host = make_host(sqlite_store, poster, model,  # type: ignore[arg-type]
                     write_teams(tmp_path / "teams", TEAM.format(messages=3)))
    await host.start()
    try:
        key = thread("slow")
        await host.handle(summon(key, "trio Should the bakery take orders online?"))
        async with asyncio.timeout(10):
            await model.second_called.wait()
        [first] = [p for p in poster.posts if p.key == key and not p.notice]
        # Not held for the append that follows the model's answer: it is written now.
        deadline = time.monotonic() + 5.0
        while _recorded(Path(sqlite_store.path), first.idempotency_key) != first.id:
            assert time.monotonic() < deadline, "the post's record is not in the file"
            await asyncio.sleep(0.005)
        model.release.set()
        await host.idle()
    finally:
        model.release.set()
        await host.aclose()
    assert [p.name for p in poster.posts if p.key == key and not p.notice] == \
        ["Bull", "Bear", "Synthesis"]


async def test_one_pass_of_the_loop_is_one_transaction_each_caller_its_own_answer(
        sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    assert await store.create_run("run-1", "thread-1", ['{"kind":"task_started"}'])
    writer = store._writer

    def fails(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO kv (namespace, key, value) VALUES ('t', 'half', 'v')")
        raise RuntimeError("disk gremlin")

    before = writer.batches
    results = await asyncio.gather(
        store.put_post("run-1:0", "m1"),
        store.append("run-1", 1, ['{"kind":"agent_message"}']),
        writer.submit(fails),
        store.append("run-1", 1, ['{"kind":"stale"}']),  # the first one moved the log on
        store.kv_set("t", "whole", "v"),
        return_exceptions=True)
    assert writer.batches - before == 1
    assert results[0] is None and results[1] == 2 and results[4] is None
    assert isinstance(results[2], StoreError) and "disk gremlin" in str(results[2])
    assert isinstance(results[3], ConflictError)
    assert await store.get_post("run-1:0") == "m1"
    assert await store.load("run-1", 1) == ['{"kind":"agent_message"}']
    assert await store.kv_items("t") == {"whole": "v"}  # the failed one left nothing


async def test_a_write_queued_as_the_store_closes_is_committed(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.sqlite3")
    store = SQLiteStore(path)
    await store.start()
    recorded = asyncio.ensure_future(store.put_post("run-1:0", "m1"))
    await asyncio.sleep(0)  # the write is queued on this loop, not yet with the writer
    await store.aclose()
    await recorded
    reopened = SQLiteStore(path)
    await reopened.start()
    try:
        assert await reopened.get_post("run-1:0") == "m1"
    finally:
        await reopened.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.put_post("run-1:1", "m2")


async def test_a_driver_keeps_its_lease_through_a_turn_longer_than_the_lease(
        sqlite_store: SQLiteStore, tmp_path: Path) -> None:
    store, poster = sqlite_store, RecordingPoster()
    model = ScriptedModel(default="A point, made slowly.")
    model.delay = 1.0  # more than three times the lease's time to live
    host = make_host(store, poster, model, write_teams(tmp_path / "teams", TEAM.format(messages=1)),
                     lease_ttl=0.3)
    await host.start()
    try:
        key = thread("slow-lease")
        await host.handle(summon(key, "trio Should the bakery take orders online?"))
        run_id = await store.run_for_thread(str(key))
        assert run_id is not None
        await asyncio.sleep(0.6)  # past the first lease's expiry: renewed since
        assert not await store.acquire_lease(run_id, "intruder", 10)
        await host.idle()
        assert [p.text for p in poster.posts if p.key == key and not p.notice] == \
            ["A point, made slowly."]
        assert await store.acquire_lease(run_id, "intruder", 10), "released after the turn"
    finally:
        await host.aclose()
