"""The Redis store on a real Redis Cluster: found without being told, keys where the
store's key table says, work handed out once, and failures in plain words.

The contract suites (test_store_contract.py, test_store_appends.py, test_store_poison.py)
run on the session's three-node cluster too; the failures here need clusters of their
own, made small and broken on purpose: one node missing slots, a node killed, two
nodes that send each other's keys back and forth.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from tests.fakes.redis_server import start_redis_cluster, stop_servers
from threadteam.bot.errors import PermanentStoreError, StoreError
from threadteam.bot.stores import RedisStore, open_store

THREAD = "slack:T1:C1:1700000000.000100"


def ev(kind: str, **fields: object) -> str:
    return json.dumps({"kind": kind, **fields})


def slot(key: str) -> int:
    return key_slot(key.encode())


def _node_of(admin: redis.RedisCluster, key: str) -> str:
    node = admin.get_node_from_key(key)
    assert node is not None
    return str(node.name)


@pytest.fixture
def admin(redis_cluster_url: str) -> Iterator[redis.RedisCluster]:
    client = redis.RedisCluster.from_url(redis_cluster_url, decode_responses=True)
    yield client
    client.close()


async def test_a_cluster_is_found_and_keys_live_where_the_key_table_says(
        redis_cluster_url: str, cluster_prefix: str, admin: redis.RedisCluster) -> None:
    store = open_store(f"{redis_cluster_url}?prefix={cluster_prefix}")
    assert isinstance(store, RedisStore) and store.cluster is None
    await store.start()
    try:
        assert store.cluster is True
        for i in range(30):
            assert await store.create_run(f"run-{i}", f"{THREAD}-{i}", [ev("TaskStarted")])
            assert await store.append(f"run-{i}", 1, [ev("AgentMessage", i=i)]) == 2
            await store.append_external(f"run-{i}", [ev("HumanMessage")], key=f"ev-{i}")
            assert await store.acquire_lease(f"run-{i}", "w", 30)
        await store.set_deadline("run-0", 1.0)
        await store.enqueue("run-1", "slack")
        await store.put_post("run-2:3", "m1")
        assert await store.first_sight("Ev1")
        await store.kv_set("limits", "u", "[]")
    finally:
        await store.aclose()

    keys = list(admin.scan_iter(match=f"{cluster_prefix}*", count=1000,
                                target_nodes=redis.RedisCluster.PRIMARIES))
    index = {k for k in keys if k.startswith(f"{cluster_prefix}{{{cluster_prefix}}}")}
    assert {k.rsplit("}", 1)[1] for k in index} == {"runs", "active", "deadlines", "work",
                                                     "work:slack"}
    assert {slot(k) for k in index} == {slot(f"{{{cluster_prefix}}}")}  # one known slot
    runs = [k for k in keys if k.startswith(f"{cluster_prefix}{{run-")]
    for i in range(30):  # each run's keys together, in the slot of {run-i}
        mine = {k for k in runs if k.startswith(f"{cluster_prefix}{{run-{i}}}")}
        assert len(mine) == 4 and {slot(k) for k in mine} == {slot(f"{{run-{i}}}")}
    # Runs are spread over the cluster: that is what it buys.
    assert len({_node_of(admin, k) for k in runs}) == 3


async def test_work_is_handed_out_once_across_workers_on_the_cluster(
        redis_cluster_url: str, cluster_prefix: str) -> None:
    workers = [RedisStore(redis_cluster_url, cluster_prefix) for _ in range(3)]
    for w in workers:
        await w.start()
    try:
        await asyncio.gather(*(workers[i % 3].enqueue(f"run-{i}") for i in range(60)))
        taken: list[str] = []

        async def take(worker: RedisStore, name: str) -> None:
            while len(taken) < 60:
                for receipt, run_id in await worker.next_work(name, 0.05):
                    taken.append(run_id)
                    await worker.ack_work(receipt)

        await asyncio.wait_for(asyncio.gather(
            *(take(w, f"c{i}") for i, w in enumerate(workers))), 20)
        assert sorted(taken) == sorted(f"run-{i}" for i in range(60))  # each exactly once
    finally:
        for w in workers:
            await w.aclose()


async def test_cluster_true_on_a_plain_server_is_one_sentence(
        redis_url: str, redis_prefix: str) -> None:
    store = RedisStore(redis_url, redis_prefix, cluster=True)
    with pytest.raises(PermanentStoreError) as caught:
        await store.start()
    assert "not a cluster node" in str(caught.value)
    assert "cluster=true" in str(caught.value)
    await store.aclose()


async def test_a_plain_server_is_not_taken_for_a_cluster(redis_url: str, redis_prefix: str
                                                        ) -> None:
    store = RedisStore(redis_url, redis_prefix)
    await store.start()
    try:
        assert store.cluster is False
        await store.enqueue("run-1")
        with redis.Redis.from_url(redis_url) as admin:  # the names it always had
            assert admin.exists(f"{redis_prefix}work")
    finally:
        await store.aclose()


async def test_cluster_false_on_a_cluster_names_the_cluster_never_a_bare_moved(
        redis_cluster_url: str, cluster_prefix: str) -> None:
    store = RedisStore(redis_cluster_url, cluster_prefix, cluster=False)
    try:
        with pytest.raises(PermanentStoreError) as caught:
            await store.start()  # refused at once, not at the first key of another node
        message = str(caught.value)
        assert "is a Redis Cluster node" in message and "cluster=false" in message
        assert "MOVED" not in message
    finally:
        await store.aclose()


async def test_a_database_other_than_0_on_a_cluster_is_one_sentence(
        redis_cluster_url: str) -> None:
    store = RedisStore(redis_cluster_url.rsplit("/", 1)[0] + "/3", "t:")
    with pytest.raises(PermanentStoreError) as caught:
        await store.start()
    assert str(caught.value).endswith("a cluster has only database 0: end THREADTEAM_STORE "
                                      "with /0.")
    await store.aclose()


def _assign(port: int, first: int, last: int) -> None:
    with redis.Redis(port=port) as node:
        node.execute_command("CLUSTER ADDSLOTSRANGE", first, last)


async def test_a_cluster_with_slots_no_node_serves_is_named(tmp_path: Path) -> None:
    processes, [port] = start_redis_cluster(tmp_path, 1, join=False)
    try:
        _assign(port, 0, 999)
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        with pytest.raises(StoreError) as caught:
            await store.start()
        message = str(caught.value)
        assert "served by no node (1000 of 16384 slots are)" in message
        assert f"redis-cli --cluster check 127.0.0.1:{port}" in message
        await store.aclose()
    finally:
        stop_servers(processes)


def _join(ports: list[int], buses: list[int]) -> None:
    with redis.Redis(port=ports[0]) as first:
        for port, bus in zip(ports[1:], buses[1:], strict=True):
            first.execute_command("CLUSTER MEET", "127.0.0.1", port, bus)


def _wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _state_ok(port: int) -> bool:
    with redis.Redis(port=port, decode_responses=True) as node:
        info = node.execute_command("CLUSTER INFO")
    return "cluster_state:ok" in str(info) or "'cluster_state': 'ok'" in str(info)


def _wait_ok(ports: list[int]) -> None:
    _wait_until(lambda: all(_state_ok(p) for p in ports), "the cluster settles")


def _slot_ports(port: int) -> dict[int, int]:
    """What the node on `port` tells clients: first slot of each range -> its port."""
    with redis.Redis(port=port, decode_responses=True) as node:
        ranges = node.execute_command("CLUSTER SLOTS")
    if isinstance(ranges, dict):  # parsed by redis-py: {(first, last): {"primary": (h, p)}}
        return {first: int(v["primary"][1]) for (first, _), v in ranges.items()}
    return {int(r[0]): int(r[2][1]) for r in ranges}


def _two_nodes(tmp_path: Path, *extra: str) -> tuple[list, list[int]]:
    """Two primaries, slots 0-8191 and 8192-16383, joined by CLUSTER MEET."""
    processes, ports = start_redis_cluster(tmp_path, 2, join=False, extra=extra)
    buses = [_bus_of(p) for p in ports]
    _assign(ports[0], 0, 8191)
    _assign(ports[1], 8192, 16383)
    _join(ports, buses)
    return processes, ports


def _bus_of(port: int) -> int:
    with redis.Redis(port=port, decode_responses=True) as node:
        return int(node.config_get("cluster-port")["cluster-port"])


def _key_on(port_index: int) -> str:
    """A run id whose keys land on the node of `port_index` (0: slots 0-8191)."""
    for i in range(1000):
        if (slot(f"{{r{i}}}") >= 8192) == bool(port_index):
            return f"r{i}"
    raise AssertionError("no such run id")


async def test_a_node_that_dies_is_named_and_the_store_says_so_in_words(tmp_path: Path) -> None:
    processes, ports = _two_nodes(tmp_path)
    try:
        _wait_ok(ports)
        store = RedisStore(f"redis://127.0.0.1:{ports[0]}/0", "t:")
        await store.start()
        run_id = _key_on(1)
        processes[1].kill()
        processes[1].wait()
        with pytest.raises(StoreError) as caught:
            await store.load(run_id)
        message = str(caught.value)
        # Two primaries: the survivor alone is no majority, so it never calls the dead
        # one failed (no CLUSTERDOWN); what the store says is the node it lost.
        assert message.startswith(f"Could not reach node 127.0.0.1:{ports[1]} of the Redis "
                                  f"Cluster at 127.0.0.1:{ports[0]}: ")
        assert "MOVED" not in message and "TTL" not in message
        await store.aclose()
    finally:
        stop_servers(processes)


async def test_a_redirect_loop_is_named(tmp_path: Path) -> None:
    # Each node announces the other's port: a key is sent to the node that does not
    # serve it, which sends it "back to itself", for ever.
    processes, ports = start_redis_cluster(tmp_path, 2, join=False)
    try:
        buses = [_bus_of(p) for p in ports]
        _assign(ports[0], 0, 8191)
        _assign(ports[1], 8192, 16383)
        _join(ports, buses)
        _wait_ok(ports)
        for port, other in ((ports[0], ports[1]), (ports[1], ports[0])):
            with redis.Redis(port=port) as node:
                node.config_set("cluster-announce-port", other)
        swapped = {0: ports[1], 8192: ports[0]}
        _wait_until(lambda: all(_slot_ports(p) == swapped for p in ports),
                    "both nodes announce each other's port")

        async def looping() -> StoreError:
            store = RedisStore(f"redis://127.0.0.1:{ports[0]}/0", "t:", cluster=True)
            try:
                await store.start()
                await store.load(_key_on(0))
                await store.load(_key_on(1))
            except StoreError as exc:
                return exc
            finally:
                await store.aclose()
            raise AssertionError("no redirect loop")

        caught = await asyncio.wait_for(looping(), 30)
        message = str(caught)
        assert "redirect loop" in message and "MOVED" not in message
    finally:
        stop_servers(processes)
