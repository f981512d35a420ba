"""Runs live from birth, appends that need no read, and tails that cost the tail.

Run on a real SQLite file, a real redis-server and a real three-node Redis Cluster (the
`store` fixture runs each test on each), with several store instances standing in for
several processes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis

from tests.fakes.redis_server import ON_EVERY_STORE
from threadteam.bot.errors import ConflictError
from threadteam.bot.stores import RedisStore, SQLiteStore, Store

pytestmark = ON_EVERY_STORE

THREAD = "slack:T1:C1:1700000000.000100"

StoreFactory = Callable[[], Awaitable[Store]]


def ev(kind: str, **fields: object) -> str:
    return json.dumps({"kind": kind, **fields}, ensure_ascii=False)


def reply(caller: int, n: int) -> str:
    return ev("HumanMessage", user=f"U{caller}", text=f"message {n}")


# -- runs are live from birth ---------------------------------------------------------
async def test_a_run_is_active_from_the_moment_it_exists(store_factory: StoreFactory) -> None:
    first = await store_factory()
    assert await first.create_run("run-1", THREAD, [ev("TaskStarted")])
    # The process dies right here, before its first post; another one starts.
    second = await store_factory()
    assert await second.active_runs() == ["run-1"]
    assert await second.load("run-1") == [ev("TaskStarted")]


async def test_a_retried_create_does_not_wake_a_settled_run(store: Store) -> None:
    assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])
    await store.set_active("run-1", False)  # it finished, or waits for a person
    assert not await store.create_run("run-1", THREAD, [ev("TaskStarted")])
    assert await store.active_runs() == []


async def test_only_the_winner_of_a_thread_is_active(store_factory: StoreFactory) -> None:
    stores = [await store_factory() for _ in range(3)]
    made = await asyncio.gather(*(
        s.create_run(f"run-{i}-{j}", THREAD, [ev("TaskStarted")])
        for i, s in enumerate(stores) for j in range(4)))
    assert made.count(True) == 1
    winner = await stores[0].run_for_thread(THREAD)
    for s in stores:
        assert await s.active_runs() == [winner]


async def test_redis_a_loser_that_crashed_mid_create_is_never_resumed(
        redis_url: str, redis_prefix: str) -> None:
    store = RedisStore(redis_url, redis_prefix)
    await store.start()
    try:
        assert await store.create_run("winner", THREAD, [ev("TaskStarted")])
        # What a rival's create leaves when it dies after losing the thread, before it
        # cleans up: its run, marked active, in a thread that belongs to the winner.
        with redis.Redis.from_url(redis_url) as admin:
            admin.hset(f"{redis_prefix}{{loser}}:meta", mapping={"thread": THREAD})
            admin.rpush(f"{redis_prefix}{{loser}}:log", ev("TaskStarted"))
            admin.sadd(f"{redis_prefix}active", "loser", "vanished")
        assert await store.active_runs() == ["winner"]
        with redis.Redis.from_url(redis_url) as admin:
            assert admin.smembers(f"{redis_prefix}active") == {b"winner"}
    finally:
        await store.aclose()


async def test_redis_a_create_cut_short_by_a_crash_is_finished_by_its_retry(
        redis_url: str, redis_prefix: str) -> None:
    store = RedisStore(redis_url, redis_prefix)
    await store.start()
    try:
        # What a create leaves when its process dies after writing the run, before
        # claiming the thread: the run's own keys, and nothing pointing at them.
        with redis.Redis.from_url(redis_url) as admin:
            admin.hset(f"{redis_prefix}{{run-1}}:meta", mapping={"thread": THREAD})
            admin.rpush(f"{redis_prefix}{{run-1}}:log", ev("TaskStarted"))
        assert await store.run_for_thread(THREAD) is None
        assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])
        assert await store.run_for_thread(THREAD) == "run-1"
        assert await store.active_runs() == ["run-1"]
        assert [r.run_id for r in await store.runs()] == ["run-1"]
        assert await store.load("run-1") == [ev("TaskStarted")]
    finally:
        await store.aclose()


# -- appends that need no read ----------------------------------------------------------
async def test_200_concurrent_external_appends_all_land_in_call_order(store: Store) -> None:
    assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])
    lengths = await asyncio.gather(
        *(store.append_external("run-1", [reply(i, 0)]) for i in range(200)))
    assert lengths == list(range(2, 202))
    assert await store.load("run-1") == [ev("TaskStarted")] + [reply(i, 0) for i in range(200)]


async def test_callers_appending_at_once_keep_their_own_order(store: Store) -> None:
    assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])

    async def person(caller: int) -> list[int]:
        return [await store.append_external("run-1", [reply(caller, n)]) for n in range(20)]

    lengths = await asyncio.gather(*(person(c) for c in range(10)))
    log = await store.load("run-1")
    assert len(log) == 201
    for caller, theirs in enumerate(lengths):
        assert theirs == sorted(theirs)
        assert [log[length - 1] for length in theirs] == [reply(caller, n) for n in range(20)]


async def test_redis_three_processes_append_to_one_run_at_once(
        redis_url: str, redis_prefix: str) -> None:
    stores = [RedisStore(redis_url, redis_prefix) for _ in range(3)]
    for s in stores:
        await s.start()
    try:
        assert await stores[0].create_run("run-1", THREAD, [ev("TaskStarted")])

        async def person(s: Store, caller: int) -> list[int]:
            return [await s.append_external("run-1", [reply(caller, n)]) for n in range(25)]

        lengths = await asyncio.gather(*(
            person(s, p * 10 + c) for p, s in enumerate(stores) for c in range(4)))
        log = await stores[1].load("run-1")
        assert len(log) == 1 + 3 * 4 * 25
        assert sorted(n for theirs in lengths for n in theirs) == list(range(2, 302))
        for (p, c), theirs in zip(((p, c) for p in range(3) for c in range(4)), lengths,
                                  strict=True):
            assert [log[n - 1] for n in theirs] == [reply(p * 10 + c, n) for n in range(25)]
    finally:
        for s in stores:
            await s.aclose()


async def test_a_driver_behind_external_appends_conflicts_then_catches_up(store: Store) -> None:
    assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])
    assert await store.append_external("run-1", [reply(1, 0), reply(1, 1)]) == 3
    with pytest.raises(ConflictError) as caught:
        await store.append("run-1", 1, [ev("AgentMessage", text="stale")])
    assert (caught.value.expected, caught.value.actual) == (1, 3)
    assert await store.load("run-1", 1) == [reply(1, 0), reply(1, 1)]  # only the tail
    assert await store.append("run-1", 3, [ev("AgentMessage", text="fresh")]) == 4


async def test_a_driver_and_a_burst_of_replies_interleave_without_loss(store: Store) -> None:
    assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])

    async def driver() -> None:
        length = 1
        for n in range(20):
            event = ev("AgentMessage", n=n)
            while True:
                try:
                    length = await store.append("run-1", length, [event])
                    break
                except ConflictError as exc:
                    length += len(await store.load("run-1", length))  # fold the tail only
                    assert length >= exc.actual

    async def people() -> None:
        for n in range(100):
            await store.append_external("run-1", [reply(n % 5, n)])

    await asyncio.gather(driver(), people())
    log = await store.load("run-1")
    assert [e for e in log if '"HumanMessage"' in e] == [reply(n % 5, n) for n in range(100)]
    assert [e for e in log if '"AgentMessage"' in e] == [ev("AgentMessage", n=n) for n in range(20)]


async def test_an_append_with_a_key_happens_once(store: Store) -> None:
    assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])
    assert await store.append_external("run-1", [reply(1, 0)], key="Ev01") == 2
    assert await store.append_external("run-1", [reply(2, 0)]) == 3
    # The first answer was lost on the way (a dropped connection): the retry is a no-op.
    assert await store.append_external("run-1", [reply(1, 0)], key="Ev01") == 2
    again = await asyncio.gather(
        *(store.append_external("run-1", [reply(3, 0)], key="Ev02") for _ in range(5)))
    assert again == [4] * 5
    assert await store.load("run-1") == [ev("TaskStarted"), reply(1, 0), reply(2, 0), reply(3, 0)]


async def test_an_empty_external_append_reports_the_length(store: Store) -> None:
    assert await store.create_run("run-1", THREAD, [ev("TaskStarted"), ev("SpeakerSelected")])
    assert await store.append_external("run-1", []) == 2


async def test_external_appends_move_the_run_up_the_listing(store: Store) -> None:
    for i in (1, 2):
        assert await store.create_run(f"run-{i}", f"{THREAD}-{i}", [ev("TaskStarted")])
    await store.append_external("run-1", [reply(1, 0)])
    listed = await store.runs()
    assert [(r.run_id, r.length) for r in listed] == [("run-1", 2), ("run-2", 1)]


async def test_external_appends_survive_reopening(store_factory: StoreFactory) -> None:
    first = await store_factory()
    assert await first.create_run("run-1", THREAD, [ev("TaskStarted")])
    await first.append_external("run-1", [reply(1, 0)], key="Ev01")
    await first.aclose()
    second = await store_factory()
    assert await second.append_external("run-1", [reply(1, 0)], key="Ev01") == 2
    assert await second.load("run-1") == [ev("TaskStarted"), reply(1, 0)]


# -- tails cost the tail --------------------------------------------------------------------
async def test_loading_a_tail_returns_exactly_the_tail(store: Store) -> None:
    events = [ev("AgentMessage", n=n) for n in range(3000)]
    assert await store.create_run("run-1", THREAD, events[:1])
    for i in range(1, 3000, 500):
        await store.append_external("run-1", events[i:i + 500])
    for start in (0, 1, 1500, 2999, 3000, 5000):
        assert await store.load("run-1", start) == events[start:]


async def test_sqlite_a_tail_load_does_not_read_the_whole_log(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.sqlite3"))
    await store.start()
    try:
        assert await store.create_run("run-1", THREAD, [ev("TaskStarted")])
        await store.append_external("run-1", [ev("AgentMessage", n=n) for n in range(20_000)])
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        async def cost(start: int) -> int:
            # SQLite's own count of the virtual-machine steps the query takes.
            await store._writer.submit(lambda conn: conn.set_progress_handler(count, 10))
            steps[0] = 0
            await store.load("run-1", start)
            await store._writer.submit(lambda conn: conn.set_progress_handler(None, 10))
            return steps[0]

        whole, tail = await cost(0), await cost(19_999)
        assert whole > 1000
        assert tail * 100 < whole, (tail, whole)
    finally:
        await store.aclose()
