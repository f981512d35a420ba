"""Exactly-once posts through Slack: every post carries its key in its metadata, and a
post whose outcome is unknown is looked for by that key before it is sent again.

The fake Slack stores a post and then loses the answer (the connection drops, or a
5xx comes back); a "crashed" poster is one abandoned mid-turn, replaced by a new one
on the same memory (the real store, SQLite and Redis).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import ALICE, BOT_TOKEN, BOT_USER, CHANNEL, OTHER_CHANNEL, FakeSlack
from threadteam.adapters.slack import SlackApi, SlackPoster
from threadteam.adapters.slack.posted import EVENT_TYPE
from threadteam.bot.errors import PlatformError
from threadteam.bot.memory import LocalMemory, StoreMemory
from threadteam.bot.retry import RetryPolicy
from threadteam.bot.shapes import ApprovalPrompt, Memory, Outbound, ThreadKey
from threadteam.teams.persona import Persona

QUICK = RetryPolicy(first_backoff=0.01, max_backoff=0.01)
BEAR = Persona("Bear", ":bear:")
BULL = Persona("Bull", ":ox:")


@pytest.fixture
async def posters(fake_slack: FakeSlack) -> AsyncIterator[Callable[..., SlackPoster]]:
    """Makes posters on one session and, unless told otherwise, one memory: each new poster
    is the bot restarted (or another worker on the same store)."""
    made: list[SlackPoster] = []
    shared = LocalMemory()
    async with aiohttp.ClientSession() as session:
        def make(memory: Memory = shared) -> SlackPoster:
            client = AsyncWebClient(token=BOT_TOKEN, base_url=fake_slack.api_url, session=session)
            poster = SlackPoster(SlackApi(client, policy=QUICK), memory=memory)
            made.append(poster)
            return poster

        yield make
        for p in made:
            await p.drain()
            await p.stop_streaming()


@pytest.fixture
async def thread(fake_slack: FakeSlack) -> ThreadKey:
    """A thread a person started in #general."""
    ts = fake_slack.add_message(ALICE, "Should we migrate billing?")
    return ThreadKey("slack", "T0FAKE", CHANNEL, ts)


def out(key: ThreadKey, text: str, idem: str = "run:4", persona: Persona = BEAR,
        **kw) -> Outbound:
    return Outbound(key, text, idem, persona=persona, meta={"agent": persona.display_name}, **kw)


def shown(fake: FakeSlack, key: ThreadKey) -> list[tuple[str, str]]:
    """The thread as people see it: (author, text)."""
    return [(m.get("username", "(app)"), m["text"]) for m in fake.thread(key.channel, key.thread)]


LOST = {
    "dropped": lambda fake: fake.drop_answer("chat.postMessage"),
    "http_500": lambda fake: fake.fail_after("chat.postMessage", "internal_error", status=500),
    "fatal_error": lambda fake: fake.fail_after("chat.postMessage", "fatal_error", status=200),
}


@pytest.mark.parametrize("lost", list(LOST))
async def test_a_post_whose_answer_is_lost_is_posted_once(fake_slack, posters, thread,
                                                          lost) -> None:
    LOST[lost](fake_slack)  # Slack stores the post; its answer never arrives
    message_id = await posters().post(out(thread, "Risk!"))
    assert shown(fake_slack, thread) == [("Bear", "Risk!")]
    assert message_id == fake_slack.thread(CHANNEL, thread.thread)[0]["ts"]
    [call] = fake_slack.calls_to("chat.postMessage")  # looked for, found: not sent again
    assert call.params["metadata"] == {"event_type": EVENT_TYPE,
                                       "event_payload": {"key": "run:4", "part": 0}}
    [look] = fake_slack.calls_to("conversations.replies")
    assert look.params["ts"] == thread.thread and look.params["include_all_metadata"] in ("1", "true")


async def test_a_lost_answer_of_a_post_that_did_not_land_posts_it(fake_slack, posters,
                                                                  thread) -> None:
    fake_slack.fail("chat.postMessage", "internal_error", status=500)  # refused before storing
    await posters().post(out(thread, "Risk!"))
    assert shown(fake_slack, thread) == [("Bear", "Risk!")]
    assert len(fake_slack.calls_to("conversations.replies")) == 1


async def test_every_part_of_a_long_post_carries_its_key_and_number(fake_slack, posters,
                                                                    thread) -> None:
    text = "\n\n".join(f"Point {i}. " + "evidence " * 300 for i in range(3))
    await posters().post(out(thread, text))
    posts = fake_slack.calls_to("chat.postMessage")
    assert len(posts) == 3
    assert [c.params["metadata"]["event_payload"] for c in posts] == [
        {"key": "run:4", "part": i} for i in range(3)]


