"""Two `threadteam run slack` workers on a real three-node Redis Cluster, behind one
load balancer, serving 20 runs summoned at once through the Slack fake.

Every run completes exactly once; the worker driving the most runs is SIGKILLed
mid-way and its runs are finished by the other (the lease is shortened to 1 s through
THREADTEAM_LEASE_TTL), with no post made twice. Slack takes 0.2 s to answer each post
(a post may land and its answer be lost with the worker), so runs are in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web

from tests.fakes.redis_server import _free_ports
from tests.fakes.slack import ALICE, BOT_ID, BOT_USER, CHANNEL, FakeSlack

RUNS = 20
AGENTS = ("Bull", "Bear", "Synthesis")
TEAM = """\
name: trio
description: Three agents, one message each.
strategy: round_robin
agents:
  - {name: bull, persona: {display_name: Bull}, system_message: Argue for.}
  - {name: bear, persona: {display_name: Bear}, system_message: Argue against.}
  - {name: synthesis, persona: {display_name: Synthesis}, system_message: Weigh both.}
termination: {max_messages: 3}
"""


class BalancedSlack(FakeSlack):
    """The fake Slack behind a load balancer: each delivery goes to the next worker, and
    to the one after if that one is down. Posts are answered `post_latency` s late."""

    def __init__(self, post_latency: float) -> None:
        super().__init__()
        self.echo = False  # the workers ignore their own posts; spare the CPU
        self.workers: list[str] = []
        self.post_latency = post_latency
        self._turn = itertools.count()

    async def post_signed(self, body: str, headers: dict[str, str] | None = None,
                          **kwargs: Any) -> tuple[int, str]:
        error: Exception | None = None
        for _ in self.workers:
            # Read synchronously by the call below, before it first waits.
            self.events_url = self.workers[next(self._turn) % len(self.workers)]
            try:
                return await super().post_signed(body, headers, **kwargs)
            except aiohttp.ClientConnectionError as exc:
                error = exc
        raise AssertionError(f"no worker took the event: {error}")

    async def _api(self, request: web.Request) -> web.StreamResponse:
        response = await super()._api(request)
        if request.match_info["method"] == "chat.postMessage":
            await asyncio.sleep(self.post_latency)  # landed; the answer is on its way
        return response

    def posts(self) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m.get("bot_id") == BOT_ID]


class Worker:
    """`threadteam run slack` in a child process, on the cluster."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.port, self.log = port, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "threadteam.adapters.cli", "run", "slack",
                 "--port", str(port), "--bind", "127.0.0.1"],
                env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    async def ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"worker exited:\n{self.log.read_text()}"
            try:
                async with session.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert time.monotonic() < deadline, f"worker never served:\n{self.log.read_text()}"
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def lease_holders(admin: redis.RedisCluster, prefix: str) -> dict[str, str]:
    """run id -> the worker id holding its lease, read off the cluster."""
    keys = list(admin.scan_iter(match=f"{prefix}{{*}}:lease", count=1000,
                                target_nodes=redis.RedisCluster.PRIMARIES))
    held = {k[len(prefix) + 1:k.rindex("}")]: admin.get(k) for k in keys}
    return {run: owner for run, owner in held.items() if owner}


