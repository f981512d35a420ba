"""Memory under a long fuzz: does the Slack bot's resident memory stay bounded?

    python benchmarks/memory_fuzz.py [--messages 2000] [--store sqlite|redis] [--seed N]

Two processes on loopback, nothing leaves the machine (the set-up of
`crash_campaign.py`): the bot child (the real SlackAdapter in HTTP mode and a Host
serving Slack on the store, a quick scripted model, 50-100 ms a turn, whose answer
repeats the start of the person's last message, so odd text also comes back from the
model) with a team in which a helper answers every message in the thread; and here,
the fake Slack and a sender of signed events.

The bot's idle RSS is taken once it serves; then --messages fuzzed events go out on
--concurrency connections: summons (a new run each), replies into runs' threads (half
of them into five hot threads, whose logs grow long), mentions and commands in
threads, messages in threads without a run. Texts are of random length up to
--max-chars (half uniform, half log-uniform): random Unicode with lone surrogates
(escaped in the JSON, as `\\ud800`), Markdown shapes, pings, Slack's `&lt;` escapes;
now and then a number, a list, an object or null stands where `text` belongs. The
bot's RSS is sampled every 50 ms until it has been quiet for 3 s.

Figures: idle RSS, peak RSS and its ratio to idle (target: within 2x), RSS at the end,
and the events answered with anything but 200 (target 0). Exit status 1 if either
misses its target. psutil is used if installed, else /proc/<pid>/status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.crash_campaign import (  # noqa: E402
    BotProcess,
    CrashSlack,
    Sender,
    envelope,
    free_port,
    redis_url,
    rss_of,
)
from tests.fakes.slack import ALICE, BOB, BOT_USER, CHANNEL, MALLORY, TEAM  # noqa: E402

__all__ = ["Fuzz"]

_PEOPLE = (ALICE, ALICE, BOB, MALLORY, "U0NOBODY")  # the last one users.info does not know
_MARKDOWN = (
    "# Heading\n", "## Sub *heading*\n", "**bold** ", "__under__ ", "*it* ", "_it_ ", "~~gone~~ ",
    "`code` ", "```python\nprint('hi')\n```\n", "```\nunclosed fence\n", "> quoted line\n",
    ">>> long quote\n", "- item\n", "  - nested item\n", "1. first\n", "10) tenth\n",
    "| a | b |\n|---|---|\n| 1 | 2 |\n", "[link](https://example.com/x?a=1&b=2) ",
    "<https://example.com|label> ", "![img](https://example.com/i.png) ", "---\n", "***\n",
    "\\*escaped\\* ", "<b>html</b> ", "&lt;not a tag&gt; &amp; ", "a_b_c*d*e ", "****\n",
)
_PINGS = (f"<@{BOT_USER}> ", f"<@{ALICE}> ", "<!channel> ", "<!here> ", "<!everyone> ",
          f"<#{CHANNEL}> ", "<#C0OTHER|other> ", "<!subteam^S0LEADS> ", "@channel ", "@here ",
          "<@U0BOT|threadteam> ", "<mailto:a@b.c|a@b.c> ")
_COMMANDS = ("status", "help", "stop", "continue", "retry", "approve", "deny 3 no", "approve 99",
             "continue and be brief")


class Fuzz:
    """Random texts and events, from one seed."""

    def __init__(self, rng: random.Random, max_chars: int) -> None:
        self.rng, self.max_chars = rng, max_chars

    def length(self) -> int:
        """Half uniform over 1 .. max_chars, half log-uniform (short texts are common)."""
        if self.rng.random() < 0.5:
            return self.rng.randint(1, self.max_chars)
        return int(self.max_chars ** self.rng.random())

    def thread(self, runs: list[str]) -> str:
        """A run's thread: half the time one of the first five (long, hot threads)."""
        return self.rng.choice(runs[:5] if self.rng.random() < 0.5 else runs)

    def text(self) -> str:
        """A person's text: pieces of Markdown, pings, words and random code points."""
        rng, want = self.rng, self.length()
        parts: list[str] = []
        size = 0
        while size < want:
            pick = rng.random()
            if pick < 0.25:
                piece = rng.choice(_MARKDOWN)
            elif pick < 0.35:
                piece = rng.choice(_PINGS)
            elif pick < 0.45:
                piece = self._unicode(rng.randint(1, 40))
            elif pick < 0.50:
                piece = chr(rng.randint(0xD800, 0xDFFF))  # a lone surrogate
            elif pick < 0.55:
                piece = rng.choice(("\u200b", "\u202e", "\ufeff", "\u0000", "\r\n", "\t", "🧑‍⚖️",
                                    "e\u0301", "\U0001f600" * 3, "ﷺ", "\u2028"))
            elif pick < 0.60:
                piece = str(rng.choice((0, -1, 3.14, 10**30, "NaN", "1e309"))) + " "
            else:
                piece = " ".join(rng.choice(("the", "run", "approve", "FINAL", "ANSWER", "stop",
                                             "ok", "x" * rng.randint(1, 300), "café", "日本語"))
                                 for _ in range(rng.randint(1, 12))) + " "
            parts.append(piece)
            size += len(piece)
        return "".join(parts)[:want]

    def _unicode(self, n: int) -> str:
        out = []
        for _ in range(n):
            cp = self.rng.choice((self.rng.randint(0x20, 0x7E), self.rng.randint(0xA0, 0xD7FF),
                                  self.rng.randint(0xE000, 0xFFFD),
                                  self.rng.randint(0x10000, 0x10FFFF)))
            out.append(chr(cp))
        return "".join(out)

    def odd(self) -> Any:
        """Something that is not a string where `text` belongs."""
        return self.rng.choice((42, -7.5, [], ["a", 1], {"text": "nested"}, None, True,
                                10**40, [{"type": "rich_text"}]))


