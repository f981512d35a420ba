"""Many runs at once in one host process: wall time against the latency bound, CPU, peak RSS.

    .venv/bin/python benchmarks/concurrency.py [--runs 1000] [--store sqlite,redis,cluster]
                                               [--openai] [--openai-runs 200] [--no-autogen]

Each run is a 3-agent round-robin team that stops after 6 agent messages. Every
model call takes 200 ms (`asyncio.sleep` in an in-process model), so a run can
not finish faster than 6 x 0.2 = 1.2 s: the latency bound. All runs are summoned
at once through `Host.handle`, as an adapter would, and a run counts as done when
the poster has received its 6 agent posts and its "Finished" notice.

AutoGen is measured in the same invocation when the `bench` extra is installed
(`pip install -e '.[bench]'`): the same number of AutoGen RoundRobinGroupChat teams
of the same shape (3 agents, 6 agent messages, a model client that answers after
200 ms), all started at once in one child process of its own. It keeps its runs in
memory, with no store and no platform, so its row is a floor for what it would
cost. Without the extra, the AutoGen row says it was not measured: no figure here
is ever one this script did not measure.

Each measurement runs in a fresh child process, so its peak RSS (ru_maxrss) is
its own. CPU is the child's user+sys time while the runs are in flight, all
threads included (the SQLite writer thread too).

- SQLite: a temp file. Redis: REDIS_URL, else a throw-away `redis-server` started
  here. Cluster: REDIS_CLUSTER_URL (any node), else a throw-away three-node Redis
  Cluster (`redis-server --cluster-enabled yes` x3, `redis-cli --cluster create`).
  Both under a unique key prefix whose keys are deleted afterwards.
- Store commands per agent message (Redis and cluster rows): the servers' own count
  (INFO commandstats, every node of a cluster, the commands Lua scripts run inside
  included) over the timed runs, divided by the agent messages posted. On a server
  given by REDIS_URL / REDIS_CLUSTER_URL, other clients' commands would count too.
- --openai: the same runs (a smaller count) through the real `openai` client
  against a local fake Chat Completions server in another process, which
  answers each request after 200 ms. CPU per model call next to the scripted
  model's shows what the client library costs on top of the host.

Loopback only; every child is bounded in time. Targets (SQLite): wall <= 1.5x the
bound (1.8 s) and peak RSS < 150 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MESSAGES = 6
LATENCY = 0.2
BOUND = MESSAGES * LATENCY
CHILD_TIMEOUT = 180.0  # seconds one measurement may take, start-up and clean-up included
TEAM = """\
name: trio
description: Three agents take turns until six messages.
strategy: round_robin
model: {model}
agents:
  - {{name: bull, persona: {{display_name: Bull, avatar: ":ox:"}}, system_message: Argue for.}}
  - {{name: bear, persona: {{display_name: Bear, avatar: ":bear:"}}, system_message: Argue against.}}
  - {{name: synthesis, persona: {{display_name: Synthesis}}, system_message: Weigh both sides.}}
