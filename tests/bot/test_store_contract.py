"""The Store contract, run against a real SQLite file, a real Redis server and a real
three-node Redis Cluster."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis

from tests.fakes.redis_server import ON_EVERY_STORE
from threadteam.bot.errors import ConflictError, StoreError
from threadteam.bot.stores import RedisStore, SQLiteStore, Store

pytestmark = ON_EVERY_STORE

THREAD = "slack:T1:C1:1700000000.000100"


def ev(kind: str, **fields: object) -> str:
    """One serialised event, as the engine would hand it to a store."""
    return json.dumps({"kind": kind, **fields}, ensure_ascii=False)


async def wait_until(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll `check` until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def new_run(store: Store, run_id: str = "run-1", thread: str = THREAD, n: int = 1) -> str:
    assert await store.create_run(run_id, thread, [ev("TaskStarted", i=i) for i in range(n)])
    return run_id


# -- run logs ------------------------------------------------------------------
async def test_round_trip_keeps_order_and_exact_text(store: Store) -> None:
    events = [
        ev("TaskStarted", team="debate", task="Should we ship?", by="U1"),
        ev("HumanMessage", user="Zoë", text="naïve café — 日本語 🚀 \u0301 “quotes”"),
        '  {"kind": "AgentMessage", "text": "spaces kept"}  ',
        ev("AgentMessage", text="line one\nline two\ttab \\ backslash"),
    ]
    assert await store.create_run("run-1", THREAD, events[:2])
    assert await store.append("run-1", 2, events[2:]) == 4
    assert await store.load("run-1") == events
    big = ev("ToolResult", output="x" * 100_000)
    assert await store.append("run-1", 4, [big]) == 5
    assert (await store.load("run-1"))[-1] == big


async def test_load_from_an_index(store: Store) -> None:
    await new_run(store, n=5)
    assert await store.load("run-1", start=3) == [ev("TaskStarted", i=3), ev("TaskStarted", i=4)]
    assert await store.load("run-1", start=5) == []
    assert await store.load("no-such-run") == []


async def test_append_with_a_stale_length_conflicts_and_writes_nothing(store: Store) -> None:
    await new_run(store, n=2)
    with pytest.raises(ConflictError) as caught:
        await store.append("run-1", 1, [ev("AgentMessage", text="stale")])
    assert (caught.value.run_id, caught.value.expected, caught.value.actual) == ("run-1", 1, 2)
    assert len(await store.load("run-1")) == 2
    assert await store.append("run-1", 2, []) == 2  # an empty append is a length check


async def test_append_to_an_unknown_run_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError) as caught:
        await store.append("ghost", 0, [ev("AgentMessage")])
    assert not isinstance(caught.value, ConflictError)
    assert "ghost" in str(caught.value)


async def test_concurrent_appenders_exactly_one_wins(store: Store) -> None:
    await new_run(store)
    results = await asyncio.gather(
        *(store.append("run-1", 1, [ev("AgentMessage", by=w)]) for w in range(8)),
        return_exceptions=True,
    )
    assert results.count(2) == 1
    assert all(isinstance(r, ConflictError) for r in results if r != 2)
    assert len(await store.load("run-1")) == 2


async def test_one_run_per_thread(store: Store) -> None:
    await new_run(store, "run-1")
    assert not await store.create_run("run-2", THREAD, [ev("TaskStarted")])
    assert await store.run_for_thread(THREAD) == "run-1"
    assert await store.thread_of("run-2") is None
    assert await store.load("run-2") == []


async def test_a_run_id_lives_in_one_thread(store: Store) -> None:
    await new_run(store, "run-1", THREAD, n=2)
    assert not await store.create_run("run-1", THREAD, [ev("TaskStarted")])  # a retry
    with pytest.raises(StoreError, match="run-1"):
        await store.create_run("run-1", f"{THREAD}-other", [ev("TaskStarted")])
    assert await store.run_for_thread(f"{THREAD}-other") is None
    assert len(await store.load("run-1")) == 2


async def test_concurrent_summons_of_one_thread_create_one_run(store: Store) -> None:
    made = await asyncio.gather(
        *(store.create_run(f"run-{i}", THREAD, [ev("TaskStarted")]) for i in range(6))
    )
    assert made.count(True) == 1
    assert await store.run_for_thread(THREAD) == f"run-{made.index(True)}"


async def test_thread_and_run_lookups(store: Store) -> None:
    await new_run(store, "run-1", THREAD)
    assert await store.run_for_thread(THREAD) == "run-1"
    assert await store.thread_of("run-1") == THREAD
    assert await store.run_for_thread("slack:T1:C1:other") is None
    assert await store.thread_of("nope") is None


async def test_runs_lists_most_recently_updated_first(store: Store) -> None:
    for i in (1, 2, 3):
        await new_run(store, f"run-{i}", f"{THREAD}-{i}")
    await store.append("run-1", 1, [ev("HumanMessage"), ev("AgentMessage")])
    listed = await store.runs()
    assert [r.run_id for r in listed] == ["run-1", "run-3", "run-2"]
    assert (listed[0].thread, listed[0].length) == (f"{THREAD}-1", 3)
    assert listed[0].updated_at >= listed[1].updated_at >= listed[2].updated_at
    assert abs(listed[0].updated_at - time.time()) < 60
    assert [r.run_id for r in await store.runs(limit=2)] == ["run-1", "run-3"]


# -- leases ----------------------------------------------------------------------
async def test_lease_is_exclusive_and_released_only_by_its_owner(store: Store) -> None:
    assert await store.acquire_lease("run-1", "worker-a", 30)
    assert not await store.acquire_lease("run-1", "worker-b", 30)
    assert await store.acquire_lease("run-1", "worker-a", 30)  # renewal
    await store.release_lease("run-1", "worker-b")  # not b's to give up
    assert not await store.acquire_lease("run-1", "worker-b", 30)
    await store.release_lease("run-1", "worker-a")
    assert await store.acquire_lease("run-1", "worker-b", 30)
    assert await store.acquire_lease("run-2", "worker-a", 30)  # leases are per run


async def test_lease_expires_after_its_ttl(store: Store) -> None:
    assert await store.acquire_lease("run-1", "worker-a", 0.3)
    assert not await store.acquire_lease("run-1", "worker-b", 0.3)
    await wait_until(lambda: store.acquire_lease("run-1", "worker-b", 30))
    assert not await store.acquire_lease("run-1", "worker-a", 30)


async def test_renewal_extends_the_lease(store: Store) -> None:
    assert await store.acquire_lease("run-1", "worker-a", 1.0)
    await asyncio.sleep(0.6)
    assert await store.acquire_lease("run-1", "worker-a", 1.0)
    await asyncio.sleep(0.6)  # past the first expiry, within the renewed one
    assert not await store.acquire_lease("run-1", "worker-b", 30)


# -- keyed side effects -------------------------------------------------------------
async def test_first_sight_is_true_once_then_again_after_its_ttl(store: Store) -> None:
    assert await store.first_sight("Ev01")
    assert not await store.first_sight("Ev01")
    assert await store.first_sight("Ev02")
    assert await store.first_sight("Ev03", ttl=0.2)
    assert not await store.first_sight("Ev03", ttl=0.2)
    await wait_until(lambda: store.first_sight("Ev03", ttl=30))
    assert not await store.first_sight("Ev03")


async def test_concurrent_first_sights_admit_one(store: Store) -> None:
    seen = await asyncio.gather(*(store.first_sight("Ev-dup") for _ in range(10)))
    assert seen.count(True) == 1


async def test_post_records(store: Store) -> None:
    assert await store.get_post("run-1:4") is None
    await store.put_post("run-1:4", "1700000000.000200")
    assert await store.get_post("run-1:4") == "1700000000.000200"
    assert await store.get_post("run-1:5") is None


async def test_kv_is_namespaced(store: Store) -> None:
    assert await store.kv_get("discord", "webhook:C1") is None
    await store.kv_set("discord", "webhook:C1", "https://hook/1")
    await store.kv_set("slack", "webhook:C1", "other")
    await store.kv_set("discord", "webhook:C1", "https://hook/2")
    assert await store.kv_get("discord", "webhook:C1") == "https://hook/2"
    assert await store.kv_get("slack", "webhook:C1") == "other"


async def test_active_runs(store: Store) -> None:
    for i in (1, 2, 3):
        await new_run(store, f"run-{i}", f"{THREAD}-{i}")
    assert sorted(await store.active_runs()) == ["run-1", "run-2", "run-3"]  # from birth
    for i in (1, 2, 3):
        await store.set_active(f"run-{i}", False)
    assert await store.active_runs() == []
    for i in (1, 2, 3):
        await store.set_active(f"run-{i}", True)
    await store.set_active("run-2", False)
    await store.set_active("run-2", False)
    assert sorted(await store.active_runs()) == ["run-1", "run-3"]


async def test_deadlines_come_due_once_in_order(store: Store) -> None:
    await store.set_deadline("run-late", 1_000_300.0)
    await store.set_deadline("run-soon", 1_000_100.0)
    await store.set_deadline("run-moved", 1_000_050.0)
    await store.set_deadline("run-moved", 1_000_200.0)  # a later wait sets a new deadline
    await store.set_deadline("run-gone", 1_000_000.0)
    await store.set_deadline("run-gone", None)  # it finished: never wake it
    assert await store.due_runs(999_999.0) == []
    assert await store.due_runs(1_000_250.0, grace=60) == ["run-soon", "run-moved"]
    assert await store.due_runs(1_000_250.0) == []  # taken: each goes to one caller
    await store.set_deadline("run-soon", None)  # handled: it finished
    # run-moved's taker died without handling it: it comes round again after the grace.
    taken = await asyncio.gather(*(store.due_runs(1_000_320.0) for _ in range(4)))
    assert sorted(r for runs in taken for r in runs) == ["run-late", "run-moved"]


# -- work queue -----------------------------------------------------------------
async def test_each_queued_run_goes_to_one_consumer(store: Store) -> None:
    wanted = [f"run-{i}" for i in range(25)]
    got: dict[str, list[str]] = {"c1": [], "c2": []}

    async def consume(name: str) -> None:
        while sum(map(len, got.values())) < len(wanted):
            for receipt, run_id in await store.next_work(name, 0.05):
                got[name].append(run_id)
                await store.ack_work(receipt)

    for run_id in wanted:
        await store.enqueue(run_id)
    await asyncio.wait_for(asyncio.gather(consume("c1"), consume("c2")), 10)
    assert sorted(got["c1"] + got["c2"]) == sorted(wanted)
    assert await store.next_work("c1", 0.05) == []


async def test_next_work_waits_for_work(store: Store) -> None:
    started = time.monotonic()
    assert await store.next_work("c1", 0.2) == []
    assert time.monotonic() - started >= 0.15
    waiter = asyncio.create_task(store.next_work("c1", 5))
    await asyncio.sleep(0.05)
    await store.enqueue("run-9")
    [(receipt, run_id)] = await asyncio.wait_for(waiter, 5)
    assert run_id == "run-9"
    await store.ack_work(receipt)


@pytest.mark.parametrize("backend", ["sqlite", "redis", "cluster"])
async def test_work_of_a_dead_consumer_is_reclaimed(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "redis":
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
        store: Store = RedisStore(url, prefix, reclaim_after=0.2)
    elif backend == "cluster":
        url = request.getfixturevalue("redis_cluster_url")
        store = RedisStore(url, request.getfixturevalue("cluster_prefix"), reclaim_after=0.2)
    else:
        store = SQLiteStore(str(tmp_path / "s.sqlite3"), reclaim_after=0.2)
    await store.start()
    try:
        await store.enqueue("run-1")
        [(_, run_id)] = await store.next_work("dies", 1)  # taken, never acked
        assert run_id == "run-1"
        reclaimed: list[tuple[str, str]] = []

        async def picked_up() -> bool:
            reclaimed.extend(await store.next_work("survivor", 0.05))
            return bool(reclaimed)

        await wait_until(picked_up)
        assert [r for _, r in reclaimed] == ["run-1"]
        await store.ack_work(reclaimed[0][0])
        await asyncio.sleep(0.3)
        assert await store.next_work("survivor", 0.05) == []
    finally:
        await store.aclose()


# -- durability --------------------------------------------------------------------
async def test_everything_survives_reopening(store_factory: Callable[[], Awaitable[Store]]) -> None:
    first = await store_factory()
    await new_run(first, "run-1", THREAD, n=2)
    await first.append("run-1", 2, [ev("HumanMessage", text="ünïcode")])
    await first.set_active("run-1", True)
    await first.put_post("run-1:2", "m-42")
    await first.kv_set("slack", "bot_user", "U0BOT")
    assert await first.first_sight("Ev01")
    assert await first.acquire_lease("run-1", "worker-a", 30)
    await first.aclose()

    second = await store_factory()
    assert await second.load("run-1") == [
        ev("TaskStarted", i=0), ev("TaskStarted", i=1), ev("HumanMessage", text="ünïcode"),
    ]
    assert await second.run_for_thread(THREAD) == "run-1"
    assert await second.active_runs() == ["run-1"]
    assert await second.get_post("run-1:2") == "m-42"
    assert await second.kv_get("slack", "bot_user") == "U0BOT"
    assert not await second.first_sight("Ev01")
    assert not await second.acquire_lease("run-1", "worker-b", 30)
    assert [r.run_id for r in await second.runs()] == ["run-1"]
    assert await second.append("run-1", 3, [ev("AgentMessage")]) == 4


# -- SQLite: group commit, a free event loop, useful errors --------------------------
async def test_sqlite_group_commits_concurrent_appends(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.sqlite3"))
    await store.start()
    try:
        await asyncio.gather(*(new_run(store, f"run-{i}", f"t-{i}") for i in range(500)))
        before = store._writer.batches
        lengths = await asyncio.gather(
            *(store.append(f"run-{i}", 1, [ev("AgentMessage", i=i)]) for i in range(500))
        )
        assert lengths == [2] * 500
        assert store._writer.batches - before < 100  # many appends per transaction
    finally:
        await store.aclose()
    reopened = SQLiteStore(str(tmp_path / "s.sqlite3"))
    await reopened.start()
    try:
        for i in (0, 250, 499):
            assert (await reopened.load(f"run-{i}"))[1] == ev("AgentMessage", i=i)
    finally:
        await reopened.aclose()


async def test_sqlite_does_not_block_the_event_loop(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "s.sqlite3"))
    await store.start()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    try:
        await asyncio.gather(*(new_run(store, f"run-{i}", f"t-{i}") for i in range(200)))
        ticking = asyncio.create_task(ticker())
        payload = "y" * 2000

        async def drive(i: int) -> None:
            for n in range(1, 11):
                await store.append(f"run-{i}", n, [ev("AgentMessage", text=payload)])

        await asyncio.gather(*(drive(i) for i in range(200)))
        stop.set()
        await ticking
    finally:
        await store.aclose()
    assert len(gaps) > 5
    assert max(gaps) < 0.25, f"the loop stalled for {max(gaps):.3f}s"


async def test_sqlite_creates_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "threadteam.sqlite3"
    store = SQLiteStore(str(path))
    await store.start()
    await store.aclose()
    assert path.exists()


async def test_sqlite_unopenable_path_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    path = str(blocker / "threadteam.sqlite3")
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match=re.escape(path)):
        await store.start()
    with pytest.raises(StoreError, match="start"):  # a failed start leaves nothing to hang on
        await store.load("run-1")


async def test_sqlite_calls_before_start_say_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="start"):
        await SQLiteStore(str(tmp_path / "s.sqlite3")).load("run-1")


async def test_redis_unreachable_names_host_port_not_password() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore(f"redis://:hunter2@127.0.0.1:{port}/0")
    with pytest.raises(StoreError) as caught:
        await store.start()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    await store.aclose()


async def test_sqlite_an_operation_failing_halfway_undoes_only_itself(tmp_path: Path) -> None:
    # Drives the writer directly: no public call fails halfway on purpose.
    store = SQLiteStore(str(tmp_path / "s.sqlite3"))
    await store.start()
    writer = store._writer

    def put(conn, key: str, fail: bool) -> str:
        conn.execute("INSERT INTO kv (namespace, key, value) VALUES ('t', ?, 'v')", (key,))
        if fail:
            raise RuntimeError("disk gremlin")
        return key

    try:
        results = await asyncio.gather(
            writer.submit(put, "a", False), writer.submit(put, "b", True),
            writer.submit(put, "c", False), return_exceptions=True,
        )
        assert results[0] == "a" and results[2] == "c"
        assert isinstance(results[1], StoreError) and "disk gremlin" in str(results[1])
        assert [await store.kv_get("t", k) for k in "abc"] == ["v", None, "v"]
    finally:
        await store.aclose()


async def test_redis_work_queue_survives_a_lost_consumer_group(
    redis_url: str, redis_prefix: str
) -> None:
    store = RedisStore(redis_url, redis_prefix)
    await store.start()
    try:
        # As after a restart of a Redis that keeps nothing on disk.
        with redis.Redis.from_url(redis_url) as admin:
            admin.delete(f"{redis_prefix}work")
        await store.enqueue("run-1")
        [(receipt, run_id)] = await store.next_work("c1", 1)
        assert run_id == "run-1"
        await store.ack_work(receipt)
    finally:
        await store.aclose()


async def test_runs_listing_with_no_room(store: Store) -> None:
    await new_run(store)
    assert await store.runs(limit=0) == []
    assert await store.runs(limit=-1) == []


async def test_a_cancelled_appender_does_not_disturb_the_others(store: Store) -> None:
    for i in range(20):
        await new_run(store, f"run-{i}", f"{THREAD}-{i}")
    appends = [asyncio.create_task(store.append(f"run-{i}", 1, [ev("AgentMessage")]))
               for i in range(20)]
    await asyncio.sleep(0)  # all are queued (and for Redis, pipelined together)
    appends[0].cancel()
    results = await asyncio.gather(*appends[1:])
    assert results == [2] * 19
    assert [r.run_id for r in await store.runs(limit=19)] == [f"run-{i}" for i in range(19, 0, -1)]
