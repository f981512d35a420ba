"""Crash campaign: SIGKILL the Slack bot at random moments; count what people would notice.

    python benchmarks/crash_campaign.py [--store sqlite|redis] [--kills 50] [--seed N]

Two processes on loopback, nothing leaves the machine:

- the bot (a child process, restarted after every kill): the real SlackAdapter in HTTP
  mode and a Host serving Slack on the store under test (a SQLite file, or Redis at
  `REDIS_URL`, else a throw-away `redis-server`), its model a quick scripted one
  (50-100 ms a turn) whose text depends only on the run, so a post made twice reads
  the same twice; the team: Analyst, then the person, then Critic, who ends with
  FINAL ANSWER naming the replies it was shown;
- this process: the fake Slack (Web API, echoes of the bot's posts; it stores a post,
  then takes up to --post-latency ms to answer, the window where a crash leaves a post
  on Slack that the bot never heard back about; `assistant.threads.setStatus` is
  refused, so every turn posts a "_thinking…_" placeholder first) and people: a new
  run summoned every 1/--rate s (the `app_mention` and `message` twins Slack sends),
  and one reply per run once the team asks for it. An event that gets no 200 (the
  bot is down, answered an error, or took over 3 s) is sent again, as Slack does (at
  once, then every second until a 200: Slack's minutes-apart re-sends scaled down).

The bot is killed --kills times, each time at a moment drawn uniformly from its first
--life seconds of serving (it is busy all along), and restarted on the same store.
After the last restart no new run is summoned and every run is waited for.

Figures, per store (targets 0 each; the exit status is 1 if any is above):
- duplicate posts: two Slack messages for one post (same thread, persona and text, or
  the same `metadata.event_payload.key` when posts carry one);
- lost human messages: a reply (or summon) Slack got a 200 for that is not in its
  run's log, or never reached the model (Critic did not name it); and, apart, events
  that never got a 200 by the end;
- stuck runs: runs not finished --stuck-after seconds after the last restart;
- placeholders left: "_thinking…_" messages still in a thread at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from tests.fakes.slack import (  # noqa: E402
    ALICE,
    BOT_ID,
    BOT_TOKEN,
    BOT_USER,
    CHANNEL,
    SIGNING_SECRET,
    TEAM,
    FakeSlack,
    sign,
)

__all__ = ["BotProcess", "CrashSlack", "Sender", "free_port", "redis_url", "rss_of", "serve"]

PLACEHOLDER = "_thinking…_"  # what adapters/slack/placeholders.py posts while an agent works

#: Teams the bot child can serve, by name.
TEAMS = {
    # Two agents and one human turn: Analyst, the person, Critic ends the run.
    "crash": """\
name: crash
description: An analyst, then the person, then a critic who ends the run.
strategy: round_robin
agents:
  - name: analyst
    persona: {display_name: Analyst, avatar: ":mag:"}
    system_message: Analyse the task.
  - name: you
    human: true
    persona: {display_name: You, avatar: ":bust_in_silhouette:"}
  - name: critic
    persona: {display_name: Critic, avatar: ":scales:"}
    system_message: Weigh the analysis and the person's reply; end with FINAL ANSWER.
termination:
  any:
    - text_mention: {text: FINAL ANSWER, sources: [critic]}
    - max_messages: 8
""",
    # One agent and a person taking turns for as long as people write (memory_fuzz.py).
    "chat": """\
name: chat
description: A helper answers every message in the thread.
strategy: round_robin
agents:
  - name: helper
    persona: {display_name: Helper, avatar: ":robot_face:"}
    system_message: Answer the person.
  - name: you
    human: true
    persona: {display_name: You, avatar: ":bust_in_silhouette:"}