termination: {{max_messages: {messages}}}
"""
TASK = "Should a small bakery move its ordering to an app?"
OPENAI_MODEL = "openai:gpt-4o-mini"


# -- the parent: one child process per measurement ----------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="concurrent runs (default 1000)")
    parser.add_argument("--store", default="both",
                        help="comma-separated: sqlite, redis, cluster; 'both' is sqlite,redis "
                             "and 'all' adds the cluster (default both)")
    parser.add_argument("--openai", action="store_true",
                        help="also run through the real openai client against a local fake")
    parser.add_argument("--openai-runs", type=int, default=200,
                        help="concurrent runs for --openai (default 200)")
    parser.add_argument("--no-autogen", action="store_true",
                        help="do not measure AutoGen even when the bench extra is installed")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each row this many times; print the fastest (default 1)")
    parser.add_argument("--child", nargs=2, metavar=("STORE", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-fake-openai", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--openai-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--store-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake_openai:
        asyncio.run(serve_fake_openai())
        return 0
    if args.child:
        store, model = args.child
        if model == "autogen":
            print(json.dumps(asyncio.run(measure_autogen(args.runs))))
        else:
            print(json.dumps(asyncio.run(measure(store, model, args.runs, args.openai_url,
                                                 args.store_url))))
        return 0

    named = {"both": "sqlite,redis", "all": "sqlite,redis,cluster"}.get(args.store, args.store)
    stores = [s.strip() for s in named.split(",") if s.strip()]
    if not stores or set(stores) - {"sqlite", "redis", "cluster"}:
        parser.error(f"--store: sqlite, redis, cluster (comma-separated), both or all; "
                     f"got {args.store!r}")
    print(f"{MESSAGES} messages a run, each model call {LATENCY * 1000:.0f} ms: "
          f"latency bound {BOUND:.1f} s; target on SQLite <= {1.5 * BOUND:.1f} s and < 150 MiB")
    print(f"{'runs':>5}  {'store':<7} {'model':<15} {'wall s':>7} {'x bound':>8} {'CPU s':>6} "
          f"{'CPU ms/call':>11} {'peak MiB':>9} {'base MiB':>9} {'cmds/msg':>8}  posts")
    failed = False
    per_call: dict[tuple[str, str], float] = {}  # CPU ms per model call
    rows: list[tuple[int, str, str, str]] = [(args.runs, s, "scripted", "") for s in stores]
    fake: subprocess.Popen[str] | None = None
    servers = Servers()
    try:
        if args.openai:
            fake, url = start_fake_openai()
            rows += [(args.openai_runs, s, "openai", url) for s in stores]
        autogen = not args.no_autogen and autogen_installed()
        if autogen:
            rows.append((args.runs, "memory", "autogen", ""))
        for runs, store, model, url in rows:
            store_url = servers.url(store)
            if store in ("redis", "cluster") and not store_url:
                print(f"{runs:>5}  {store:<7} {model:<15} skipped: {servers.why[store]}")
                continue
            results = [run_child(store, model, runs, url, store_url)
                       for _ in range(max(args.repeat, 1))]
            ok = [r for r in results if "error" not in r]
            best = min(ok, key=lambda r: r["wall"]) if ok else results[0]
            best["median"] = statistics.median(r["wall"] for r in ok) if len(ok) > 1 else None
            complete = print_row(runs, store, model, best) and len(ok) == len(results)
            failed |= not complete and model != "autogen"  # the targets are ours, not AutoGen's
            if ok:
                per_call[store, model] = best["cpu"] / best["calls"] * 1000
    finally:
        if fake is not None:
            fake.send_signal(signal.SIGTERM)
            fake.wait(10)
        servers.stop()
    for store in stores:
        if (store, "scripted") in per_call and (store, "openai") in per_call:
            client = per_call[store, "openai"] - per_call[store, "scripted"]
            print(f"{store}: the openai client adds {client:.2f} ms CPU per model call to the "
                  f"host's own {per_call[store, 'scripted']:.2f} ms")
    if args.no_autogen:
        print("AutoGen: not measured (--no-autogen)")
    elif not autogen:
        print("AutoGen: not measured (its packages are not installed: "
              "pip install -e '.[bench]', then run this again)")
    return 1 if failed else 0


def autogen_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("autogen_agentchat", "autogen_core"))


def run_child(store: str, model: str, runs: int, url: str, store_url: str) -> dict:
    cmd = [sys.executable, __file__, "--child", store, model, "--runs", str(runs),
           "--openai-url", url, "--store-url", store_url]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def print_row(runs: int, store: str, model: str, r: dict) -> bool:
    label = {"scripted": "scripted", "openai": "openai client",
             "autogen": "AutoGen (same)"}[model]
    if "error" in r:
        print(f"{runs:>5}  {store:<7} {label:<15} FAILED: {r['error']}")
        return False
    commands = f"{r['commands'] / r['calls']:>8.1f}" if r.get("commands") else f"{'-':>8}"
    print(f"{runs:>5}  {store:<7} {label:<15} {r['wall']:>7.2f} {r['wall'] / BOUND:>7.2f}x "
          f"{r['cpu']:>6.2f} {r['cpu'] / r['calls'] * 1000:>11.3f} {r['peak_mib']:>9.1f} "
          f"{r['base_mib']:>9.1f} {commands}  {r['posts']}"
          + ("" if r["median"] is None else f"  (median wall {r['median']:.2f} s)")
          + ("" if r["complete"] else f"  INCOMPLETE: {r['done']}/{runs} runs finished"))
    return bool(r["complete"])


class Servers:
    """The Redis and the Redis Cluster the rows use: the environment's, else throw-away
    ones started here on first use (and stopped by `stop`)."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.why: dict[str, str] = {}
        self._processes: list[subprocess.Popen[bytes]] = []
        self._dir = tempfile.TemporaryDirectory(prefix="tt-bench-redis-")

    def url(self, store: str) -> str:
        if store not in ("redis", "cluster") or store in self.urls or store in self.why:
            return self.urls.get(store, "")  # SQLite, and AutoGen's memory, need no server
        variable = "REDIS_CLUSTER_URL" if store == "cluster" else "REDIS_URL"
        if url := os.environ.get(variable):
            self.urls[store] = url
            return url
        import pytest

        from tests.fakes.redis_server import start_redis_cluster, start_redis_server

        try:
            if store == "cluster":
                processes, ports = start_redis_cluster(Path(self._dir.name) / "cluster")
            else:
                directory = Path(self._dir.name) / "server"
                directory.mkdir()
                process, port = start_redis_server(directory)
                processes, ports = [process], [port]
        except (pytest.fail.Exception, pytest.skip.Exception) as exc:
            self.why[store] = f"no {variable} and none could be started: {exc.msg}"
            return ""
        self._processes += processes
        self.urls[store] = f"redis://127.0.0.1:{ports[0]}/0"
        return self.urls[store]

    def stop(self) -> None:
        from tests.fakes.redis_server import stop_servers

        stop_servers(self._processes)
        self._dir.cleanup()


