"""SlackPoster against the fake Slack: order, rate limits, splits and approvals."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import ALICE, BOT_TOKEN, CHANNEL, FakeSlack, wait_until
from threadteam.adapters.slack import SlackApi, SlackPoster
from threadteam.adapters.slack.inbound import APPROVE_ACTION
from threadteam.bot.errors import PlatformError
from threadteam.bot.memory import StoreMemory
from threadteam.bot.retry import RetryPolicy
from threadteam.bot.shapes import ApprovalPrompt, Outbound, ThreadKey
from threadteam.teams.persona import Persona

KEY = ThreadKey("slack", "T0FAKE", CHANNEL, "1700000000.000001")
BEAR = Persona("Bear", ":bear:")


@pytest.fixture
async def poster(fake_slack: FakeSlack) -> AsyncIterator[SlackPoster]:
    async with aiohttp.ClientSession() as session:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url, session=session)
        p = SlackPoster(SlackApi(client))
        yield p
        await p.drain()
        await p.stop_streaming()


def out(text: str, n: int = 0, **kw) -> Outbound:
    return Outbound(KEY, text, f"run:{n}", persona=BEAR, meta={"agent": "bear"}, **kw)


async def test_racing_posts_keep_their_order_through_a_429_burst(fake_slack, poster) -> None:
    fake_slack.rate_limit("chat.postMessage", times=2, retry_after=1)
    await asyncio.gather(*(poster.post(out(f"message {i}", i)) for i in range(6)))
    texts = [c.params["text"] for c in fake_slack.calls_to("chat.postMessage", ok=True)]
    assert texts == [f"message {i}" for i in range(6)]


async def test_other_threads_are_not_held_up_by_one_threads_queue(fake_slack, poster) -> None:
    other = ThreadKey("slack", "T0FAKE", CHANNEL, "1700000000.000002")
    fake_slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    waiting = asyncio.ensure_future(poster.post(out("first")))  # meets the 429, waits 1 s
    await wait_until(lambda: fake_slack.calls_to("chat.postMessage"))
    await poster.post(Outbound(other, "elsewhere", "run2:0"))
    assert not waiting.done()
    await waiting
    texts = [c.params["text"] for c in fake_slack.calls_to("chat.postMessage", ok=True)]
    assert texts == ["elsewhere", "first"]


async def test_a_long_approval_has_its_buttons_on_its_last_part(fake_slack, poster) -> None:
    text = "\n\n".join(f"Section {i}. " + "detail " * 300 for i in range(3))
    prompt = ApprovalPrompt("call_7", "post_message", {"channel": "#x"})
    message_id = await poster.post(Outbound(KEY, text, "run:approval:call_7", persona=BEAR,
                                            approval=prompt))
    posts = fake_slack.calls_to("chat.postMessage")
    assert len(posts) > 1
    assert ["blocks" in c.params for c in posts] == [False] * (len(posts) - 1) + [True]
    last = fake_slack.message(CHANNEL, message_id)
    assert [e["value"] for b in last["blocks"] if b["type"] == "actions"
            for e in b["elements"]] == ["call_7"] * 3  # Approve, for this run, Deny
    await poster.edit(Outbound(KEY, "✅ Approved by <@U0ALICE>", "k:decided", persona=BEAR),
                      message_id)
    assert not [b for b in fake_slack.message(CHANNEL, message_id)["blocks"]
                if b["type"] == "actions"]
    assert APPROVE_ACTION not in str(fake_slack.message(CHANNEL, message_id))


async def test_a_post_to_a_channel_has_no_thread(fake_slack, poster) -> None:
    await poster.post(Outbound(ThreadKey("slack", "T0FAKE", "#announcements", ""), "Hi", "k"))
    (call,) = fake_slack.calls_to("chat.postMessage")
    assert call.params["channel"] == "#announcements" and "thread_ts" not in call.params


async def test_a_refusal_is_a_platform_error_naming_the_method(fake_slack, poster) -> None:
    fake_slack.fail("chat.postMessage", "channel_not_found")
    with pytest.raises(PlatformError, match=r"chat.postMessage \(channel_not_found\)"):
        await poster.post(out("lost"))


async def test_without_assistant_status_a_placeholder_under_the_persona_becomes_the_reply(
        fake_slack, poster) -> None:
    fake_slack.status_error = "not_allowed"
    await poster.working(KEY, BEAR)
    await poster.drain()
    [placeholder] = fake_slack.calls_to("chat.postMessage")
    assert placeholder.params["username"] == "Bear" and "thinking" in placeholder.params["text"]
    message_id = await poster.post(out("Risk!"))
    [update] = fake_slack.calls_to("chat.update")
    assert update.params["ts"] == message_id == fake_slack.thread(CHANNEL, KEY.thread)[0]["ts"]
    assert [(m["username"], m["text"]) for m in fake_slack.thread(CHANNEL, KEY.thread)] == [
        ("Bear", "Risk!")]

    await poster.working(KEY, BEAR)  # the next turn: the channel is known to have no status
    await poster.post(out("More risk.", 1))
    assert len(fake_slack.calls_to("assistant.threads.setStatus")) == 1
    assert [m["text"] for m in fake_slack.thread(CHANNEL, KEY.thread)] == ["Risk!", "More risk."]


async def test_streamed_text_fills_the_placeholder_at_most_once_a_second(fake_slack, poster) -> None:
    fake_slack.status_error = "not_allowed"
    await poster.working(KEY, BEAR)
    sink = poster.stream(KEY, BEAR)
    assert sink is not None and poster.stream(KEY, Persona("Bull", ":ox:")) is None
    words = [f"word{i} " for i in range(25)]
    for word in words:  # 2.5 s of streaming
        await sink(word)
        await asyncio.sleep(0.1)
    final = "".join(words).strip()
    message_id = await poster.post(out(final))
    *streamed, last = fake_slack.calls_to("chat.update")
    assert 2 <= len(streamed) <= 4, [c.params["text"] for c in streamed]
    assert all(c.params["ts"] == message_id and c.params["text"].endswith(" …") for c in streamed)
    shown = [c.params["text"].removesuffix(" …").strip() for c in streamed]
    assert all(final.startswith(text) for text in shown) and shown == sorted(shown, key=len)
    assert all(b.at - a.at >= 0.9 for a, b in itertools.pairwise(streamed))
    assert last.params["text"] == final
    assert fake_slack.message(CHANNEL, message_id)["text"] == final


async def test_another_speaker_takes_the_placeholder_down(fake_slack, poster) -> None:
    fake_slack.status_error = "not_allowed"
    await poster.working(KEY, BEAR)
    await poster.post(Outbound(KEY, "The model failed; reply `retry`.", "run:1", notice=True))
    [deleted] = fake_slack.deleted
    assert deleted["username"] == "Bear"
    assert [m["text"] for m in fake_slack.thread(CHANNEL, KEY.thread)] == [
        "The model failed; reply `retry`."]


async def test_an_approval_lands_in_the_placeholder_with_its_buttons(fake_slack, poster) -> None:
    fake_slack.status_error = "not_allowed"
    await poster.working(KEY, BEAR)
    prompt = ApprovalPrompt("call_9", "post_message", {"channel": "#x"})
    message_id = await poster.post(Outbound(KEY, "May I post?", "run:approval:call_9",
                                            persona=BEAR, approval=prompt))
    assert len(fake_slack.calls_to("chat.postMessage")) == 1  # the placeholder, nothing else
    assert any(b["type"] == "actions" for b in fake_slack.message(CHANNEL, message_id)["blocks"])
    await poster.edit(Outbound(KEY, "✅ Approved by <@U0ALICE>", "k:decided", persona=BEAR),
                      message_id)
    assert fake_slack.message(CHANNEL, message_id)["text"] == "✅ Approved by <@U0ALICE>"


async def test_a_placeholder_left_by_a_crash_is_reused_or_taken_down(fake_slack, store) -> None:
    fake_slack.status_error = "not_allowed"
    bull = Persona("Bull", ":ox:")
    async with aiohttp.ClientSession() as session:
        def restarted() -> SlackPoster:
            client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url, session=session)
            return SlackPoster(SlackApi(client), memory=StoreMemory(store, "slack"))

        crashed = restarted()
        await crashed.working(KEY, BEAR)
        await crashed.drain()  # its placeholder is up; then the process dies
        [left] = fake_slack.thread(CHANNEL, KEY.thread)

        again = restarted()  # the resumed run asks Bear again: the placeholder still fits
        await again.working(KEY, BEAR)
        assert await again.post(out("Risk!")) == left["ts"]
        assert len(fake_slack.calls_to("chat.postMessage")) == 1

        crashed = restarted()
        await crashed.working(KEY, BEAR)
        await crashed.drain()
        other = restarted()  # this time the resumed run goes on with another agent
        await other.working(KEY, bull)
        await other.post(Outbound(KEY, "Growth!", "run:3", persona=bull))
        await other.drain()
    assert [(m["username"], m["text"]) for m in fake_slack.thread(CHANNEL, KEY.thread)] == [
        ("Bear", "Risk!"), ("Bull", "Growth!")]
    assert [m["username"] for m in fake_slack.deleted] == ["Bear"]


async def test_the_working_indicator_never_lands_after_the_reply(fake_slack, poster) -> None:
    fake_slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    await poster.working(KEY, BEAR)
    await poster.post(out("reply"))
    order = [c.method for c in fake_slack.calls if c.error is None]
    assert order.index("assistant.threads.setStatus") < order.index("chat.postMessage")


async def test_a_turn_without_a_post_hands_its_placeholder_to_the_next(fake_slack, poster) -> None:
    fake_slack.status_error = "not_allowed"
    await poster.working(KEY, BEAR)  # this turn streams a little, then only calls a tool
    await (poster.stream(KEY, BEAR))("Let me look that up")
    await poster.drain()
    await poster.working(KEY, BEAR)  # the next turn of the same agent
    await (poster.stream(KEY, BEAR))("Found it.")
    message_id = await poster.post(out("Found it."))
    async with asyncio.timeout(5):
        await poster.drain()  # nothing left streaming into a turn that has passed
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    assert [(m["ts"], m["text"]) for m in fake_slack.thread(CHANNEL, KEY.thread)] == [
        (message_id, "Found it.")]


# -- nothing pings a channel ---------------------------------------------------------------
PINGS = ("Heads up <!channel> <!here> <!everyone> <!subteam^S0ONCALL|@oncall> "
         "@channel @here @Everyone, ask <@U0ALICE>")
_LIVE = re.compile(r"<!(?:here|channel|everyone|subteam)|(?<![\w@])@(?:here|channel|everyone)\b",
                   re.IGNORECASE)


def texts(value: Any) -> list[str]:
    """Every text a person could read in a Web API call's arguments (text, blocks)."""
    if isinstance(value, dict):
        return [t for k, v in value.items() if k in ("text", "blocks", "elements")
                for t in texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in texts(v)]
    return [value] if isinstance(value, str) else []