termination: {max_messages: 100000}
""",
}


# -- the bot process ---------------------------------------------------------------------------
class QuickModel:
    """Answers in 50-100 ms (a fast model). Its text depends only on what the run holds,
    so a turn done twice (a crash, a retry) says the same words twice.

    Analyst names the task; Critic names every `reply-...` token the person's messages
    carried in its request (how a reply that reached the model is told from one that did
    not); Helper (memory_fuzz.py) answers with the start of the last message, whatever
    it holds (lone surrogates, pings, Markdown), so poison text also comes back from the
    model. It keeps no record of requests, which would become the bot's biggest heap.
    """

    name = "quick"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    async def complete(self, request, on_text=None, *, on_retry=None):  # teams.models.base.Model
        from threadteam.teams.models.scripted import reply
        await asyncio.sleep(random.uniform(self.low, self.high))
        said = " ".join(m.content for m in request.messages if m.role == "user")
        task = (re.findall(r"task-\d+", said) or ["?"])[0]
        if request.agent == "analyst":
            return reply(f"Analysis of {task}: three points for, two against.")
        if request.agent == "critic":
            heard = sorted(set(re.findall(r"reply-\d+-[0-9a-f]+", said)))
            return reply(f"FINAL ANSWER on {task}: weighed {', '.join(heard) or 'no reply'}.")
        last = request.messages[-1].content if request.messages else ""
        return reply(f"Noted ({len(said)} chars so far): {last[:120]}")

    async def aclose(self) -> None:
        return None


async def serve(api_url: str, store_url: str, port: int, team: str, low: float,
                high: float) -> None:
    """Run the adapter + Host on `store_url` until SIGTERM; print the port once listening."""
    from threadteam.adapters.slack import SlackAdapter, SlackConfig
    from threadteam.adapters.slack.cli import _freeze_startup_heap
    from threadteam.bot.host import Host
    from threadteam.bot.inbox import Inbox
    from threadteam.bot.memory import StoreMemory
    from threadteam.bot.stores import open_store
    from threadteam.teams.catalog import TeamCatalog
    from threadteam.teams.models import ModelPool

    teams = Path(tempfile.mkdtemp(prefix="tt-crash-teams-"))
    (teams / f"{team}.yaml").write_text(TEAMS[team])
    store = open_store(store_url)
    await store.start()

    adapter = SlackAdapter(SlackConfig(BOT_TOKEN, SIGNING_SECRET, api_url=api_url),
                           memory=StoreMemory(store, "slack"),
                           inbox=Inbox.at(store, "slack", store_url))
    # As `threadteam run slack` builds it, without the per-person summon limits (one
    # person summons hundreds of runs here).
    host = Host(store=store, catalog=TeamCatalog.load(teams),
                models=ModelPool(env={"THREADTEAM_MODEL": "scripted"},
                                 overrides={"scripted": QuickModel(low, high)}),
                poster=adapter.poster, directory=adapter.directory, platform="slack")
    await host.start()
    await adapter.start(host, port=port, bind="127.0.0.1")
    _freeze_startup_heap()
    print(f"PORT {adapter.port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await adapter.stop()
    await host.aclose()
    await adapter.aclose()
    await store.aclose()
    shutil.rmtree(teams, ignore_errors=True)


class BotProcess:
    """The bot child: started, killed, started again on the same store and port."""

    def __init__(self, api_url: str, store_url: str, port: int, team: str, log_path: Path,
                 model_ms: tuple[float, float] = (50.0, 100.0)) -> None:
        self.args = [sys.executable, str(Path(__file__).resolve()), "--serve", api_url,
                     store_url, str(port), team, str(model_ms[0] / 1000), str(model_ms[1] / 1000)]
        self.port, self.log_path = port, log_path
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> float:
        """Start it; return once it serves HTTP, with the seconds that took."""
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args, stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode()
        if not line.startswith("PORT "):
            raise SystemExit(f"the bot did not start (see {self.log_path}): {line!r}")
        return time.monotonic() - began

    async def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, and wait for a clean exit (SIGKILL after `timeout`)."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()


def rss_of(pid: int) -> tuple[int, int]:
    """(resident bytes now, peak resident bytes) of a process: psutil if installed, else
    /proc/<pid>/status (VmRSS, VmHWM). The peak is 0 where neither gives it."""
    now = peak = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    try:
        import psutil
    except ImportError:
        return now, peak
    with contextlib.suppress(psutil.Error):
        now = psutil.Process(pid).memory_info().rss
    return now, peak


# -- the fake Slack ------------------------------------------------------------------------------
class CrashSlack(FakeSlack):
    """The fake Slack, plus: a post is stored, then answered up to `post_latency` s later
    (a crash in between leaves it on Slack, unheard of by the bot); threads' progress
    is signalled as posts land; echoes to a bot that is down are simply lost."""

    def __init__(self, post_latency: float = 0.0) -> None:
        super().__init__()
        self.post_latency = post_latency
        self.in_flight = 0  # posts and edits stored, their answer not yet sent
        self.seen: dict[str, asyncio.Event] = defaultdict(asyncio.Event)  # "thread|marker"

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        slow = method in ("chat.postMessage", "chat.update")
        if slow:
            self.in_flight += 1
        try:
            response = await super()._api(request)
            if slow and self.post_latency:
                await asyncio.sleep(random.uniform(0, self.post_latency))
            return response
        finally:
            if slow:
                self.in_flight -= 1

    def _m_chat_postMessage(self, p: dict, r: web.Request) -> dict:
        body = super()._m_chat_postMessage(p, r)
        if body.get("ok"):
            self._landed(self.messages.get((body["channel"], body["ts"])), p)
        return body

    def _m_chat_update(self, p: dict, r: web.Request) -> dict:
        body = super()._m_chat_update(p, r)
        if body.get("ok"):
            self._landed(self.messages.get((body["channel"], body["ts"])), p)
        return body

    def _landed(self, msg: dict[str, Any] | None, p: dict[str, Any]) -> None:
        if msg is None:
            return
        if "metadata" in p:  # kept, in case the fake drops it
            meta = p["metadata"]
            with contextlib.suppress(ValueError, TypeError):
                msg["metadata"] = json.loads(meta) if isinstance(meta, str) else meta
        thread, text = msg.get("thread_ts", ""), str(msg.get("text", ""))
        for marker in ("Your turn", "FINAL ANSWER", "Finished:"):
            if marker in text:
                self.seen[f"{thread}|{marker}"].set()

    def _read(self, p: dict, thread: str | None) -> dict:
        """conversations.replies / .history as Slack answers them, oldest first, paged,
        with metadata only when `include_all_metadata` is asked for. Used only while
        tests/fakes/slack.py has none of its own."""
        channel, oldest = p.get("channel"), float(p.get("oldest") or 0)
        found = sorted((m for (ch, ts), m in self.messages.items()
                        if ch == channel and float(ts) >= oldest
                        and (m.get("thread_ts") == thread or ts == thread if thread
                             else not m.get("thread_ts") or m.get("thread_ts") == ts)),
                       key=lambda m: float(m["ts"]))
        if str(p.get("include_all_metadata", "")).lower() not in ("true", "1"):
            found = [{k: v for k, v in m.items() if k != "metadata"} for m in found]
        if thread is None:
            found.reverse()  # history is newest first
        page, meta = self._page(found, p)
        return {"ok": True, "messages": page, "has_more": bool(meta["next_cursor"]),
                "response_metadata": meta}

    if not hasattr(FakeSlack, "_m_conversations_replies"):
        def _m_conversations_replies(self, p: dict, r: web.Request) -> dict:
            return self._read(p, str(p.get("ts", "")))

    if not hasattr(FakeSlack, "_m_conversations_history"):
        def _m_conversations_history(self, p: dict, r: web.Request) -> dict:
            return self._read(p, None)

    def _echo(self, event: dict[str, Any]) -> None:
        async def quietly(send: Any) -> None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await send

        if not self.echo or not self.events_url:
            return
        event.pop("blocks", None)
        event.setdefault("event_ts", event["ts"])
        event["channel_type"] = "channel"
        task = asyncio.ensure_future(quietly(self.send_event(event)))
        self._echoes.add(task)
        task.add_done_callback(self._echoes.discard)

    def bot_messages(self) -> list[dict[str, Any]]:
        """The bot's posts still in Slack (deleted ones excluded)."""
        return [m for m in self.messages.values() if m.get("bot_id") == BOT_ID]