def start_fake_openai() -> tuple[subprocess.Popen[str], str]:
    """The fake server in its own process, so its CPU and memory are not counted as ours."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve-fake-openai"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError("the fake OpenAI server did not start")
    return proc, url


async def serve_fake_openai() -> None:
    from tests.fakes.openai_server import FakeOpenAI

    class SlowFake(FakeOpenAI):
        async def _handle(self, request):  # type: ignore[no-untyped-def]
            await asyncio.sleep(LATENCY)
            self.requests.clear()  # nobody reads them here
            return await super()._handle(request)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with SlowFake(fallback_text="On balance: pilot it for pre-orders first.") as fake:
        print(fake.url, flush=True)
        parent = os.getppid()
        while not stop.is_set() and os.getppid() == parent:  # never outlive the parent
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


# -- a child: one measurement --------------------------------------------------------------
class SleepyModel:
    """Answers every call after `LATENCY` seconds; keeps nothing of what it was asked."""

    name = "scripted"

    def __init__(self) -> None:
        from threadteam.teams.models import ModelResponse, Usage

        self.lines = [ModelResponse(text=t, usage=Usage(40, 20), model="scripted") for t in (
            "Orders arrive at 6am by phone; an app would let us bake to demand.",
            "The app costs 49 a month plus 3% a sale; regulars like to call.",
            "Pilot the app for pre-orders only, keep the phone, review after a quarter.")]
        self.calls = 0

    async def complete(self, request, on_text=None, *, on_retry=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        await asyncio.sleep(LATENCY)
        return self.lines[self.calls % 3]

    async def aclose(self) -> None:
        return None


class CountingPoster:
    """A platform that only counts: agent posts and notices per thread."""

    def __init__(self, runs: int) -> None:
        self.agent_posts: dict[str, int] = defaultdict(int)
        self.notices: dict[str, int] = defaultdict(int)
        self.total = 0
        self.done = 0
        self.runs = runs
        self.all_done = asyncio.Event()

    async def post(self, out) -> str:  # type: ignore[no-untyped-def]
        self.total += 1
        thread = out.key.thread
        if not out.notice:
            self.agent_posts[thread] += 1
        else:
            self.notices[thread] += 1
            if out.text.startswith("Finished") and self.agent_posts[thread] == MESSAGES:
                self.done += 1
                if self.done == self.runs:
                    self.all_done.set()
        return f"m{self.total}"

    async def edit(self, out, message_id: str) -> None:  # type: ignore[no-untyped-def]
        return None

    async def working(self, key, persona) -> None:  # type: ignore[no-untyped-def]
        return None

    def mention(self, user: str) -> str:
        return f"<@{user}>"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(store_kind: str, model_kind: str, runs: int, openai_url: str,
                  redis_url: str) -> dict:
    from threadteam.bot.host import Host
    from threadteam.bot.shapes import Inbound, ThreadKey
    from threadteam.bot.stores.redis import RedisStore
    from threadteam.bot.stores.sqlite import SQLiteStore
    from threadteam.teams.catalog import TeamCatalog
    from threadteam.teams.models import ModelPool

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "trio.yaml").write_text(TEAM.format(
            model="scripted" if model_kind == "scripted" else OPENAI_MODEL, messages=MESSAGES))
        catalog = TeamCatalog.load(tmp, strict=True)
        if model_kind == "scripted":
            models = ModelPool(env={}, overrides={"scripted": SleepyModel()})
        else:
            models = ModelPool(env={"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": openai_url})
        prefix = f"bench-{uuid.uuid4().hex[:12]}:"
        store = SQLiteStore(str(Path(tmp) / "bench.db")) if store_kind == "sqlite" else \
            RedisStore(redis_url, prefix=prefix)
        await store.start()
        try:
            counter = CommandCounter(redis_url) if store_kind != "sqlite" else None
            return await _measure(Host, Inbound, ThreadKey, store, catalog, models, runs,
                                  counter)
        finally:
            await store.aclose()
            await models.aclose()
            if store_kind != "sqlite":
                await delete_keys(redis_url, prefix)


async def _measure(Host, Inbound, ThreadKey, store, catalog, models, runs: int,  # type: ignore[no-untyped-def]
                   counter: CommandCounter | None) -> dict:
    # One run first, so lazy imports and first-call set-up are not timed.
    warm = CountingPoster(1)
    host = Host(store=store, catalog=catalog, models=models, poster=warm)
    await host.start()
    await host.handle(Inbound(ThreadKey("bench", "W", "C", "warm-up"), "alice",
                              f"trio {TASK}", "summon", "warm-up"))
    await asyncio.wait_for(warm.all_done.wait(), 30)
    await host.idle()
    await host.aclose()

    poster = CountingPoster(runs)
    host = Host(store=store, catalog=catalog, models=models, poster=poster)
    await host.start()
    summons = [Inbound(ThreadKey("bench", "W", "C", str(i)), f"user{i}", f"trio {TASK}",
                       "summon", f"ev-{i}") for i in range(runs)]
    gc.collect()
    base = rss_mib()
    commands0 = await counter.count() if counter else 0
    cpu0, main0, t0 = cpu_seconds(), time.thread_time(), time.perf_counter()
    await asyncio.gather(*(host.handle(s) for s in summons))
    summoned = time.perf_counter() - t0
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(poster.all_done.wait(), CHILD_TIMEOUT / 2)
    wall, cpu, main = time.perf_counter() - t0, cpu_seconds() - cpu0, time.thread_time() - main0
    complete = poster.all_done.is_set()
    if complete:
        await host.idle(30)
    await host.aclose()
    commands = await counter.count() - commands0 if counter else 0
    agent_posts = sum(poster.agent_posts.values())
    return {"commands": commands, "wall": wall, "summoned": summoned, "cpu": cpu, "loop_cpu": main, "calls": max(agent_posts, 1), "complete": complete,
            "done": poster.done, "base_mib": base,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "posts": f"{agent_posts} agent + {sum(poster.notices.values())} notices"}


async def measure_autogen(runs: int) -> dict:
    """`runs` AutoGen RoundRobinGroupChat teams of the same shape, all started at once."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.conditions import MaxMessageTermination
    from autogen_agentchat.messages import TextMessage
    from autogen_agentchat.teams import RoundRobinGroupChat
    from autogen_core.models import (
        ChatCompletionClient,
        CreateResult,
        ModelFamily,
        ModelInfo,
        RequestUsage,
    )

    lines = ("Orders arrive at 6am by phone; an app would let us bake to demand.",
             "The app costs 49 a month plus 3% a sale; regulars like to call.",
             "Pilot the app for pre-orders only, keep the phone, review after a quarter.")
    usage = RequestUsage(prompt_tokens=40, completion_tokens=20)

    class SleepyClient(ChatCompletionClient):
        """AutoGen's model seam: every answer after `LATENCY` seconds, as SleepyModel."""

        calls = 0

        async def create(self, messages, **kwargs):  # type: ignore[no-untyped-def]
            SleepyClient.calls += 1
            await asyncio.sleep(LATENCY)
            return CreateResult(finish_reason="stop", content=lines[self.calls % 3],
                                usage=usage, cached=False)

        async def create_stream(self, messages, **kwargs):  # type: ignore[no-untyped-def]
            yield await self.create(messages)

        async def close(self) -> None:
            return None

        def actual_usage(self) -> RequestUsage:
            return usage

        def total_usage(self) -> RequestUsage:
            return usage

        def count_tokens(self, messages, **kwargs) -> int:  # type: ignore[no-untyped-def]
            return 0

        def remaining_tokens(self, messages, **kwargs) -> int:  # type: ignore[no-untyped-def]
            return 100_000

        @property
        def capabilities(self):  # type: ignore[no-untyped-def]
            return self.model_info

        @property
        def model_info(self) -> ModelInfo:
            return ModelInfo(vision=False, function_calling=True, json_output=False,
                             family=ModelFamily.UNKNOWN, structured_output=False)

    def team() -> RoundRobinGroupChat:
        client = SleepyClient()
        agents = [AssistantAgent("bull", client, system_message="Argue for."),
                  AssistantAgent("bear", client, system_message="Argue against."),
                  AssistantAgent("synthesis", client, system_message="Weigh both sides.")]
        # AutoGen counts the task as a message; MESSAGES agent messages follow it.
        return RoundRobinGroupChat(agents, termination_condition=MaxMessageTermination(MESSAGES + 1))

    async def one(t: RoundRobinGroupChat) -> int:
        result = await t.run(task=TASK)
        return sum(1 for m in result.messages if isinstance(m, TextMessage) and m.source != "user")

    await one(team())  # warm-up, as for threadteam: lazy imports are not timed
    teams = [team() for _ in range(runs)]
    gc.collect()
    base = rss_mib()
    SleepyClient.calls = 0
    cpu0, main0, t0 = cpu_seconds(), time.thread_time(), time.perf_counter()
    try:
        counts = await asyncio.wait_for(asyncio.gather(*(one(t) for t in teams)), CHILD_TIMEOUT / 2)
    except TimeoutError:
        counts = []
    wall, cpu, main = time.perf_counter() - t0, cpu_seconds() - cpu0, time.thread_time() - main0
    done = sum(1 for c in counts if c == MESSAGES)
    return {"wall": wall, "summoned": 0.0, "cpu": cpu, "loop_cpu": main,
            "calls": max(SleepyClient.calls, 1), "complete": done == runs, "done": done,
            "base_mib": base, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "posts": f"{sum(counts)} agent messages (in memory: no store, no platform)"}