async def wait_for(check: Any, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def stuck(fake: BalancedSlack, summons: list[str], finished: Any,
                admin: redis.RedisCluster, prefix: str, url: str, survivor: Worker) -> str:
    """What the store and Slack hold of the runs that did not finish, for the failure."""
    from threadteam.bot.stores import open_store

    store = open_store(f"{url}?prefix={prefix}")
    await store.start()
    lines = []
    try:
        holders, active = lease_holders(admin, prefix), await store.active_runs()
        for ts in (ts for ts in summons if not finished(ts)):
            run = await store.run_for_thread(f"slack:T0FAKE:{CHANNEL}:{ts}")
            log = [e[:60] for e in await store.load(run)] if run else []
            lines.append(f"thread {ts}: posts {[m.get('username') for m in fake.thread(CHANNEL, ts)]}"
                         f"; run {run} active={run in active} lease={holders.get(run or '')}"
                         f" log={log}")
        lines.append(f"inbox: {sorted(await store.kv_items('inbox:slack'))}")
    finally:
        await store.aclose()
    return "\n".join(["runs that never finished:", *lines, "survivor's log:",
                      survivor.log.read_text()[-4000:]])


@pytest.fixture
def workers_env(tmp_path: Path, redis_cluster_url: str, cluster_prefix: str) -> dict[str, str]:
    teams = tmp_path / "teams"
    teams.mkdir()
    (teams / "trio.yaml").write_text(TEAM)
    return {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1",
        "THREADTEAM_STORE": f"{redis_cluster_url}?prefix={cluster_prefix}",
        "THREADTEAM_MODEL": "rehearsal", "THREADTEAM_TEAMS_DIR": str(teams),
        "THREADTEAM_LEASE_TTL": "1",
        "THREADTEAM_MAX_ACTIVE_RUNS_PER_USER": "100", "THREADTEAM_MAX_RUNS_PER_HOUR": "1000",
    }


async def test_two_workers_on_a_cluster_finish_every_run_once_through_a_sigkill(
        workers_env: dict[str, str], cluster_prefix: str, redis_cluster_url: str,
        tmp_path: Path) -> None:
    fake = BalancedSlack(post_latency=0.2)
    await fake.start()
    env = {**workers_env, **fake.env()}
    workers = [Worker(env, port, tmp_path / f"worker-{port}.log") for port in _free_ports(2)]
    admin = redis.RedisCluster.from_url(redis_cluster_url, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(w.ready(session) for w in workers))
        fake.workers = [w.url for w in workers]

        summons = await asyncio.gather(*(
            fake.say(ALICE, f"<@{BOT_USER}> trio Task number {i}: should we ship?")
            for i in range(RUNS)))

        def agent_posts() -> list[dict[str, Any]]:
            return [m for m in fake.posts() if m.get("username") in AGENTS]

        # Kill, mid-way, the worker holding the most leases of unfinished runs.
        await wait_for(lambda: len(agent_posts()) >= RUNS, "a third of the agents posted")
        holders = lease_holders(admin, cluster_prefix)
        by_worker = Counter(owner.split("-")[-2] for owner in holders.values())
        assert by_worker, "no run was in flight when the worker was to be killed"
        victim_pid = by_worker.most_common(1)[0][0]
        victim = next(w for w in workers if str(w.proc.pid) == victim_pid)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        survivor = next(w for w in workers if w is not victim)

        def finished(ts: str) -> bool:
            return any(str(m.get("text", "")).startswith("Finished")
                       for m in fake.thread(CHANNEL, ts))

        # An event the victim kept in its inbox and never handed over is handed over by
        # the survivor after the inbox's 5 s; a run it drove, once its 1 s lease lapses.
        try:
            await wait_for(lambda: all(finished(ts) for ts in summons), "every run finished",
                           within=30)
        except AssertionError:
            raise AssertionError(await stuck(fake, summons, finished, admin, cluster_prefix,
                                             redis_cluster_url, survivor)) from None
        await asyncio.sleep(1.5)  # a lease's length more: nothing further may be posted
        assert survivor.proc.poll() is None, survivor.log.read_text()

        for ts in summons:  # each run once: three agents, one each, then one "Finished"
            said = [m.get("username") or m["text"].split(":")[0] for m in fake.thread(CHANNEL, ts)]
            assert [s for s in said if s in AGENTS] == list(AGENTS), said
            assert said.count("Finished") == 1, said
        texts = Counter((m.get("thread_ts"), m.get("username"), m.get("text"))
                        for m in fake.posts())
        assert [t for t, n in texts.items() if n > 1] == []  # no post twice
        keys = Counter((p["key"], p.get("part")) for m in fake.posts()
                       if (p := (m.get("metadata") or {}).get("event_payload") or {}).get("key"))
        assert keys and max(keys.values()) == 1
    finally:
        for w in workers:
            w.stop()
        admin.close()
        await fake.aclose()