# -- people --------------------------------------------------------------------------------------
class Sender:
    """Signed Events API requests to the bot, re-sent until a 200 comes back.

    Slack re-sends an event answered with anything but a 2xx, or not answered within
    3 s (`deadline`): three times (X-Slack-Retry-Num 1, 2, 3), at once, after a
    minute and after five, which a bot that restarts in seconds always lives to see.
    Here the bot is killed every few seconds, so the re-sends come at once and then
    every `every` s, until a 200 or `stop()`: what is measured is the bot, not the
    schedule. The header never goes past Slack's 3; `beyond_slack` counts the events
    that needed more than three re-sends.
    """

    def __init__(self, url: str, deadline: float = 3.0, every: float = 1.0) -> None:
        self.url, self.deadline, self.every = url, deadline, every
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        self.statuses: Counter[str] = Counter()  # every answer: "200", "503", "refused"...
        self.in_flight = 0
        self.beyond_slack = 0
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        """No more re-sends: events without a 200 so far stay without one."""
        self._stopped.set()

    async def once(self, body: str, retry: int = 0, reason: str = "") -> str:
        """One attempt; the HTTP status as text, or why there was none."""
        stamp = int(time.time())
        headers = {"Content-Type": "application/json", "X-Slack-Request-Timestamp": str(stamp),
                   "X-Slack-Signature": sign(body, stamp)}
        if retry:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": reason}
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.deadline):
                async with self.session.post(self.url, data=body.encode(),
                                             headers=headers) as resp:
                    await resp.read()
                    return str(resp.status)
        except TimeoutError:
            return "timeout"
        except (aiohttp.ClientConnectorError, ConnectionRefusedError):
            return "refused"
        except (aiohttp.ClientError, OSError):
            return "dropped"
        finally:
            self.in_flight -= 1

    async def deliver(self, body: str) -> bool:
        """Send, and re-send until a 200 (True) or until stopped (False)."""
        retry, reason = 0, ""
        while True:
            status = await self.once(body, min(retry, 3), reason)
            self.statuses[status] += 1
            if status == "200":
                self.beyond_slack += retry > 3
                return True
            retry += 1
            reason = {"timeout": "http_timeout", "refused": "connection_failed",
                      "dropped": "unknown_error"}.get(status, "http_error")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25 if retry == 1 else self.every):
                    await self._stopped.wait()
            if self._stopped.is_set():
                return False

    async def aclose(self) -> None:
        await self.session.close()