async def test_no_post_edit_or_ephemeral_pings_a_channel(fake_slack, poster) -> None:
    fake_slack.status_error = "not_allowed"  # placeholders, so the streamed edits show too
    await poster.working(KEY, BEAR)
    await (poster.stream(KEY, BEAR))(PINGS)
    await wait_until(lambda: fake_slack.calls_to("chat.update"), what="a streamed edit")
    long = f"{PINGS}\n\n{'word ' * 700}\n\n{PINGS}"  # the second part pings again
    await poster.post(out(long))
    prompt = ApprovalPrompt("call_1", "post_message", {"channel": "#x", "text": PINGS})
    asked = await poster.post(Outbound(KEY, PINGS, "run:approval:call_1", persona=BEAR,
                                       approval=prompt, meta={"agent": "bear"}))
    await poster.edit(Outbound(KEY, f"✅ Approved: {PINGS}", "k:decided"), asked)
    await poster.post(Outbound(KEY, PINGS, "run:notice", notice=True))  # the host's own words
    await poster.ephemeral(KEY, ALICE, PINGS)
    await poster.root(CHANNEL, PINGS)  # e.g. a /team summon's task, as the person typed it

    calls = [c for c in fake_slack.calls if c.method.startswith("chat.") and c.error is None]
    assert {c.method for c in calls} == {"chat.postMessage", "chat.update", "chat.postEphemeral"}
    assert len([c for c in calls if c.method == "chat.postMessage"]) >= 5
    shown = [t for c in calls for t in texts(c.params) if "Heads up" in t]
    assert len(shown) >= 9
    for text in shown:
        assert not _LIVE.search(text), text
        assert "&lt;!here&gt;" in text and "<@U0ALICE>" in text  # visible; a person's mention works
    assert not any("link_names" in c.params or "parse" in c.params for c in calls)