async def test_an_unsure_post_already_in_the_thread_is_adopted(fake_slack, posters,
                                                               thread) -> None:
    first = await posters().post(out(thread, "Risk!"))
    # A new driver after a crash: the post was made but its id never recorded.
    again = await posters().post(out(thread, "Risk!", unsure=True))
    assert again == first
    assert shown(fake_slack, thread) == [("Bear", "Risk!")]
    assert len(fake_slack.calls_to("chat.postMessage")) == 1


async def test_an_unsure_post_in_a_thread_never_posted_in_asks_slack_nothing(
        fake_slack, posters, thread) -> None:
    # A run's first post is unsure until its driver records it; reading the thread back
    # is one of Slack's scarcest calls, and the bot's memory says it never posted there.
    await posters().post(out(thread, "Debate is on it.", unsure=True))
    assert shown(fake_slack, thread) == [("Bear", "Debate is on it.")]
    assert fake_slack.calls_to("conversations.replies") == []


async def test_an_unsure_post_finds_the_parts_that_landed_and_posts_the_rest(
        fake_slack, posters, thread) -> None:
    text = "\n\n".join(f"Point {i}. " + "evidence " * 300 for i in range(3))
    prompt = ApprovalPrompt("call_1", "post_message", {"channel": "#x"})
    # The first part lands; Slack fails the second for longer than the retries last.
    fake_slack.fail("chat.postMessage", "service_unavailable", status=503, times=100, skip=1)
    with pytest.raises(PlatformError):
        await posters().post(out(thread, text, approval=prompt))
    fake_slack.clear_failures()
    assert [m["text"][:8] for m in fake_slack.thread(CHANNEL, thread.thread)] == ["Point 0."]

    fake_slack.page_size = 2  # the thread is read page by page
    message_id = await posters().post(out(thread, text, approval=prompt, unsure=True))
    now = fake_slack.thread(CHANNEL, thread.thread)
    assert [m["text"][:8] for m in now] == ["Point 0.", "Point 1.", "Point 2."]
    assert message_id == now[-1]["ts"]  # the part with the buttons
    assert any(b["type"] == "actions" for b in now[-1]["blocks"])


async def test_a_top_level_post_whose_answer_is_lost_is_posted_once(fake_slack, posters) -> None:
    fake_slack.drop_answer("chat.postMessage")
    where = ThreadKey("slack", "T0FAKE", OTHER_CHANNEL, "")
    message_id = await posters().post(out(where, "We ship Friday.", "run:tool:call_1"))
    top = [m for (ch, _), m in fake_slack.messages.items() if ch == OTHER_CHANNEL]
    assert [m["text"] for m in top] == ["We ship Friday."] and top[0]["ts"] == message_id
    assert fake_slack.calls_to("conversations.history")[0].params["channel"] == OTHER_CHANNEL


async def test_a_lookup_slack_refuses_posts_rather_than_loses(fake_slack, posters, thread,
                                                              caplog) -> None:
    await posters().post(out(thread, "Growth!", "run:3", persona=BULL))
    fake_slack.fail("conversations.replies", "missing_scope")
    await posters().post(out(thread, "Risk!", unsure=True))
    assert shown(fake_slack, thread) == [("Bull", "Growth!"), ("Bear", "Risk!")]
    assert "could not look for run:4" in caplog.text


# -- placeholders --------------------------------------------------------------------------
async def test_a_placeholder_whose_answer_was_lost_becomes_the_reply(fake_slack, posters,
                                                                     thread) -> None:
    fake_slack.status_error = "not_allowed"  # a channel thread: placeholders, not a status
    fake_slack.drop_answer("chat.postMessage")  # the placeholder is up; its ts never came
    poster = posters()
    await poster.working(thread, BEAR)
    await poster.drain()
    message_id = await poster.post(out(thread, "Risk!"))
    assert shown(fake_slack, thread) == [("Bear", "Risk!")]
    assert fake_slack.thread(CHANNEL, thread.thread)[0]["ts"] == message_id
    assert fake_slack.deleted == []


@pytest.mark.parametrize("lost", [False, True])
async def test_a_placeholder_left_by_a_crashed_poster_becomes_the_reply(
        fake_slack, posters, thread, store, lost) -> None:
    fake_slack.status_error = "not_allowed"
    if lost:
        fake_slack.drop_answer("chat.postMessage")
    crashed = posters(StoreMemory(store, "slack"))
    await crashed.working(thread, BEAR)
    await crashed.drain()  # the placeholder is up; then the process dies
    assert [text for _, text in shown(fake_slack, thread)] == ["_thinking…_"]

    # The resumed run re-posts Bear's reply, appended but not recorded before the crash.
    again = posters(StoreMemory(store, "slack"))
    message_id = await again.post(out(thread, "Risk!", unsure=True))
    assert shown(fake_slack, thread) == [("Bear", "Risk!")]
    assert fake_slack.thread(CHANNEL, thread.thread)[0]["ts"] == message_id
    assert fake_slack.deleted == [] and len(fake_slack.calls_to("chat.postMessage")) == 1
    await again.drain()
    assert await StoreMemory(store, "slack").get(f"live:{thread}") in (None, "")