def envelope(event: dict[str, Any]) -> str:
    """An Events API `event_callback` body around `event`, with a fresh event id."""
    return json.dumps({
        "token": "legacy-verification-token", "team_id": TEAM, "api_app_id": "A0FAKE",
        "event": event, "type": "event_callback",
        "event_id": f"Ev{uuid.uuid4().hex[:12].upper()}", "event_time": int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": BOT_USER,
                            "is_bot": True, "is_enterprise_install": False}]})


def person_message(fake: FakeSlack, text: str, thread_ts: str | None = None
                   ) -> tuple[str, dict[str, Any]]:
    """(ts, event) of a message Alice writes in #general (in a thread if `thread_ts`)."""
    ts = fake._next_ts()
    event: dict[str, Any] = {"type": "message", "user": ALICE, "text": text, "ts": ts,
                             "channel": CHANNEL, "event_ts": ts, "team": TEAM,
                             "client_msg_id": str(uuid.uuid4()), "channel_type": "channel"}
    if thread_ts:
        event["thread_ts"] = thread_ts
    fake.messages[(CHANNEL, ts)] = dict(event)
    return ts, event


@dataclass
class Run:
    """One run as the person who summoned it knows it."""

    n: int
    ts: str = ""  # the summon's ts: the run's thread
    summoned: bool = False  # the mention got a 200
    reply: str = ""  # the token the reply carried
    replied: bool = False  # the reply got a 200
    unanswered: list[str] = field(default_factory=list)  # what Slack gave up re-sending
    replied_at: float = 0.0
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


class People:
    """Summons a run every 1/rate s while `summoning`, and answers each when asked."""

    def __init__(self, fake: CrashSlack, sender: Sender, rate: float, rng: random.Random) -> None:
        self.fake, self.sender, self.rate, self.rng = fake, sender, rate, rng
        self.runs: list[Run] = []
        self.summoning = True

    async def summon_loop(self) -> None:
        while self.summoning:
            run = Run(len(self.runs) + 1)
            self.runs.append(run)
            run.tasks.append(asyncio.create_task(self._live(run)))
            await asyncio.sleep(self.rng.expovariate(self.rate))

    async def _live(self, run: Run) -> None:
        text = f"<@{BOT_USER}> crash task-{run.n}"
        run.ts, event = person_message(self.fake, text)
        mention = {k: v for k, v in event.items() if k != "channel_type"} | {"type": "app_mention"}
        acked = await asyncio.gather(self.sender.deliver(envelope(mention)),
                                     self.sender.deliver(envelope(event)))
        run.summoned = acked[0]  # the mention carries the summon; its twin is dropped
        run.unanswered += [name for name, ok in zip(("summon", "its twin"), acked, strict=True)
                           if not ok]
        if not run.summoned:
            return
        await self.fake.seen[f"{run.ts}|Your turn"].wait()
        await asyncio.sleep(self.rng.uniform(0.0, 0.3))  # a person reads, and types
        run.reply = f"reply-{run.n}-{uuid.uuid4().hex[:6]}"
        _, event = person_message(self.fake, f"{run.reply}: keep it short", run.ts)
        run.replied = await self.sender.deliver(envelope(event))
        run.replied_at = time.monotonic()
        if not run.replied:
            run.unanswered.append("reply")

    async def finished(self, run: Run) -> None:
        await self.fake.seen[f"{run.ts}|Finished:"].wait()