def fuzz_events(count: int, fuzz: Fuzz, fake: CrashSlack, runs: list[str]
                      ) -> list[tuple[str, str]]:
    """(kind, JSON body) for `count` events; summons come first often enough that the
    replies have threads to go to (`runs` fills as summons are made)."""
    rng, out = fuzz.rng, []
    for i in range(count):
        user = rng.choice(_PEOPLE)
        ts = fake._next_ts()
        pick = rng.random()
        event: dict[str, Any] = {"type": "message", "user": user, "ts": ts, "channel": CHANNEL,
                                 "event_ts": ts, "team": TEAM, "channel_type": "channel",
                                 "client_msg_id": str(uuid.uuid4())}
        if pick < 0.10 or not runs or i < 10:  # a summon: a new run in its own thread
            kind = "summon"
            event |= {"type": "app_mention", "text": f"<@{BOT_USER}> chat {fuzz.text()}"}
            event.pop("channel_type")
            runs.append(ts)
            out.append(("summon-twin", envelope({**event, "type": "message",
                                                 "channel_type": "channel"})))
        elif pick < 0.80:
            kind = "reply"
            event |= {"text": fuzz.text(), "thread_ts": fuzz.thread(runs)}
        elif pick < 0.85:
            kind = "command"
            event |= {"text": rng.choice(_COMMANDS), "thread_ts": fuzz.thread(runs)}
        elif pick < 0.90:
            kind = "mention in a thread"
            event |= {"type": "app_mention", "text": f"<@{BOT_USER}> {fuzz.text()}",
                      "thread_ts": fuzz.thread(runs)}
            event.pop("channel_type")
        elif pick < 0.95:
            kind = "no run there"
            event |= {"text": fuzz.text(), "thread_ts": fake._next_ts()}
        else:
            kind = "odd text"
            event |= {"text": fuzz.odd(), "thread_ts": fuzz.thread(runs)}
        out.append((kind, envelope(event)))
    return out


