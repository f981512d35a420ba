"""A reply visible while it is written, whatever the thread's status line does: a Slack
stream under the persona, else a placeholder post holding the text; the reply itself lands
in that message once, with its key, and a crash mid-stream leaves no twin and no half."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import ALICE, BOT_TOKEN, CHANNEL, TEAM, FakeSlack, wait_until
from threadteam.adapters.slack import SlackApi, SlackPoster
from threadteam.adapters.slack.placeholders import PLACEHOLDER
from threadteam.adapters.slack.posted import EVENT_TYPE
from threadteam.bot.memory import LocalMemory
from threadteam.bot.shapes import Memory, Outbound, ThreadKey
from threadteam.teams.persona import Persona

BEAR = Persona("Bear", ":bear:")
LIVE_PING = re.compile(r"<!(?:here|channel|everyone)|(?<![\w@])@(?:here|channel|everyone)\b",
                       re.IGNORECASE)
WORDS = [f"word{i} " for i in range(12)]
REPLY = "".join(WORDS).strip()


@pytest.fixture
async def key(fake_slack: FakeSlack) -> ThreadKey:
    """A thread Alice started (so a stream there is for her)."""
    root = fake_slack.add_message(ALICE, "debate: rates?")
    return ThreadKey("slack", TEAM, CHANNEL, root)


@pytest.fixture
async def posters(fake_slack: FakeSlack) -> AsyncIterator[Callable[[Memory], SlackPoster]]:
    """Makes posters (processes) on the fake, sharing what memory they are given."""
    made: list[SlackPoster] = []
    async with aiohttp.ClientSession() as session:
        def make(memory: Memory) -> SlackPoster:
            client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url, session=session)
            made.append(SlackPoster(SlackApi(client), memory=memory))
            return made[-1]

        yield make
        for p in made:
            await p.drain()
            await p.stop_streaming()


def reply(key: ThreadKey, text: str = REPLY, n: int = 0, **kw: object) -> Outbound:
    return Outbound(key, text, f"run:{n}", persona=BEAR, meta={"agent": "bear"}, **kw)  # type: ignore[arg-type]


async def write(sink: Callable[[str], Awaitable[None]], words: list[str],
                until: Callable[[], object]) -> int:
    """Feed `words` to `sink` one at a time (10 ms apart) until `until()` holds; how many
    were written by then (the rest are written after)."""
    shown_after = 0
    for i, w in enumerate(words):
        await sink(w)
        if not shown_after and until():
            shown_after = i + 1
        await asyncio.sleep(0.01 if shown_after else 0.1)
    return shown_after or len(words)


def bears(fake: FakeSlack, key: ThreadKey) -> list[dict]:
    return [m for m in fake.thread(CHANNEL, key.thread) if m.get("username") == "Bear"]


async def test_with_the_status_line_the_reply_streams_under_the_persona(
        fake_slack, posters, key) -> None:
    poster = posters(LocalMemory())
    await poster.working(key, BEAR)
    sink = poster.stream(key, BEAR)
    assert sink is not None
    written = await write(sink, WORDS, lambda: fake_slack.calls_to("chat.startStream", ok=True))
    assert written < len(WORDS)  # people saw it before the model finished
    [start] = fake_slack.calls_to("chat.startStream")
    assert {k: start.params.get(k) for k in ("username", "icon_emoji", "recipient_user_id",
                                             "recipient_team_id", "thread_ts")} == {
        "username": "Bear", "icon_emoji": ":bear:", "recipient_user_id": ALICE,
        "recipient_team_id": TEAM, "thread_ts": key.thread}
    await wait_until(lambda: fake_slack.calls_to("chat.appendStream"), what="an append")
    streamed = start.params["markdown_text"] + "".join(
        c.params["markdown_text"] for c in fake_slack.calls_to("chat.appendStream"))
    assert REPLY.startswith(streamed.strip()) and len(streamed) > len(start.params["markdown_text"])

    message_id = await poster.post(reply(key))
    [bear] = bears(fake_slack, key)  # one message: the stream became the reply
    assert bear["ts"] == message_id == start_ts(fake_slack)
    assert bear["text"] == REPLY and bear["blocks"][0]["text"]["text"] == REPLY
    assert bear["metadata"] == {"event_type": EVENT_TYPE, "event_payload": {"key": "run:0",
                                                                            "part": 0}}
    assert bear["streaming_state"] == "completed" and bear["icons"] == {"emoji": ":bear:"}
    assert fake_slack.calls_to("chat.postMessage") == [] and fake_slack.deleted == []
    assert fake_slack.calls_to("assistant.threads.setStatus")  # the status line ran alongside


def start_ts(fake: FakeSlack) -> str:
    """The ts of the (one) message that began as a stream."""
    [ts] = [m["ts"] for m in fake.messages.values() if "streaming_state" in m]
    return ts


async def test_a_stream_slack_ended_goes_on_as_edits_and_the_reply_is_whole(
        fake_slack, posters, key) -> None:
    fake_slack.stream_lifetime = 1.2  # Slack ends streams by itself (after ~5 minutes)
    poster = posters(LocalMemory())
    await poster.working(key, BEAR)
    words = [f"word{i} " for i in range(30)]  # three seconds of writing
    await write(poster.stream(key, BEAR), words, lambda: False)  # type: ignore[arg-type]
    await wait_until(lambda: fake_slack.calls_to("chat.update", ok=True), what="an edit")
    assert fake_slack.calls_to("chat.appendStream", ok=False)  # Slack said it was over ...
    [edit, *_] = fake_slack.calls_to("chat.update")  # ... so the text went on as edits
    assert edit.params["blocks"][0]["text"]["text"] == edit.params["text"]
    text = "".join(words).strip()
    message_id = await poster.post(reply(key, text))
    assert [(m["ts"], m["text"]) for m in bears(fake_slack, key)] == [(message_id, text)]


async def test_a_stream_pings_no_channel(fake_slack, posters, key) -> None:
    pings = "Heads up <!channel> <!here> <!everyone> @channel @here @Everyone, see the plan. "
    poster = posters(LocalMemory())
    await poster.working(key, BEAR)
    await write(poster.stream(key, BEAR), [w + " " for w in pings.split()] * 2,  # type: ignore[arg-type]
                lambda: False)
    await wait_until(lambda: fake_slack.calls_to("chat.appendStream", ok=True), what="appends")
    sent = [c.params["markdown_text"] for c in fake_slack.calls
            if c.method in ("chat.startStream", "chat.appendStream")]
    assert sent and not [t for t in sent if LIVE_PING.search(t)], sent
    assert "here" in "".join(sent)  # the words are there, only defused


async def test_a_stream_slack_will_not_edit_is_replaced_by_a_post(
        fake_slack, posters, key) -> None:
    poster = posters(LocalMemory())
    await poster.working(key, BEAR)
    await write(poster.stream(key, BEAR), WORDS,  # type: ignore[arg-type]
                lambda: fake_slack.calls_to("chat.startStream", ok=True))
    fake_slack.fail("chat.update", "cant_update_message")
    message_id = await poster.post(reply(key))
    assert [(m["ts"], m["text"]) for m in bears(fake_slack, key)] == [(message_id, REPLY)]
    assert [m.get("streaming_state") for m in fake_slack.deleted] == ["completed"]


async def test_a_long_streamed_reply_is_split_at_slacks_limit(fake_slack, posters, key) -> None:
    paragraphs = [f"Point {i}: " + "evidence " * 170 for i in range(5)]  # ~7,500 characters
    words = [w + " " for w in "\n\n".join(paragraphs).split(" ")]
    poster = posters(LocalMemory())
    await poster.working(key, BEAR)
    sink = poster.stream(key, BEAR)
    assert sink is not None
    for i in range(0, len(words), 60):  # about two seconds of writing
        await sink("".join(words[i:i + 60]))
        await asyncio.sleep(0.05)
    await wait_until(lambda: fake_slack.calls_to("chat.startStream", ok=True), what="the stream")
    text = "\n\n".join(p.strip() for p in paragraphs)
    first = await poster.post(reply(key, text))
    parts = bears(fake_slack, key)
    assert len(parts) > 1 and all(len(m["text"]) <= 3000 for m in parts)
    assert parts[0]["ts"] == first == start_ts(fake_slack)  # the stream is the first part
    assert " ".join(m["text"] for m in parts).split() == text.split()
    assert [m["metadata"]["event_payload"] for m in parts] == [
        {"key": "run:0", "part": i} for i in range(len(parts))]


async def test_a_reply_written_at_once_is_simply_posted(fake_slack, posters, key) -> None:
    poster = posters(LocalMemory())
    await poster.working(key, BEAR)
    await (poster.stream(key, BEAR))(REPLY)  # type: ignore[misc]
    await poster.post(reply(key))
    await poster.drain()
    assert fake_slack.calls_to("chat.startStream") == []
    assert [m["text"] for m in bears(fake_slack, key)] == [REPLY]


async def test_a_workspace_that_refuses_streams_gets_a_placeholder_holding_the_text(
        fake_slack, posters, key) -> None:
    fake_slack.stream_refusal = "not_allowed_token_type"
    poster = posters(LocalMemory())
    await poster.working(key, BEAR)
    sink = poster.stream(key, BEAR)
    assert sink is not None
    written = await write(sink, WORDS, lambda: fake_slack.calls_to("chat.postMessage", ok=True))
    assert written < len(WORDS)
    [placeholder] = fake_slack.calls_to("chat.postMessage")
    assert placeholder.params["username"] == "Bear" and PLACEHOLDER not in placeholder.params["text"]
    assert placeholder.params["text"].startswith("word0 word1")  # the reply so far, not "thinking"
    message_id = await poster.post(reply(key))
    assert [(m["ts"], m["text"]) for m in bears(fake_slack, key)] == [(message_id, REPLY)]
    # The channel is not asked again: the next turn goes straight to a placeholder.
    await poster.working(key, BEAR)
    await write(poster.stream(key, BEAR), WORDS, lambda: False)  # type: ignore[arg-type]
    await poster.post(reply(key, n=1))
    assert len(fake_slack.calls_to("chat.startStream")) == 1
    assert [m["text"] for m in bears(fake_slack, key)] == [REPLY, REPLY]


async def test_a_stream_that_hides_the_persona_is_replaced_by_a_placeholder(
        fake_slack, posters, key) -> None:
    fake_slack.stream_faces = False  # the workspace shows streams under the app's name
    poster = posters(LocalMemory())
    await poster.working(key, BEAR)
    await write(poster.stream(key, BEAR), WORDS,  # type: ignore[arg-type]
                lambda: fake_slack.calls_to("chat.postMessage", ok=True))
    message_id = await poster.post(reply(key))
    [taken_down] = fake_slack.deleted  # the stream nobody could tell was Bear's
    assert "streaming_state" in taken_down and "username" not in taken_down
    thread = fake_slack.thread(CHANNEL, key.thread)
    assert [(m.get("username"), m["ts"], m["text"]) for m in thread] == [
        ("Bear", message_id, REPLY)]
    await poster.working(key, BEAR)  # that workspace is not asked to stream again
    await write(poster.stream(key, BEAR), WORDS, lambda: False)  # type: ignore[arg-type]
    await poster.post(reply(key, n=1))
    assert len(fake_slack.calls_to("chat.startStream")) == 1


async def test_a_thread_the_bot_started_streams_into_a_placeholder(fake_slack, posters) -> None:
    root = await posters(LocalMemory()).root(CHANNEL, "<@U0ALICE> summoned *debate*: rates?")
    key = ThreadKey("slack", TEAM, CHANNEL, root)  # a stream would be for no one
    poster = posters(LocalMemory())
    await poster.working(key, BEAR)
    await write(poster.stream(key, BEAR), WORDS,  # type: ignore[arg-type]
                lambda: fake_slack.calls_to("chat.postMessage", ok=True)[1:])
    await poster.post(reply(key))
    assert fake_slack.calls_to("chat.startStream") == []
    assert [m["text"] for m in bears(fake_slack, key)] == [REPLY]


@pytest.mark.parametrize("crash", ["after the stream opened", "with its answer lost"])
async def test_a_crash_mid_stream_leaves_one_whole_reply(fake_slack, posters, key,
                                                         crash) -> None:
    memory = LocalMemory()  # what the store keeps across the restart
    if crash == "with its answer lost":
        fake_slack.drop_answer("chat.startStream")
    crashed = posters(memory)
    await crashed.working(key, BEAR)
    await write(crashed.stream(key, BEAR), WORDS[:6],  # type: ignore[arg-type]
                lambda: False)
    await wait_until(lambda: [m for m in fake_slack.messages.values() if "streaming_state" in m],
                     what="the stream")
    await crashed.drain()  # ... and the process dies with its stream half written

    again = posters(memory)  # the resumed run asks Bear again, and this time it answers
    await again.working(key, BEAR)
    message_id = await again.post(reply(key, unsure=True))
    thread = fake_slack.thread(CHANNEL, key.thread)
    assert [(m.get("username"), m["ts"], m["text"]) for m in thread] == [
        ("Bear", message_id, REPLY)]
    assert all(m.get("streaming_state", "completed") == "completed" for m in thread)


async def test_an_emoji_avatar_shows_before_the_name(fake_slack, posters, key) -> None:
    bull = Persona("Bull", "🐂")  # no icon field takes emoji characters
    await posters(LocalMemory()).post(Outbound(key, "Growth!", "run:9", persona=bull))
    [post] = fake_slack.thread(CHANNEL, key.thread)
    assert post["username"] == "🐂 Bull" and post["text"] == "Growth!"


async def test_a_run_streams_its_agents_reply_under_the_persona(stack_factory,
                                                               fake_openai) -> None:
    answer = "Which **plan** do you prefer: A, B or C? I will compare them on cost."
    fake_openai.queue_text(answer, chunks=6)
    fake_openai.chunk_delay = 0.4  # two to three seconds of writing
    s = await stack_factory("http", model_env={
        "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake_openai.url,
        "THREADTEAM_MODEL": "openai:gpt-4o-mini"})
    ts = await s.fake.say(ALICE, "<@U0BOT> interview Which plan?")
    await wait_until(lambda: any("waiting for you" in m["text"] for m in s.thread(ts)),
                     within=15, what="the analyst's turn")
    [start] = s.fake.calls_to("chat.startStream", ok=True)  # the status line was accepted
    assert start.params["username"] == "Analyst" and start.params["recipient_user_id"] == ALICE
    assert start.params["icon_url"] == "https://example.com/analyst.png"
    [analyst] = [m for m in s.thread(ts) if m.get("username") == "Analyst"]
    assert analyst["text"] == "Which *plan* do you prefer: A, B or C? I will compare them on cost."
    assert analyst["streaming_state"] == "completed"
    assert analyst["metadata"]["event_type"] == EVENT_TYPE
    assert not [c for c in s.fake.calls_to("chat.postMessage")  # posted once: as the stream
                if c.params.get("username") == "Analyst"]