async def test_a_placeholder_left_by_a_crash_goes_when_someone_else_speaks(
        fake_slack, posters, thread, store) -> None:
    fake_slack.status_error = "not_allowed"
    fake_slack.drop_answer("chat.postMessage")
    crashed = posters(StoreMemory(store, "slack"))
    await crashed.working(thread, BEAR)
    await crashed.drain()

    again = posters(StoreMemory(store, "slack"))  # the run resumes with a notice
    await again.post(Outbound(thread, "Resumed after a restart.", "run:notice", notice=True))
    assert shown(fake_slack, thread) == [("(app)", "Resumed after a restart.")]
    assert [m["username"] for m in fake_slack.deleted] == ["Bear"]


async def test_a_reply_that_landed_in_the_placeholder_before_a_crash_is_kept(
        fake_slack, posters, thread, store) -> None:
    fake_slack.status_error = "not_allowed"
    crashed = posters(StoreMemory(store, "slack"))
    await crashed.working(thread, BEAR)
    # The reply lands in the placeholder but no answer comes back; then the process dies.
    fake_slack.drop_answer("chat.update", times=100)
    with pytest.raises(PlatformError):
        await crashed.post(out(thread, "Risk!"))
    fake_slack.clear_failures()
    assert shown(fake_slack, thread) == [("Bear", "Risk!")]

    again = posters(StoreMemory(store, "slack"))
    message_id = await again.post(out(thread, "Risk!", unsure=True))
    assert shown(fake_slack, thread) == [("Bear", "Risk!")]
    assert message_id == fake_slack.thread(CHANNEL, thread.thread)[0]["ts"]
    assert fake_slack.deleted == []


# -- end to end ------------------------------------------------------------------------------
async def test_a_debate_whose_answers_are_lost_shows_each_post_once(stack_factory) -> None:
    s = await stack_factory("http", "Bull.", "Bear.", "FINAL ANSWER: ok.")
    s.fake.drop_answer("chat.postMessage", times=3)  # "is on it", Bull's and Bear's posts
    ts = await s.fake.say(ALICE, f"<@{BOT_USER}> debate Lost answers?")
    thread = await s.finished(ts, within=20)
    await s.idle()
    assert [m.get("username") for m in s.thread(ts)] == [None, "Bull", "Bear", "Synthesis", None]
    assert [m["text"] for m in thread[1:4]] == ["Bull.", "Bear.", "FINAL ANSWER: ok."]
    assert len(s.fake.calls_to("chat.postMessage")) == 5


async def test_a_crash_before_the_reply_reaches_its_placeholder_leaves_nothing_behind(
        fake_slack, posters, thread, store) -> None:
    fake_slack.status_error = "not_allowed"
    crashed = posters(StoreMemory(store, "slack"))
    await crashed.working(thread, BEAR)
    fake_slack.fail("chat.update", "internal_error", status=500, times=100)  # then it dies
    with pytest.raises(PlatformError):
        await crashed.post(out(thread, "Risk!"))
    fake_slack.clear_failures()
    assert [text for _, text in shown(fake_slack, thread)] == ["_thinking…_"]

    again = posters(StoreMemory(store, "slack"))  # the resumed run re-posts Bear's reply
    await again.post(out(thread, "Risk!", unsure=True))
    assert shown(fake_slack, thread) == [("Bear", "Risk!")]
    assert len(fake_slack.calls_to("chat.postMessage")) == 1  # the placeholder, become the reply


async def test_a_placeholder_that_became_a_reply_is_never_taken_down(
        fake_slack, posters, thread, store) -> None:
    fake_slack.status_error = "not_allowed"
    crashed = posters(StoreMemory(store, "slack"))
    await crashed.working(thread, BEAR)
    fake_slack.drop_answer("chat.update", times=100)  # the reply lands; no answer; it dies
    with pytest.raises(PlatformError):
        await crashed.post(out(thread, "Risk!"))
    fake_slack.clear_failures()

    again = posters(StoreMemory(store, "slack"))
    await again.post(Outbound(thread, "Resumed after a restart.", "run:notice", notice=True))
    assert shown(fake_slack, thread) == [("Bear", "Risk!"), ("(app)", "Resumed after a restart.")]
    assert fake_slack.deleted == []
