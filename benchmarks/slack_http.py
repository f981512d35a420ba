"""How fast the Slack HTTP endpoint acks, and how soon a model's reply reaches Slack.

    python benchmarks/slack_http.py [--events 3000] [--seconds 10] [--rate 200]

Two processes on loopback, nothing leaves the machine:

- the bot (a child process): the real SlackAdapter in HTTP mode and a Host on the
  Redis store (`REDIS_URL`, else a throw-away `redis-server`), its model a scripted
  one that answers after 100 ms and writes the moment its answer was ready
  (CLOCK_MONOTONIC, shared by all processes) into the answer's text;
- this process: the fake Slack (Web API + echoes of the bot's posts, as Slack
  sends them) and a load generator POSTing signed `app_mention` events.

Figures:
1. acks/s: events sent as fast as 32 connections allow (bounded by --events and --seconds);
2. ack latency p50/p99 at --rate events/s (open loop, for --seconds);
3. added post latency p50/p99: a model reply ready -> its chat.postMessage arriving at
   the fake, under that load and on a quiet bot.
Targets: ack p99 < 50 ms at 200 events/s; added post latency p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from tests.fakes.slack import BOT_TOKEN, BOT_USER, CHANNEL, SIGNING_SECRET, FakeSlack, sign  # noqa: E402

TEAM_FILE = """\
name: bench
description: One agent that answers at once.
agents:
  - name: solo
    persona: {display_name: Solo, avatar: ":zap:"}
    system_message: Answer.
termination: {text_mention: FINAL ANSWER}
"""


# -- the bot process ---------------------------------------------------------------------------
class TimedPoster:
    """The adapter's poster, noting how long after the model's answer the host hands it over."""

    def __init__(self, poster) -> None:
        self.poster = poster
        self.entered: list[float] = []

    async def post(self, out):
        if "ready=" in out.text:
            self.entered.append(time.monotonic() - float(out.text.rsplit("ready=", 1)[1]))
        return await self.poster.post(out)

    def __getattr__(self, name):
        return getattr(self.poster, name)


class QuickModel:
    """Answers after 100 ms (a fast model; none answers in no time, and the turn's
    "is thinking…" status is sent while it works), stamping when the answer was ready.
    Unlike ScriptedModel it keeps no record of requests, which over thousands of runs
    would become the bot's biggest heap."""

    name = "quick"

    async def complete(self, request, on_text=None, *, on_retry=None):  # the teams.models.base.Model shape
        from threadteam.teams.models.scripted import reply
        await asyncio.sleep(0.1)
        return reply(f"FINAL ANSWER ready={time.monotonic():.6f}")

    async def aclose(self) -> None:
        return None


