"""Poison-proof stores: no text makes a call fail, one failure never fails another, and
failures say whether retrying can cure them. Real SQLite files, a real redis-server, a
real Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
import redis

from tests.fakes.redis_server import ON_EVERY_STORE
from threadteam.bot.errors import ConflictError, PermanentStoreError, StoreError
from threadteam.bot.stores import RedisStore, SQLiteStore, Store

pytestmark = ON_EVERY_STORE

THREAD = "slack:T1:C1:1700000000.000100"

# A model's stream cut inside an emoji, and a stray low half.
POISON = "half an emoji \ud83d and a stray \udfff"
MENDED = "half an emoji \ufffd and a stray \ufffd"


def ev(kind: str, **fields: object) -> str:
    """One serialised event, as the engine hands it over (raw text, not \\u escapes)."""
    return json.dumps({"kind": kind, **fields}, ensure_ascii=False)


async def test_lone_surrogates_are_stored_as_replacement_characters(store: Store) -> None:
    first = ev("TaskStarted", task=POISON)
    assert await store.create_run("run-1", THREAD, [first])
    assert await store.append("run-1", 1, [ev("AgentMessage", text=POISON)]) == 2
    assert await store.append_external("run-1", [ev("HumanMessage", text=POISON)]) == 3
    assert await store.load("run-1") == [
        ev("TaskStarted", task=MENDED), ev("AgentMessage", text=MENDED),
        ev("HumanMessage", text=MENDED),
    ]
    await store.kv_set("discord", "webhook:\ud800", POISON)
    assert await store.kv_get("discord", "webhook:\ud800") == MENDED
    assert await store.kv_get("discord", "webhook:\ufffd") == MENDED
    await store.put_post("run-1:\udc00", f"m-{POISON}")
    assert await store.get_post("run-1:\udc00") == f"m-{MENDED}"
    assert await store.first_sight("Ev\ud800")
    assert not await store.first_sight("Ev\ud800")


async def test_a_surrogate_pair_written_as_two_code_points_is_one_character(
        store: Store) -> None:
    await store.kv_set("ns", "k", "rocket \ud83d\ude80 launch")
    assert await store.kv_get("ns", "k") == "rocket 🚀 launch"


async def test_run_ids_and_threads_with_surrogates_still_find_their_run(store: Store) -> None:
    thread = f"{THREAD}\ud800"
    assert await store.create_run("run-\udfff", thread, [ev("TaskStarted")])
    assert not await store.create_run("run-\udfff", thread, [ev("TaskStarted")])  # a retry
    assert await store.run_for_thread(thread) == "run-\ufffd"
    assert await store.thread_of("run-\udfff") == f"{THREAD}\ufffd"
    assert await store.acquire_lease("run-\udfff", "worker-\ud800", 30)
    assert await store.acquire_lease("run-\udfff", "worker-\ud800", 30)  # its own renewal
    assert not await store.acquire_lease("run-\udfff", "worker-b", 30)


async def test_a_poisoned_call_among_concurrent_ones_harms_no_one(store: Store) -> None:
    for i in range(3):
        assert await store.create_run(f"run-{i}", f"{THREAD}-{i}", [ev("TaskStarted")])
    results = await asyncio.gather(
        store.kv_set("slack", "bot_user", "U0BOT"),
        store.append("run-0", 1, [ev("HumanMessage", text=POISON)]),
        store.append("run-1", 1, [ev("HumanMessage", text="innocent")]),
        store.append_external("run-2", [ev("HumanMessage", text=POISON)]),
        store.put_post("run-1:1", POISON),
        store.first_sight("Ev-innocent"),
        return_exceptions=True,
    )
    assert results == [None, 2, 2, 2, None, True]
    assert await store.kv_get("slack", "bot_user") == "U0BOT"
    assert (await store.load("run-1"))[-1] == ev("HumanMessage", text="innocent")
    assert (await store.load("run-0"))[-1] == ev("HumanMessage", text=MENDED)


async def test_a_value_that_cannot_be_stored_fails_alone_and_for_good(store: Store) -> None:
    assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])
    unstorable: object = object()
    results = await asyncio.gather(
        store.kv_set("slack", "a", "first"),
        store.kv_set("slack", "b", unstorable),  # type: ignore[arg-type]
        store.append("run-1", 1, [ev("HumanMessage", text="innocent")]),
        store.kv_set("slack", "c", "third"),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] == 2 and results[3] is None
    assert isinstance(results[1], PermanentStoreError)
    assert [await store.kv_get("slack", k) for k in "abc"] == ["first", None, "third"]


async def test_appending_to_an_unknown_run_is_permanent(store: Store) -> None:
    for attempt in (store.append("ghost", 0, [ev("HumanMessage")]),
                    store.append_external("ghost", [ev("HumanMessage")])):
        with pytest.raises(PermanentStoreError, match="ghost"):
            await attempt


async def test_a_run_id_taken_in_another_thread_is_permanent(store: Store) -> None:
    assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])
    with pytest.raises(PermanentStoreError, match="run-1"):
        await store.create_run("run-1", f"{THREAD}-other", [ev("TaskStarted")])


async def test_a_conflict_is_not_permanent(store: Store) -> None:
    assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])
    with pytest.raises(ConflictError) as caught:
        await store.append("run-1", 0, [ev("AgentMessage")])
    assert not isinstance(caught.value, PermanentStoreError)


# -- Redis: one command's error reply reaches its caller only ----------------------------
async def test_redis_a_wrong_type_fails_its_caller_alone_and_for_good(
        redis_url: str, redis_prefix: str) -> None:
    store = RedisStore(redis_url, redis_prefix)
    await store.start()
    try:
        with redis.Redis.from_url(redis_url) as admin:  # as a stray tool or an old version left it
            admin.set(f"{redis_prefix}kv:broken", "a string, not a hash")
        await store.create_run("run-1", THREAD, [ev("TaskStarted")])
        results = await asyncio.gather(
            store.kv_set("slack", "a", "first"),
            store.kv_set("broken", "b", "never"),
            store.append_external("run-1", [ev("HumanMessage", text="innocent")]),
            store.kv_get("broken", "b"),
            store.first_sight("Ev-1"),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] == 2 and results[4] is True
        for failed in (results[1], results[3]):
            assert isinstance(failed, PermanentStoreError)
            assert "WRONGTYPE" in str(failed)
        assert await store.kv_get("slack", "a") == "first"
    finally:
        await store.aclose()


async def test_redis_unreachable_is_a_transient_error() -> None:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StoreError) as caught:
        await store.start()
    assert not isinstance(caught.value, PermanentStoreError)
    await store.aclose()


# -- SQLite: corrupt is permanent, locked is transient ------------------------------------
async def test_sqlite_a_corrupt_file_is_permanent_and_named(tmp_path: Path) -> None:
    path = tmp_path / "threadteam.sqlite3"
    path.write_bytes(b"this was never a database " * 200)
    store = SQLiteStore(str(path))
    with pytest.raises(PermanentStoreError) as caught:
        await store.start()
    assert str(path) in str(caught.value)


async def test_sqlite_a_locked_file_is_transient_and_passes(tmp_path: Path) -> None:
    path = tmp_path / "threadteam.sqlite3"
    store = SQLiteStore(str(path), busy_timeout=0.1)
    await store.start()
    other = sqlite3.connect(path, isolation_level=None)  # another process holding the lock
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError) as caught:
            await store.kv_set("slack", "bot_user", "U0BOT")
        assert not isinstance(caught.value, PermanentStoreError)
        other.execute("ROLLBACK")
        await store.kv_set("slack", "bot_user", "U0BOT")
        assert await store.kv_get("slack", "bot_user") == "U0BOT"
    finally:
        other.close()
        await store.aclose()
