"""The Redis store's connections, on a real redis-server of this test's own (a paused
server would hold up every other test on a shared one): a server that stalls for longer
than redis-py's default read timeout is waited for, and an idle connection is watched by
TCP keepalive, so a server gone without a word is noticed in seconds, not hours."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.fakes.redis_server import start_redis_server
from threadteam.bot.stores import RedisStore

THREAD = "slack:T1:C1:1700000000.000100"
STARTED = json.dumps({"kind": "TaskStarted"})
SAID = json.dumps({"kind": "HumanMessage", "user": "U1", "text": "still there?"})


@pytest.fixture
def own_redis(tmp_path: Path):
    process, port = start_redis_server(tmp_path)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_a_server_that_stalls_longer_than_five_seconds_is_waited_for(own_redis: int
                                                                           ) -> None:
    store = RedisStore(f"redis://127.0.0.1:{own_redis}/0", "stall:")
    await store.start()
    try:
        assert await store.create_run("run-1", THREAD, [STARTED])
        with redis.Redis(port=own_redis) as admin:  # as a failover or a slow fork would
            admin.execute_command("CLIENT", "PAUSE", 6500, "ALL")
        began = time.monotonic()
        assert await store.append("run-1", 1, [SAID]) == 2
        assert time.monotonic() - began > 5  # the server did stall; the write waited
        assert await store.load("run-1") == [STARTED, SAID]
    finally:
        await store.aclose()


def _keepalive_timers(port: int) -> list[float]:
    """Seconds to the next keepalive probe of each connection to `port` on this machine
    that has one armed (/proc/net/tcp: timer 2 is keepalive, its time in 1/100 s)."""
    timers = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, timer = fields[2], fields[5]
        active, when = timer.split(":")
        if int(remote.split(":")[1], 16) == port and active == "02":
            timers.append(int(when, 16) / 100)
    return timers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/net/tcp")
async def test_idle_connections_probe_the_server_within_seconds(own_redis: int) -> None:
    store = RedisStore(f"redis://127.0.0.1:{own_redis}/0", "probe:")
    await store.start()
    try:
        await asyncio.gather(*(store.create_run(f"run-{i}", THREAD + str(i), [STARTED])
                               for i in range(4)))
        timers = _keepalive_timers(own_redis)
        assert timers, "no connection to the server has a keepalive probe armed"
        assert max(timers) <= 10  # not redis-py's 30 s, nor the system's two hours
    finally:
        await store.aclose()