# -- the campaign -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_url() -> tuple[str, subprocess.Popen[bytes] | None]:
    """REDIS_URL, else a throw-away redis-server on a free port (and its process)."""
    if url := os.environ.get("REDIS_URL"):
        return url, None
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--store redis needs redis-server on PATH, or REDIS_URL")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0", proc


@dataclass
class Figures:
    store: str
    duplicates: int = 0
    lost_replies: int = 0
    lost_summons: int = 0
    gave_up: int = 0  # events that never got a 200
    stuck: int = 0
    placeholders: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any((self.duplicates, self.lost_replies, self.lost_summons, self.gave_up,
                    self.stuck, self.placeholders))


async def campaign(kind: str, args: argparse.Namespace, workdir: Path) -> Figures:
    rng = random.Random(args.seed)
    redis_proc = None
    if kind == "sqlite":
        store_url = f"sqlite:///{workdir / 'campaign.sqlite3'}"
    else:
        url, redis_proc = redis_url()
        store_url = f"{url}{'&' if '?' in url else '?'}prefix=tt-crash-{uuid.uuid4().hex[:8]}:"
    fake = CrashSlack(post_latency=args.post_latency / 1000)
    fake.status_error = "not_allowed"  # every turn posts a placeholder first: more to leave behind
    await fake.start()
    port = free_port()
    fake.events_url = f"http://127.0.0.1:{port}/slack/events"
    log_path = workdir / f"bot-{kind}.log"
    bot = BotProcess(fake.api_url, store_url, port, "crash", log_path)
    sender = Sender(fake.events_url)
    people = People(fake, sender, args.rate, rng)
    figures = Figures(kind)
    began = time.monotonic()
    print(f"\n[{kind}] store {store_url.split('?')[0]}; bot log {log_path}", flush=True)
    try:
        starts = [await bot.start()]
        summoning = asyncio.create_task(people.summon_loop())
        posts_in_flight = events_in_flight = 0
        kills_at: list[float] = []
        for i in range(args.kills):
            await asyncio.sleep(rng.uniform(0, args.life))
            posts_in_flight += fake.in_flight > 0
            events_in_flight += sender.in_flight > 0
            kills_at.append(round(time.monotonic() - began, 3))
            await bot.kill()
            starts.append(await bot.start())
            if (i + 1) % 10 == 0:
                print(f"  {i + 1} kills, {len(people.runs)} runs summoned, "
                      f"{time.monotonic() - began:.0f}s", flush=True)
        restarted = time.monotonic()
        people.summoning = False
        await summoning
        runs = people.runs
        # Every run is waited for (its "Finished:" notice) for --stuck-after seconds.
        pending = [asyncio.ensure_future(people.finished(r)) for r in runs]
        _, unfinished = await asyncio.wait(pending, timeout=args.stuck_after)
        settled_after = time.monotonic() - restarted
        for t in pending:
            t.cancel()
        sender.stop()  # what has no 200 by now never gets one
        await asyncio.wait([t for r in runs for t in r.tasks], timeout=sender.deadline + 1)
        for r in runs:
            for t in r.tasks:
                t.cancel()  # those still waiting for the team to ask for a reply
        await quiet(fake, 2.0)  # late posts (a duplicate made after the run ended) land
        await bot.stop()
        await fake.drain()
        logs = await read_logs(store_url, [r.ts for r in runs])
    finally:
        await bot.kill()
        await sender.aclose()
        await fake.aclose()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(5)

    count(figures, fake, runs, logs)
    if figures.failed:  # what Slack shows, thread by thread, for a look at what went wrong
        threads: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in sorted(fake.messages.values(), key=lambda m: m["ts"]):
            threads[str(m.get("thread_ts") or m["ts"])].append(
                {k: m.get(k) for k in ("ts", "username", "user", "text", "metadata") if k in m})
        calls = [{"method": c.method, "at": round(c.at - began, 3), "error": c.error,
                  **{k: c.params.get(k) for k in ("ts", "thread_ts", "text", "username")
                     if k in c.params}} for c in fake.calls]
        dump = {"kills_at": kills_at, "threads": threads, "calls": calls}
        (workdir / f"slack-{kind}.json").write_text(json.dumps(dump, indent=1,
                                                               ensure_ascii=False))
    took = time.monotonic() - began
    refused = sum(n for s, n in sender.statuses.items() if s != "200")
    figures.notes += [
        f"{args.kills} SIGKILLs ({posts_in_flight} with a post or edit in flight at Slack, "
        f"{events_in_flight} with an event in flight to the bot); bot start "
        f"{min(starts):.1f}-{max(starts):.1f}s; campaign {took:.0f}s",
        f"{len(runs)} runs summoned, {sum(r.replied for r in runs)} replies acked; "
        f"{len(fake.bot_messages())} bot messages in Slack, {len(fake.deleted)} taken down",
        f"events answered: {dict(sorted(sender.statuses.items()))} "
        f"({refused} re-sent after a non-200; {sender.beyond_slack} events needed more than "
        f"Slack's three re-sends)",
        f"every run finished {settled_after:.1f}s after the last restart" if not unfinished
        else f"waited {args.stuck_after:.0f}s after the last restart: {len(unfinished)} "
             f"summoned runs did not finish (lost summons included)",
    ]
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [line for line in lines if line.startswith(("ERROR", "CRITICAL", "Traceback"))
              and "Slack has given up" not in line]
    if given_up := sum("Slack has given up" in line for line in lines):
        figures.notes.append(f"bot log: {given_up} 'Slack has given up' lines (said on a "
                             f"third re-send answered with an error; here re-sends go on)")
    if errors:
        figures.notes.append(f"bot log: {len(errors)} ERROR lines, e.g. {errors[0][:160]!r}")
    return figures


