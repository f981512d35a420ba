"""How soon an agent's reply is visible in the thread while the model is still writing it.

    python benchmarks/first_text.py [--words 400] [--seconds 8] [--runs 1]

Everything on loopback, in one process: the fake OpenAI server streams a reply of
`--words` words, one word a chunk, over `--seconds`; threadteam's OpenAI model
(the real `openai` client) reads it and hands each delta to the adapter's poster,
which talks to the fake Slack (real slack_sdk) or the fake Discord (real discord.py)
exactly as the runner has it do: `working`, then `stream` while the model writes,
then `post` of the whole reply.

For each platform and case it prints, in seconds, when people in the thread could
first read some of the reply (the first call that put agent text in the thread:
Slack chat.startStream, or a placeholder post or edit holding text; a Discord
webhook post), counted from the model's first token and from the model request;
and checks that the reply ended up in the thread once and whole. Cases:

- Slack, thread status accepted, streams allowed (chat.startStream under the persona);
- Slack, thread status accepted, streams refused (a placeholder post holding the text);
- Slack, thread status refused (a placeholder post, edited as the text comes);
- Discord (a webhook message under the persona, edited as the text grows).

Target (issue 15): under 1.5 s from the first token, whatever the status line does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from slack_sdk.web.async_client import AsyncWebClient  # noqa: E402

from tests.adapters.test_discord_wire import RecordingHost  # noqa: E402
from tests.fakes.discord import CHANNEL_ID, GUILD_ID, FakeDiscord  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI, Reply  # noqa: E402
from tests.fakes.slack import ALICE, BOT_TOKEN, CHANNEL, TEAM, FakeSlack  # noqa: E402
from threadteam.adapters.discord import DiscordAdapter  # noqa: E402
from threadteam.adapters.slack import SlackApi, SlackPoster  # noqa: E402
from threadteam.adapters.slack.placeholders import PLACEHOLDER  # noqa: E402
from threadteam.bot.memory import LocalMemory  # noqa: E402
from threadteam.bot.retry import RetryPolicy  # noqa: E402
from threadteam.bot.shapes import Outbound, ThreadKey  # noqa: E402
from threadteam.teams.models import ModelPool  # noqa: E402
from threadteam.teams.models.base import ChatMessage, ModelRequest  # noqa: E402
from threadteam.teams.persona import Persona  # noqa: E402

BEAR = Persona("Bear", ":bear:")
TARGET = 1.5


class Timed:
    """When the model request went out, and when its first token reached the poster."""

    def __init__(self) -> None:
        self.asked = 0.0
        self.first = 0.0

    def wrap(self, sink: Callable[[str], Awaitable[None]] | None
             ) -> Callable[[str], Awaitable[None]]:
        async def timed(delta: str) -> None:
            if not self.first and delta:
                self.first = time.monotonic()
            if sink is not None:
                await sink(delta)

        return timed


async def write(openai: FakeOpenAI, reply: str, words: int, seconds: float,
                sink: Callable[[str], Awaitable[None]] | None, timed: Timed) -> str:
    """The model writes `reply` (one word a chunk, over `seconds`) into `sink`."""
    openai.chunk_delay = seconds / words
    openai.queue(Reply(text=reply, chunks=words))
    pool = ModelPool(env={"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": openai.url})
    try:
        model = pool.get("openai:gpt-4o-mini")
        request = ModelRequest(model="openai:gpt-4o-mini", system="Argue the bear case.",
                               messages=(ChatMessage("user", "Rates?", name="alice"),),
                               agent="bear")
        timed.asked = time.monotonic()
        answer = await model.complete(request, timed.wrap(sink))
    finally:
        await pool.aclose()
    return answer.text


Figures = tuple[float, float, bool, str]  # from 1st token, from request, whole once, calls


async def slack_case(openai: FakeOpenAI, reply: str, words: int, seconds: float, *,
                     status: bool, streams: bool) -> Figures:
    fake = FakeSlack()
    await fake.start()
    fake.status_error = None if status else "not_allowed"
    fake.stream_refusal = None if streams else "not_allowed_token_type"
    try:
        async with aiohttp.ClientSession() as session:
            poster = SlackPoster(SlackApi(AsyncWebClient(token=BOT_TOKEN, base_url=fake.api_url,
                                                         session=session)),
                                 memory=LocalMemory())
            key = ThreadKey("slack", TEAM, CHANNEL, fake.add_message(ALICE, "debate: rates?"))
            timed = Timed()
            await poster.working(key, BEAR)
            text = await write(openai, reply, words, seconds, poster.stream(key, BEAR), timed)
            await poster.post(Outbound(key, text, "bench:1", persona=BEAR,
                                       meta={"agent": "bear"}))
            await poster.drain()
            await poster.stop_streaming()
        shown = [c.at for c in fake.calls if c.error is None and _slack_shows(c.method, c.params)]
        bears = [m for m in fake.thread(CHANNEL, key.thread) if m.get("username") == "Bear"]
        whole = " ".join(m["text"] for m in bears).split() == reply.split()
        calls = Counter(c.method.removeprefix("chat.") for c in fake.calls
                        if c.method != "assistant.threads.setStatus")
        return shown[0] - timed.first, shown[0] - timed.asked, whole, _said(calls)
    finally:
        await fake.aclose()


def _slack_shows(method: str, params: dict) -> bool:
    """Does this call put agent text where people see it?"""
    if method == "chat.startStream":
        return bool(params.get("markdown_text"))
    text = str(params.get("text") or "")
    if method == "chat.postMessage":  # a placeholder holding text, or the reply itself
        return params.get("username") == "Bear" and bool(text) and PLACEHOLDER not in text
    if method == "chat.update":  # the placeholder edited with the text so far
        return bool(text) and PLACEHOLDER not in text
    return False


def _said(calls: Counter[str]) -> str:
    return ", ".join(f"{n} {method}" for method, n in sorted(calls.items()))


async def discord_case(openai: FakeOpenAI, reply: str, words: int, seconds: float) -> Figures:
    fake = FakeDiscord()
    await fake.start()
    adapter = DiscordAdapter(fake.token, api_base=fake.url, memory=LocalMemory(),
                             retry=RetryPolicy(first_backoff=0.01, max_backoff=0.02))
    try:
        await adapter.start(RecordingHost(), within=10)  # type: ignore[arg-type]
        key = ThreadKey("discord", str(GUILD_ID), str(CHANNEL_ID), str(CHANNEL_ID))
        timed = Timed()
        await adapter.poster.working(key, BEAR)
        text = await write(openai, reply, words, seconds, adapter.poster.stream(key, BEAR), timed)
        await adapter.poster.post(Outbound(key, text, "bench:1", persona=BEAR,
                                           meta={"agent": "bear"}))
    finally:
        await adapter.aclose()
    try:
        shown = [c.at for c in fake.calls_to("POST", r"/webhooks/\d+/[^/]+", status=200)]
        bears = [m for m in fake.posts_in(CHANNEL_ID) if m["author"]["username"] == "🐻 Bear"]
        whole = " ".join(m["content"] for m in bears).split() == reply.split()
        calls = Counter(f"webhook {c.method}" for c in fake.calls
                        if c.path.startswith("/webhooks/"))
        return shown[0] - timed.first, shown[0] - timed.asked, whole, _said(calls)
    finally:
        await fake.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    reply = " ".join(f"point{i}" for i in range(args.words))
    cases: list[tuple[str, Callable[[FakeOpenAI], Awaitable[Figures]]]] = [
        ("Slack, status accepted, streams allowed", lambda o: slack_case(
            o, reply, args.words, args.seconds, status=True, streams=True)),
        ("Slack, status accepted, streams refused", lambda o: slack_case(
            o, reply, args.words, args.seconds, status=True, streams=False)),
        ("Slack, status refused", lambda o: slack_case(
            o, reply, args.words, args.seconds, status=False, streams=True)),
        ("Discord", lambda o: discord_case(o, reply, args.words, args.seconds)),
    ]
    print(f"a {args.words}-word reply streamed over {args.seconds:g} s; {args.runs} run(s) each; "
          f"seconds until people can read some of it (target < {TARGET:g} s from the first token)")
    print(f"{'case':44} {'from 1st token':>15} {'from request':>13}  whole, once; calls for it")
    with tempfile.TemporaryDirectory():
        async with FakeOpenAI() as openai:
            for name, case in cases:
                figures = [await case(openai) for _ in range(args.runs)]
                token = statistics.median(f[0] for f in figures)
                asked = statistics.median(f[1] for f in figures)
                whole = all(f[2] for f in figures)
                verdict = "ok" if token < TARGET else "SLOW"
                print(f"{name:44} {token:>13.3f} s {asked:>11.3f} s  {'yes' if whole else 'NO'}"
                      f"  {verdict}; {figures[-1][3]}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