async def sample(pid: int, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(rss_of(pid)[0])
        await asyncio.sleep(0.05)


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


async def main(args: argparse.Namespace) -> int:
    print("$ " + " ".join(["python", *sys.argv]))
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"store {args.store}, seed {args.seed}")
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="tt-fuzz-"))
    redis_proc = None
    if args.store == "sqlite":
        store_url = f"sqlite:///{workdir / 'fuzz.sqlite3'}"
    else:
        url, redis_proc = redis_url()
        store_url = f"{url}{'&' if '?' in url else '?'}prefix=tt-fuzz-{uuid.uuid4().hex[:8]}:"
    fake = CrashSlack()
    await fake.start()
    port = free_port()
    fake.events_url = f"http://127.0.0.1:{port}/slack/events"
    log_path = workdir / "bot.log"
    bot = BotProcess(fake.api_url, store_url, port, "chat", log_path)
    sender = Sender(fake.events_url, deadline=30.0)
    statuses: Counter[str] = Counter()
    bad: Counter[str] = Counter()
    samples: list[int] = []
    stop = asyncio.Event()
    try:
        await bot.start()
        await asyncio.sleep(2.0)  # start-up settles: lazy imports, the first collections
        idle = rss_of(bot.pid)[0]
        sampling = asyncio.create_task(sample(bot.pid, samples, stop))
        runs: list[str] = []
        events = fuzz_events(args.messages, Fuzz(rng, args.max_chars), fake, runs)
        chars = sum(len(body) for _, body in events)
        queue = list(reversed(events))
        began = time.monotonic()

        async def worker() -> None:
            while queue:
                kind, body = queue.pop()
                status = await sender.once(body)
                statuses[status] += 1
                if status != "200":
                    bad[f"{kind}: {status}"] += 1

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        sent = time.monotonic() - began
        settled = await quiet_for(fake, 3.0, limit=args.settle)
        end, peak_hwm = rss_of(bot.pid)
        stop.set()
        await sampling
        await bot.stop()
        await fake.drain()
    finally:
        await bot.kill()
        await sender.aclose()
        await fake.aclose()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(5)
    peak = max([*samples, peak_hwm])
    ratio = peak / idle
    non200 = sum(n for s, n in statuses.items() if s != "200")
    errors = [line for line in log_path.read_text(errors="replace").splitlines()
              if line.startswith(("ERROR", "CRITICAL", "Traceback"))]
    print(f"\n{args.messages} fuzzed events ({len(events)} requests with the summons' twins, "
          f"{chars / 2**20:.1f} MB of JSON, {len(runs)} runs) sent in {sent:.1f}s on "
          f"{args.concurrency} connections; the bot "
          + (f"was quiet {settled:.1f}s after the last one" if settled is not None
             else f"was still posting {args.settle:.0f}s after the last one"))
    print(f"  bot posts: {len(fake.calls_to('chat.postMessage', ok=True))} messages, "
          f"{len(fake.calls_to('chat.update', ok=True))} edits, "
          f"{len(fake.calls_to('chat.postEphemeral', ok=True))} ephemeral notes")
    print("\n" + "=" * 78)
    print("$ " + " ".join(["python", *sys.argv]))
    print(f"idle RSS:            {mb(idle)}")
    print(f"peak RSS:            {mb(peak)}  = {ratio:.2f}x idle  (target: within 2x)")
    print(f"RSS once quiet:      {mb(end)}  = {end / idle:.2f}x idle")
    print(f"non-200 answers:     {non200} of {len(events)}  (target 0)"
          + (f": {dict(bad.most_common(6))}" if bad else ""))
    print(f"bot log:             {len(errors)} ERROR lines"
          + (f", e.g. {errors[0][:150]!r}" if errors else ""))
    failed = ratio > 2.0 or non200 > 0
    if failed:
        print(f"bot log kept in {log_path}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nRESULT: " + ("FAIL, a figure misses its target" if failed
                          else "PASS, both figures on target"))
    return 1 if failed else 0


async def quiet_for(fake: CrashSlack, seconds: float, limit: float) -> float | None:
    """Wait until no Web API call reached the fake for `seconds`; how long that took
    (None if `limit` passed first)."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        seen = len(fake.calls)
        await asyncio.sleep(seconds)
        if len(fake.calls) == seen:
            return time.monotonic() - began - seconds
    return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="fuzzed events (default 2000)")
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--concurrency", type=int, default=8, help="connections sending")
    parser.add_argument("--max-chars", type=int, default=40_000, help="longest text")
    parser.add_argument("--settle", type=float, default=300.0, metavar="S",
                        help="wait at most this long for the bot to go quiet")
    parser.add_argument("--seed", type=int, default=None)
    parsed = parser.parse_args()
    if parsed.seed is None:
        parsed.seed = random.randrange(1_000_000)
    sys.exit(asyncio.run(main(parsed)))