async def quiet(fake: FakeSlack, seconds: float, limit: float = 30.0) -> None:
    """Until no Web API call has reached the fake for `seconds` (at most `limit` s)."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        seen = len(fake.calls)
        await asyncio.sleep(seconds)
        if len(fake.calls) == seen:
            return


async def read_logs(store_url: str, threads: list[str]) -> dict[str, list[Any] | None]:
    """Each thread's run log as events (None: no run in that thread), read from the store
    once the bot is stopped."""
    from threadteam.bot.stores import open_store
    from threadteam.teams.events import from_json

    store = open_store(store_url)
    await store.start()
    try:
        logs: dict[str, list[Any] | None] = {}
        for ts in threads:
            run_id = await store.run_for_thread(f"slack:{TEAM}:{CHANNEL}:{ts}")
            logs[ts] = None if run_id is None else [from_json(x) for x in await store.load(run_id)]
        return logs
    finally:
        await store.aclose()


def count(figures: Figures, fake: CrashSlack, runs: list[Run],
          logs: dict[str, list[Any] | None]) -> None:
    """Fill the four figures from what Slack shows and what the store holds."""
    from threadteam.teams.events import HumanMessage, RunFinished

    posts = fake.bot_messages()
    same_text = Counter((m.get("thread_ts"), m.get("username", ""), m.get("text"))
                        for m in posts if m.get("text") != PLACEHOLDER)
    keys = Counter((p["key"], p.get("part")) for m in posts
                   if (p := (m.get("metadata") or {}).get("event_payload") or {}).get("key"))
    by_text = sum(n - 1 for n in same_text.values() if n > 1)
    by_key = sum(n - 1 for n in keys.values() if n > 1)
    figures.duplicates = max(by_text, by_key)
    figures.placeholders = sum(m.get("text") == PLACEHOLDER for m in posts)
    critic: dict[str, str] = defaultdict(str)  # thread -> what Critic said there
    for m in posts:
        if m.get("username") == "Critic":
            critic[str(m.get("thread_ts"))] += str(m.get("text"))
    not_logged = not_heard = waiting = 0
    stuck: list[str] = []
    stuck_at: Counter[str] = Counter()  # the last event of each stuck run
    unanswered: Counter[str] = Counter()
    for r in runs:
        unanswered.update(r.unanswered)
        log = logs.get(r.ts)
        if r.summoned and log is None:
            figures.lost_summons += 1
            continue
        if log is None:
            continue
        finished = any(isinstance(e, RunFinished) for e in log)
        lost = False
        if r.replied:
            if not any(isinstance(e, HumanMessage) and r.reply in e.text for e in log):
                not_logged, lost = not_logged + 1, True
            elif finished and r.reply not in critic[r.ts]:  # Critic was never shown it
                not_heard, lost = not_heard + 1, True
        if not finished:
            figures.stuck += 1
            waiting += lost
            stuck_at[type(log[-1]).__name__] += 1
            stuck.append(f"task-{r.n} after {type(log[-1]).__name__}"
                         f"{'' if r.replied else ' (reply not acked)'}")
    figures.lost_replies = not_logged + not_heard
    figures.gave_up = unanswered["summon"] + unanswered["reply"]
    if unanswered:
        figures.notes.append(f"never acked: {dict(unanswered)} (a summon's plain `message` "
                             f"twin is dropped by the bot anyway, so it is not counted)")
    if stuck:
        figures.notes.append(f"stuck runs ({waiting} of them waiting for a reply that was "
                             f"lost), by their last event: {dict(stuck_at)}; e.g. "
                             f"{'; '.join(stuck[:3])}")
    examples = [f"{t[1] or 'bot'}: {str(t[2])[:60]!r} x{n}" for t, n in same_text.items() if n > 1]
    if examples:
        figures.notes.append(f"duplicates, e.g. {'; '.join(examples[:3])}")
    if figures.lost_replies:
        figures.notes.append(f"lost replies: {not_logged} not in the run's log, {not_heard} "
                             f"in the log but never shown to the model")
    if keys:
        figures.notes.append(f"{len(keys)} posts carried a metadata key "
                             f"({by_key} keys posted twice; {by_text} same-text twins)")
    else:
        figures.notes.append("no post carried metadata.event_payload.key")


async def main(args: argparse.Namespace) -> int:
    print("$ " + " ".join(["python", *sys.argv]))
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"{args.kills} kills per store, a run every {1 / args.rate:.2f}s, kill within "
          f"{args.life:.1f}s of serving, posts answered up to {args.post_latency:.0f} ms late, "
          f"model 50-100 ms, seed {args.seed}")
    workdir = Path(tempfile.mkdtemp(prefix="tt-crash-"))
    results = []
    for kind in args.store:
        results.append(await campaign(kind, args, workdir))
    print("\n" + "=" * 78)
    print("$ " + " ".join(["python", *sys.argv]))
    print(f"{'store':7} {'duplicate posts':>15} {'lost replies':>13} {'lost summons':>13} "
          f"{'not acked':>10} {'stuck runs':>11} {'placeholders left':>18}   (targets 0)")
    for f in results:
        print(f"{f.store:7} {f.duplicates:>15} {f.lost_replies:>13} {f.lost_summons:>13} "
              f"{f.gave_up:>10} {f.stuck:>11} {f.placeholders:>18}")
    print("(lost: Slack got a 200 for it, yet it is not in the run's log or never reached the "
          "model; not acked: never got a 200, re-sent until the end)")
    for f in results:
        print(f"\n[{f.store}]")
        for note in f.notes:
            print(f"  - {note}")
    failed = any(f.failed for f in results)
    if not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"\nbot logs kept in {workdir}")
    print("\nRESULT: " + ("FAIL, a figure is above 0" if failed else "PASS, every figure is 0"))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "--serve":
        import logging
        logging.basicConfig(level=logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        _, _, api, store_arg, port_arg, team_arg, low_arg, high_arg = sys.argv
        asyncio.run(serve(api, store_arg, int(port_arg), team_arg, float(low_arg),
                          float(high_arg)))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=["sqlite", "redis"], action="append",
                        help="the store to crash on (repeatable; default: both)")
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs per store (default 50)")
    parser.add_argument("--rate", type=float, default=6.0, help="runs summoned per second")
    parser.add_argument("--life", type=float, default=2.5,
                        help="each kill lands uniformly within this many seconds of serving")
    parser.add_argument("--post-latency", type=float, default=30.0, metavar="MS",
                        help="Slack answers a stored post up to this many ms later")
    parser.add_argument("--stuck-after", type=float, default=60.0, metavar="S",
                        help="a run not finished this long after the last restart is stuck")
    parser.add_argument("--seed", type=int, default=None)
    parsed = parser.parse_args()
    parsed.store = parsed.store or ["sqlite", "redis"]
    if parsed.seed is None:
        parsed.seed = random.randrange(1_000_000)
    sys.exit(asyncio.run(main(parsed)))