async def serve(api_url: str, store_url: str, inbox: bool = True) -> None:
    """Run the adapter + Host + Redis store until SIGTERM; print the port once listening.

    `inbox`: events are kept by the receiver thread as `threadteam run slack` does; off,
    the 200 waits for the host to take each event on the main loop (the earlier design)."""
    from threadteam.adapters.slack import SlackAdapter, SlackConfig
    from threadteam.adapters.slack.cli import _freeze_startup_heap
    from threadteam.bot.host import Host
    from threadteam.bot.inbox import Inbox
    from threadteam.bot.memory import StoreMemory
    from threadteam.bot.stores import open_store
    from threadteam.teams.catalog import TeamCatalog
    from threadteam.teams.models import ModelPool

    teams = Path(tempfile.mkdtemp(prefix="tt-bench-teams-"))
    (teams / "bench.yaml").write_text(TEAM_FILE)
    model = QuickModel()
    store = open_store(store_url)
    await store.start()
    adapter = SlackAdapter(SlackConfig(BOT_TOKEN, SIGNING_SECRET, api_url=api_url),
                           memory=StoreMemory(store, "slack"),
                           inbox=Inbox.at(store, "slack", store_url) if inbox else None)
    poster = TimedPoster(adapter.poster)
    host = Host(store=store, catalog=TeamCatalog.load(teams),
                models=ModelPool(env={"THREADTEAM_MODEL": "scripted"},
                                 overrides={"scripted": model}),
                poster=poster, directory=adapter.directory)
    await host.start()
    await adapter.start(host, port=0, bind="127.0.0.1")
    _freeze_startup_heap()  # as `threadteam run slack` does
    print(f"PORT {adapter.port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print("SPLIT " + json.dumps(poster.entered), flush=True)
    await adapter.stop()
    await host.aclose()
    await adapter.aclose()
    await store.aclose()
    shutil.rmtree(teams, ignore_errors=True)


# -- the load generator --------------------------------------------------------------------------
class Load:
    """Signed app mentions to the bot's endpoint; one new thread (run) each."""

    def __init__(self, fake: FakeSlack, url: str) -> None:
        self.fake, self.url = fake, url
        self.n = 0
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

    async def mention(self) -> tuple[int, float]:
        """Send one; (HTTP status, seconds until the ack)."""
        self.n += 1
        ts = f"{1_800_000_000 + self.n}.{uuid.uuid4().int % 1_000_000:06d}"
        body = json.dumps(self.fake.envelope({
            "type": "app_mention", "user": "U0ALICE", "text": f"<@{BOT_USER}> bench task {self.n}",
            "ts": ts, "channel": CHANNEL, "event_ts": ts}))
        stamp = int(time.time())
        headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": str(stamp),
                   "X-Slack-Signature": sign(body, stamp)}
        start = time.perf_counter()
        async with self.session.post(self.url, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status, time.perf_counter() - start

    async def flat_out(self, count: int, seconds: float, concurrency: int = 32) -> tuple[int, float]:
        """As fast as `concurrency` connections go; (acked, elapsed)."""
        acked, deadline, sent = 0, time.monotonic() + seconds, 0
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal acked, sent
            while sent < count and time.monotonic() < deadline:
                sent += 1
                status, _ = await self.mention()
                acked += status == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return acked, time.perf_counter() - start

    async def at_rate(self, rate: float, seconds: float) -> list[float]:
        """Open loop: one event every 1/rate s whatever the acks do; the ack latencies."""
        latencies: list[float] = []
        tasks = []
        start = time.perf_counter()

        async def one() -> None:
            status, took = await self.mention()
            if status == 200:
                latencies.append(took)

        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        return latencies


def post_latencies(fake: FakeSlack, since: int) -> list[float]:
    """Model answer ready -> chat.postMessage at the fake, for calls recorded after `since`."""
    out = []
    for call in fake.calls[since:]:
        text = call.params.get("text", "") if call.method == "chat.postMessage" else ""
        if "ready=" in text and call.error is None:
            out.append(call.at - float(text.rsplit("ready=", 1)[1]))
    return out


_posts = {"scanned": 0, "ok": 0}  # chat.postMessage successes counted so far


async def settle(fake: FakeSlack, runs: int, within: float = 120.0) -> None:
    """Wait until every run so far has posted its three messages."""
    deadline = time.monotonic() + within
    while True:
        # Only the calls recorded since the last look are scanned: a scan of them all
        # would stall this process's loop, and so the fake, inside the measurement.
        new = fake.calls[_posts["scanned"]:]
        _posts["scanned"] += len(new)
        _posts["ok"] += sum(1 for c in new if c.method == "chat.postMessage" and c.error is None)
        if _posts["ok"] >= 3 * runs:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"the bot fell behind: {_posts['ok']} posts for {runs} runs")
        await asyncio.sleep(0.005)
    await fake.drain()
    # The fake keeps every call for the whole benchmark: freeze them so this measuring
    # process's own collections stay short and do not count as the bot's latency.
    gc.collect()
    gc.freeze()


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


