"""Durable before acknowledged: Slack hears an event arrived only once the host stored it.

The store is the real one (SQLite, Redis) with an outage on demand; the fake Slack
re-sends an event it did not get a 2xx (or a Socket Mode ack) for, as Slack does.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.adapters.slack_stack import Stack
from tests.fakes.slack import ALICE, BOT_USER, CHANNEL, wait_until
from threadteam.adapters.slack.inbound import APPROVE_ACTION
from threadteam.teams.models.scripted import reply

BOT = f"<@{BOT_USER}>"
MODES = pytest.mark.parametrize("mode", ["http", "socket"])
STORES = pytest.mark.parametrize("store", ["sqlite", "redis"])
ANSWER = "About 10k a year."


async def _waiting_for_a_reply(s: Stack) -> str:
    ts = await s.fake.say(ALICE, f"{BOT} interview Which plan should we buy?")
    await wait_until(lambda: any("waiting for you" in m["text"] for m in s.thread(ts)),
                     what="the hand-off to the person")
    await s.idle()
    return ts


def _deliveries_of(s: Stack, ts: str) -> list:
    return [d for d in s.fake.deliveries if d.kind == "events_api"
            and d.payload["event"].get("ts") == ts and d.payload["event"].get("user") == ALICE]


async def _replies_in_run(s: Stack, ts: str, text: str) -> list[dict]:
    return [e for e in await s.run_events(ts) if e.get("kind") == "human_message"
            and e.get("text") == text]


async def _kept_or_in_run(s: Stack, ts: str, text: str) -> bool:
    """The event is in the inbox, or (taken, then cleared from it) in its run: looked at
    in that order, the order the adapter moves it in."""
    if any(text in kept for kept in (await s.store.kv_items("inbox:slack")).values()):
        return True
    run_id = await s.store.run_for_thread(f"slack:T0FAKE:{CHANNEL}:{ts}")
    return run_id is not None and any(text in e for e in await s.store.load(run_id))


@MODES
async def test_an_event_is_stored_by_the_time_its_200_arrives(stack_factory, mode) -> None:
    s = await stack_factory(mode, "What budget?", "Plan B. DONE")
    ts = await s.fake.say(ALICE, f"{BOT} interview Which plan?")  # returns once answered
    assert await _kept_or_in_run(s, ts, "Which plan?")
    await wait_until(lambda: any("waiting for you" in m["text"] for m in s.thread(ts)))
    await s.fake.say(ALICE, ANSWER, thread_ts=ts)
    assert await _kept_or_in_run(s, ts, ANSWER)  # before Slack heard "200"
    await s.finished(ts)
    assert len(await _replies_in_run(s, ts, ANSWER)) == 1
    await s.idle()
    assert await s.store.kv_items("inbox:slack") == {}  # each taken, then forgotten


@MODES
@STORES
async def test_a_reply_the_store_fails_to_keep_is_sent_again_and_taken_once(
        stack_factory, mode, store, caplog) -> None:
    s = await stack_factory(mode, "What budget?", "Plan B. DONE", store=store)
    s.fake.http_timeout = 0.5  # Socket Mode: how long the fake waits for the ack it never gets
    ts = await _waiting_for_a_reply(s)
    s.store.fail("kv_set")  # the store is down for the reply's first delivery
    caplog.clear()
    reply_ts = await s.fake.say(ALICE, ANSWER, thread_ts=ts)

    first, again = _deliveries_of(s, reply_ts)
    assert first.status == (503 if mode == "http" else 0) and first.retry_num == 0
    assert again.status == 200 and again.retry_num == 1
    await s.finished(ts)
    assert len(await _replies_in_run(s, ts, ANSWER)) == 1
    asked = s.model.requests[-1].messages
    assert [m.content for m in asked].count(ANSWER) == 1
    said = [r for r in caplog.records if r.name.startswith("threadteam.slack")
            and r.levelno >= logging.WARNING]
    assert len(said) == 2 and "could not take a reply" in said[0].getMessage()
    assert "Slack is asked to send" in said[0].getMessage()
    assert "takes events again" in said[1].getMessage() and "Traceback" not in caplog.text


@STORES
async def test_a_kept_reply_the_host_fails_to_take_is_handed_over_again_once(
        stack_factory, store, caplog) -> None:
    s = await stack_factory("http", "What budget?", "Plan B. DONE", store=store)
    ts = await _waiting_for_a_reply(s)
    s.store.fail("append_external")  # kept, but the host cannot take it the first time
    caplog.clear()
    reply_ts = await s.fake.say(ALICE, ANSWER, thread_ts=ts)
    assert [d.status for d in _deliveries_of(s, reply_ts)] == [200]  # Slack need not re-send
    await s.finished(ts)
    assert len(await _replies_in_run(s, ts, ANSWER)) == 1
    said = [r.getMessage() for r in caplog.records if r.name.startswith("threadteam.slack")
            and r.levelno >= logging.WARNING]
    assert "it is kept, and handed over again" in said[0] and "takes events again" in said[1]
    await s.idle()
    assert await s.store.kv_items("inbox:slack") == {}


@STORES
@pytest.mark.parametrize(("failing", "times"), [("first_sight", 2), ("create_run", 1)])
async def test_a_summon_during_a_store_outage_starts_its_run_once(stack_factory, store,
                                                                  failing, times) -> None:
    s = await stack_factory("http", "Bull.", "Bear.", "FINAL ANSWER: ok.", store=store)
    s.store.fail(failing, times=times)  # the host's first tries fail; the summon is kept
    ts = await s.fake.say(ALICE, f"{BOT} debate Outage?")
    statuses = [d.status for d in _deliveries_of(s, ts) if d.payload["event"]["type"] == "app_mention"]
    assert statuses == [200]
    thread = await s.finished(ts)
    await s.idle()
    assert [m.get("username") for m in thread] == [None, "Bull", "Bear", "Synthesis", None]
    assert len(s.model.requests) == 3


async def test_a_store_too_slow_for_slack_is_answered_503_and_taken_once(stack_factory) -> None:
    s = await stack_factory("http", "What budget?", "Plan B. DONE")
    ts = await _waiting_for_a_reply(s)
    s.adapter._intake.within = 0.2  # Slack's 3 seconds, shortened
    gate = s.store.hold("kv_set")
    sent = asyncio.ensure_future(s.fake.say(ALICE, ANSWER, thread_ts=ts))
    await wait_until(lambda: s.fake.deliveries[-1].status == 503, what="a 503 for slowness")
    gate.set()  # the store comes back; the first keep completes
    reply_ts = await sent
    statuses = [d.status for d in _deliveries_of(s, reply_ts)]
    assert statuses[0] == 503 and statuses[-1] == 200
    await s.finished(ts)
    assert len(await _replies_in_run(s, ts, ANSWER)) == 1


async def test_an_event_the_host_never_takes_is_given_up_and_logged_not_retried_forever(
        stack_factory, caplog) -> None:
    s = await stack_factory("http", "What budget?")
    ts = await _waiting_for_a_reply(s)
    s.adapter._inbox.give_up_after = 0.6  # an hour, shortened
    s.store.fail("append_external", times=1_000)  # the host fails on it every time
    await s.fake.say(ALICE, ANSWER, thread_ts=ts)
    await wait_until(lambda: any("it is given up" in r.getMessage() for r in caplog.records
                                 if r.levelno == logging.ERROR), 10, "the give-up line")
    assert await s.store.kv_items("inbox:slack") == {}
    s.store.failing.clear()
    await asyncio.sleep(0.8)  # a few more sweeps: nothing is handed over again
    assert await _replies_in_run(s, ts, ANSWER) == []


@STORES
async def test_what_a_dead_process_kept_reaches_the_run_when_the_bot_starts_again(
        stack_factory, store) -> None:
    s = await stack_factory("http", "What budget?", "Plan B. DONE", store=store)
    ts = await _waiting_for_a_reply(s)
    # A process kept Alice's answer, acked it, and died before its host took it.
    from threadteam.bot.inbox import Inbox
    from threadteam.bot.shapes import Inbound, ThreadKey
    key = ThreadKey("slack", "T0FAKE", CHANNEL, ts)
    await Inbox(s.store, "slack").keep(Inbound(key=key, user=ALICE, text=ANSWER, kind="reply",
                                               event_id="Ev-kept-by-the-dead"))
    await s.finished(ts)  # this process's inbox sweep hands it over
    assert len(await _replies_in_run(s, ts, ANSWER)) == 1
    await s.idle()
    assert await s.store.kv_items("inbox:slack") == {}


async def test_a_click_the_store_fails_to_take_is_refused_privately(stack_factory) -> None:
    s = await stack_factory("http", "Draft.", "We ship Friday.",
                            reply("", ("post_message", json.dumps(
                                {"channel": "#announcements", "text": "Friday."}))),
                            "Posted. DONE")
    ts = await s.fake.say(ALICE, f"{BOT} announce Friday's release")
    request = await wait_until(
        lambda: next((m for m in s.thread(ts) if any(b["type"] == "actions"
                                                    for b in m.get("blocks", []))), None),
        what="the approval request")
    await s.idle()
    s.store.fail("append")
    click = await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=ALICE)
    assert click.status == 200  # Slack never re-sends a click: the person is told instead
    [sorry] = await wait_until(lambda: s.fake.calls_to("chat.postEphemeral"),
                               what="the private apology")
    assert sorry.params["user"] == ALICE and "try again" in sorry.params["text"]
    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=ALICE)
    await s.finished(ts)
    assert s.fake.message(CHANNEL, request["ts"])["text"].startswith(f"✅ Approved by <@{ALICE}>")


async def test_an_event_slack_stops_resending_is_logged_as_lost(stack_factory, caplog) -> None:
    s = await stack_factory("http", "What budget?")
    ts = await _waiting_for_a_reply(s)
    s.store.fail("kv_set", times=4)  # longer than Slack keeps trying
    reply_ts = await s.fake.say(ALICE, ANSWER, thread_ts=ts)
    assert [d.status for d in _deliveries_of(s, reply_ts)] == [503, 503, 503, 503]
    lost = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lost) == 1 and "it is lost" in lost[0].getMessage()
    assert await _replies_in_run(s, ts, ANSWER) == []
    await s.idle()
    # A plain message in a thread: the bot could not tell whose thread it was, so no word.
    assert s.fake.calls_to("chat.postEphemeral") == []


async def test_a_summon_slack_stops_resending_is_said_to_have_been_lost(stack_factory) -> None:
    s = await stack_factory("http")
    s.store.fail("kv_set", times=4)  # longer than Slack keeps trying
    ts = await s.fake.say(ALICE, f"{BOT} interview Which plan should we buy?")
    # The mention, tried four times (its plain-message twin is passed over at once).
    assert [d.status for d in _deliveries_of(s, ts)].count(503) == 4
    [sorry] = await wait_until(lambda: s.fake.calls_to("chat.postEphemeral"),
                               what="the word that it was lost")
    assert sorry.params["user"] == ALICE
    assert sorry.params["text"] == (
        "Sorry, I could not save your message, so no team got it: the bot's storage has been "
        "failing for some minutes. Please send it again later.")
    assert s.thread(ts)[1:] == []  # no run was started


@STORES
async def test_a_notice_posted_before_the_store_failed_is_not_posted_again(stack_factory,
                                                                           store) -> None:
    s = await stack_factory("http", "What budget?", "Plan B. DONE", store=store)
    ts = await _waiting_for_a_reply(s)
    await s.fake.say(ALICE, ANSWER, thread_ts=ts)
    await s.finished(ts)
    await s.idle()
    # A reply to the finished run: the host keeps it and says so in the thread, then
    # fails to record that notice; the inbox hands the reply over again.
    s.store.fail("put_post")
    late = await s.fake.say(ALICE, "One more thing.", thread_ts=ts)
    assert [d.status for d in _deliveries_of(s, late)] == [200]
    await wait_until(lambda: not s.store.failing.get("put_post"), what="the failed record")
    await s.idle()
    kept = [m for m in s.thread(ts) if m["text"].startswith("This run has finished")]
    assert len(kept) == 1
    assert len(await _replies_in_run(s, ts, "One more thing.")) == 1


@STORES
async def test_a_turn_the_store_fails_to_save_is_said_once_and_taken_again(
        stack_factory, store, caplog) -> None:
    """The store fails as the agent's answer is saved: the thread hears once that the run is
    held up, then the answer comes, once, when the run is tried again by itself (the turn
    is taken again: the model is asked again, as its first answer was never saved)."""
    s = await stack_factory("http", "What budget?", "Plan B. DONE", "Plan B. DONE", store=store)
    ts = await _waiting_for_a_reply(s)
    s.host.runner.save_again = (0.05,)  # a blip is saved again once; this outage outlasts it
    s.store.fail("append", times=2)  # the driver's first save after the reply, and again
    caplog.clear()
    await s.fake.say(ALICE, ANSWER, thread_ts=ts)
    shown = [m["text"] for m in await s.finished(ts)]
    held = [t for t in shown if t.startswith("This run is held up")]
    assert held == ["This run is held up: the bot's store failed (the details are in the "
                    "bot's log). Everything up to here is kept, and the run goes on by itself "
                    "once the store works again."]
    assert shown.count("Plan B. DONE") == 1
    assert shown.index(held[0]) < shown.index("Plan B. DONE")
    assert "Traceback" not in caplog.text