# -- errors a thread may see ------------------------------------------------------------------
QUICK = RetryPolicy(first_backoff=0.01, max_backoff=0.01)  # the policy's tries, not its waits
PROXY_PAGE = ("<html><body>502 Bad Gateway: upstream slack-egress.internal.corp:8443 "
              "timed out; request id 8f2c at 10.2.3.4</body></html>")


@pytest.mark.parametrize(("status", "error", "page", "code"), [
    (500, "internal_error", None, "internal_error"),  # Slack's 5xx: retried, then given up
    (502, "", PROXY_PAGE, "http_502"),  # a proxy's error page
    (200, "fatal_error", None, "fatal_error"),  # Slack's own "try again"
])
async def test_a_failure_after_the_retries_names_the_method_and_code_only(
        fake_slack, status, error, page, code) -> None:
    fake_slack.fail("chat.postMessage", error, status=status, page=page, times=100)
    async with aiohttp.ClientSession() as session:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url, session=session)
        poster = SlackPoster(SlackApi(client, policy=QUICK))
        with pytest.raises(PlatformError) as failed:
            await poster.post(out("lost"))
    assert str(failed.value) == f"Slack refused chat.postMessage ({code})"
    assert len(fake_slack.calls_to("chat.postMessage")) == 1 + QUICK.transient_tries


async def test_an_unreachable_slack_is_said_without_its_address(fake_slack) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/api/"
    async with aiohttp.ClientSession() as session:
        client = AsyncWebClient(token=BOT_TOKEN, base_url=dead, session=session)
        poster = SlackPoster(SlackApi(client, policy=QUICK))
        started = asyncio.get_running_loop().time()
        with pytest.raises(PlatformError) as failed:
            await poster.post(out("lost"))
    # One retry policy: slack_sdk's own connection retry (1 s a time) is off.
    assert asyncio.get_running_loop().time() - started < 3.0
    assert str(failed.value) == "Slack could not be reached for chat.postMessage (unreachable)"
    assert "127.0.0.1" not in str(failed.value)