# -- Redis ----------------------------------------------------------------------------------
def redis_url() -> tuple[str, subprocess.Popen[bytes] | None]:
    if url := os.environ.get("REDIS_URL"):
        return url, None
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("benchmarks/slack_http.py needs redis-server on PATH, or REDIS_URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0", proc


async def main(args: argparse.Namespace) -> None:
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          f"(other processes on the machine skew these figures)")
    url, redis_proc = redis_url()
    store_url = f"{url}{'&' if '?' in url else '?'}prefix=tt-bench-{uuid.uuid4().hex[:8]}:"
    fake = FakeSlack()
    await fake.start()
    bot = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", fake.api_url, store_url, args.inbox,
        stdout=subprocess.PIPE)
    try:
        line = (await asyncio.wait_for(bot.stdout.readline(), 30)).decode()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            raise SystemExit(f"the bot did not start: {line!r}")
        fake.events_url = f"http://127.0.0.1:{line.split()[1]}/slack/events"
        load = Load(fake, fake.events_url)
        runs = 0

        for _ in range(20):  # warm up: connections, auth.test, code paths
            await load.mention()
        runs += 20
        await settle(fake, runs)

        acked, took = await load.flat_out(args.events, args.seconds)
        runs += acked
        print(f"acks/s, flat out (32 connections): {acked / took:,.0f}  "
              f"({acked} signed app mentions in {took:.2f}s, each starting a run)")
        await settle(fake, runs)

        mark = len(fake.calls)
        cpu = (_cpu(bot.pid), _cpu(os.getpid()), time.perf_counter())
        latencies = await load.at_rate(args.rate, args.seconds)
        cpu_bot, cpu_fake = _cpu(bot.pid) - cpu[0], _cpu(os.getpid()) - cpu[1]
        wall = time.perf_counter() - cpu[2]
        runs += len(latencies)
        await settle(fake, runs)
        print(f"ack latency at {args.rate:.0f} events/s for {args.seconds:.0f}s: "
              f"p50 {pct(latencies, 0.5):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms  (target p99 < 50 ms; "
              f"{len(latencies)} acked)")
        print(f"  CPU while sending: bot {cpu_bot / wall:.0%} of a core, fake Slack + load "
              f"generator {cpu_fake / wall:.0%} ({os.cpu_count()} cores)")
        loaded = post_latencies(fake, mark)
        print(f"added post latency under that load: p50 {pct(loaded, 0.5):.2f} ms, "
              f"p99 {pct(loaded, 0.99):.2f} ms  (target p99 < 20 ms; {len(loaded)} replies)")
        split_from = len(loaded)

        mark = len(fake.calls)
        for _ in range(100):  # quiet: one run at a time
            await load.mention()
            runs += 1
            await settle(fake, runs)
        quiet = post_latencies(fake, mark)
        print(f"added post latency, quiet bot: p50 {pct(quiet, 0.5):.2f} ms, "
              f"p99 {pct(quiet, 0.99):.2f} ms  (mean {statistics.mean(quiet) * 1000:.2f} ms; "
              f"{len(quiet)} replies)")
        skip = 20 + acked  # warm-up and flat-out replies come first in the bot's record
        await load.session.close()
        print(f"  load average (1/5/15 min) at the end: "
              f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    finally:
        try:
            if bot.returncode is None:
                bot.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(bot.communicate(), 30)
            split = [json.loads(line[6:]) for line in out.decode().splitlines()
                     if line.startswith("SPLIT ")]
        finally:
            await fake.aclose()
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(5)
    if split:  # where the added latency goes: inside the host, or in the adapter and the wire
        entered = split[0][skip:]
        loaded_part, quiet_part = entered[:split_from], entered[split_from:]
        print(f"  of which host (store append, idempotency check) until Poster.post: "
              f"under load p50 {pct(loaded_part, 0.5):.2f} / p99 {pct(loaded_part, 0.99):.2f} ms; "
              f"quiet p50 {pct(quiet_part, 0.5):.2f} / p99 {pct(quiet_part, 0.99):.2f} ms")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        import logging
        logging.basicConfig(level=logging.WARNING)
        asyncio.run(serve(sys.argv[2], sys.argv[3], sys.argv[4] == "on"))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="flat-out phase: at most this many")
    parser.add_argument("--seconds", type=float, default=10.0, help="each phase: at most this long")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s for the latency phase")
    parser.add_argument("--inbox", choices=("on", "off"), default="on",
                        help="off: the 200 waits for the host itself (the design before the inbox)")
    asyncio.run(main(parser.parse_args()))