async def nodes_of(url: str) -> list[str]:
    """redis:// URLs of the primaries behind `url` (itself, for a plain server)."""
    import redis.asyncio as aioredis

    from threadteam.bot.stores._cluster import is_cluster

    if not await is_cluster(url, "the Redis measured"):
        return [url]
    cluster = aioredis.RedisCluster.from_url(url)
    try:
        await cluster.initialize()
        scheme, rest = url.split("://", 1)
        auth = rest.split("@", 1)[0] + "@" if "@" in rest.split("/", 1)[0] else ""
        return [f"{scheme}://{auth}{n.host}:{n.port}/0" for n in cluster.get_primaries()]
    finally:
        await cluster.aclose()


class CommandCounter:
    """Commands the servers behind a store URL have run (INFO commandstats, summed)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.nodes: list[str] = []

    async def count(self) -> int:
        import redis.asyncio as aioredis

        self.nodes = self.nodes or await nodes_of(self.url)
        total = 0
        for node in self.nodes:
            r = aioredis.Redis.from_url(node)
            try:
                stats = await r.info("commandstats")
            finally:
                await r.aclose()
            total += sum(int(v["calls"]) for v in stats.values()) - 1  # less this INFO
        return total


async def delete_keys(url: str, prefix: str) -> None:
    """Delete this run's keys (and only them), on every node of a cluster."""
    import redis.asyncio as aioredis

    for node in await nodes_of(url):
        r = aioredis.Redis.from_url(node)
        try:
            batch = [key async for key in r.scan_iter(match=f"{prefix}*", count=1000)]
            for i in range(0, len(batch), 1000):
                async with r.pipeline(transaction=False) as pipe:
                    for key in batch[i:i + 1000]:  # a cluster's keys are of many slots
                        pipe.unlink(key)
                    await pipe.execute()
        finally:
            await r.aclose()


if __name__ == "__main__":
    sys.exit(main())
