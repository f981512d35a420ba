"""Slack end to end: the real slack_bolt / slack_sdk against the fake Slack, with the real Host.

Each scenario runs a SQLite store in tmp_path and a ScriptedModel; the fake
records every Web API call, and the assertions are on what a person in the
thread would see.
"""

from __future__ import annotations

import json

import pytest

from tests.adapters.slack_stack import Stack
from tests.fakes.slack import (
    ALICE,
    BOT_USER,
    CHANNEL,
    DM_ALICE,
    MALLORY,
    OTHER_BOT_ID,
    OTHER_CHANNEL,
    wait_until,
)
from threadteam.adapters.slack.inbound import ALWAYS_ACTION, APPROVE_ACTION, DENY_ACTION
from threadteam.teams.models.scripted import reply

BOT = f"<@{BOT_USER}>"
MODES = pytest.mark.parametrize("mode", ["http", "socket"])


def persona_posts(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m.get("username", "(app)"), m["text"]) for m in messages]


# -- summons and turns ---------------------------------------------------------------------------
@MODES
async def test_mention_summons_a_debate_that_posts_as_three_personas(stack_factory, mode) -> None:
    s = await stack_factory(mode, "The **bull** case: growth.", "The bear case: risk.",
                            "FINAL ANSWER: migrate in stages.")
    ts = await s.fake.say(ALICE, f"{BOT} debate Should we migrate billing to Postgres?")
    thread = await s.finished(ts)
    await s.idle()

    names = [m.get("username") for m in thread]
    assert names == [None, "Bull", "Bear", "Synthesis", None]  # notices come from the app itself
    assert thread[1]["text"] == "The *bull* case: growth."  # Markdown became mrkdwn
    assert thread[3]["text"].startswith("FINAL ANSWER")
    posts = s.fake.calls_to("chat.postMessage")
    assert all(c.params["thread_ts"] == ts for c in posts)
    assert [c.params.get("icon_emoji") for c in posts[1:4]] == [":ox:", ":bear:", ":scales:"]
    assert "Should we migrate billing to Postgres?" in str(s.model.requests[0].messages)
    # Every persona post came back as an event, was acked, and started nothing.
    assert len(s.fake.echoes()) >= 5 and all(d.status == 200 for d in s.fake.echoes())
    assert len(s.model.requests) == 3
    s.model.assert_used()


@MODES
async def test_slash_command_posts_the_task_and_runs_in_its_thread(stack_factory, mode) -> None:
    s = await stack_factory(mode, "Bull.", "Bear.", "FINAL ANSWER: tea.")
    ack = await s.fake.slash("debate Is tea better than coffee?")
    assert ack.status == 200
    root = await wait_until(lambda: s.fake.calls_to("chat.postMessage"), what="the root post")
    assert "thread_ts" not in root[0].params
    assert root[0].params["text"] == f"<@{ALICE}> summoned *debate*: Is tea better than coffee?"
    ts = next(m["ts"] for m in s.fake.messages.values() if m["text"] == root[0].params["text"])
    thread = await s.finished(ts)
    assert [m.get("username") for m in thread] == [None, "Bull", "Bear", "Synthesis", None]


@MODES
async def test_slash_command_with_an_unknown_team_answers_only_the_caller(stack_factory,
                                                                          mode) -> None:
    s = await stack_factory(mode)
    ack = await s.fake.slash("dbate Tea?")
    body = ack.response if mode == "socket" else json.loads(ack.response)
    text = body["payload"]["text"] if mode == "socket" else body["text"]
    assert "I don't know a team called `dbate`" in text and "`debate`" in text
    assert (body.get("payload") or body).get("response_type") == "ephemeral"
    usage = await s.fake.slash("debate")
    body = usage.response if mode == "socket" else json.loads(usage.response)
    assert "Tell *debate* what to work on" in str(body)
    await s.idle()
    assert s.fake.calls_to("chat.postMessage") == []


async def test_mention_with_an_unknown_team_gets_help_in_the_thread(stack_factory) -> None:
    s = await stack_factory("http")
    ts = await s.fake.say(ALICE, f"{BOT} dbate Tea?")
    await wait_until(lambda: s.thread(ts), what="a reply in the thread")
    assert "I don't know a team called `dbate`" in s.thread(ts)[0]["text"]


async def test_a_direct_message_summons_without_a_mention(stack_factory) -> None:
    s = await stack_factory("http", "Bull.", "Bear.", "FINAL ANSWER: yes.")
    ts = await s.fake.say(ALICE, "debate Tabs or spaces?", channel=DM_ALICE)
    thread = await s.finished(ts, DM_ALICE)
    assert [m.get("username") for m in thread] == [None, "Bull", "Bear", "Synthesis", None]


async def test_an_echoed_team_name_cannot_break_out_into_a_live_here(stack_factory) -> None:
    s = await stack_factory("http")
    # Slack sends what the person typed, x`<!here>`, escaped; the host's notice quotes it in
    # a code span, which the backticks of the name close early.
    ts = await s.fake.say(ALICE, f"{BOT} x`&lt;!here&gt;` Tea?")
    [notice] = await wait_until(lambda: s.thread(ts), what="the notice in the thread")
    assert "I don't know a team called" in notice["text"]
    assert "<!" not in notice["text"] and "&lt;!here&gt;" in notice["text"]


@MODES
async def test_a_slash_summon_repeats_the_task_without_its_pings(stack_factory, mode) -> None:
    s = await stack_factory(mode, "Bull.", "Bear.", "FINAL ANSWER: tea.")
    # As Slack sends it when the person typed "@here" and "@channel" in the command.
    await s.fake.slash("debate <!here> Is tea better? <!channel|@channel> @everyone")
    root = (await wait_until(lambda: s.fake.calls_to("chat.postMessage"), what="the root"))[0]
    await s.finished(next(ts for (ch, ts), m in s.fake.messages.items()
                          if m["text"] == root.params["text"]))
    assert "thread_ts" not in root.params and "Is tea better?" in root.params["text"]
    assert "<!" not in root.params["text"] and "@everyone" not in root.params["text"]
    assert "&lt;!here&gt;" in root.params["text"]


async def test_agents_never_ping_the_channel(stack_factory) -> None:
    s = await stack_factory("http", "<!channel> Buy now, @here!", "<!subteam^S0OPS|@ops> no.",
                            "FINAL ANSWER: <!everyone> wait.")
    ts = await s.fake.say(ALICE, f"{BOT} debate Buy?")
    thread = await s.finished(ts)
    agents = [m["text"] for m in thread if m.get("username")]
    assert agents == ["&lt;!channel&gt; Buy now, @\u200bhere!", "&lt;!subteam^S0OPS|@ops&gt; no.",
                      "FINAL ANSWER: &lt;!everyone&gt; wait."]


# -- people in the thread -----------------------------------------------------------------------
@MODES
async def test_a_reply_in_the_thread_reaches_the_next_model_request(stack_factory, mode) -> None:
    s = await stack_factory(mode, "What budget do you have?", "Then go with plan B. DONE")
    ts = await s.fake.say(ALICE, f"{BOT} interview Which plan should we buy?")
    await wait_until(lambda: any("waiting for you" in m["text"] for m in s.thread(ts)),
                     what="the hand-off to the person")
    analyst = s.fake.calls_to("chat.postMessage")[1].params
    assert (analyst["username"], analyst["icon_url"]) == ("Analyst", "https://example.com/analyst.png")
    reply_ts = await s.fake.say(ALICE, "About 10k a year.", thread_ts=ts)
    await s.fake.say(ALICE, "Chatter in a thread without a run.", thread_ts="1600000000.000001")
    await s.finished(ts)
    last = s.model.requests[-1].messages
    assert any("About 10k a year." in m.content for m in last)
    assert ("user", "Alice", "About 10k a year.") in [(m.role, m.name, m.content) for m in last]
    await s.idle()
    seen = [(c.params["timestamp"], c.params["name"]) for c in s.fake.calls_to("reactions.add")]
    assert seen == [(reply_ts, "eyes")]  # the reply was taken; the chatter is none of ours


async def test_other_bots_in_the_thread_are_ignored(stack_factory) -> None:
    s = await stack_factory("http", "What budget?")
    ts = await s.fake.say(ALICE, f"{BOT} interview Which plan?")
    await wait_until(lambda: any("waiting for you" in m["text"] for m in s.thread(ts)))
    other = await s.fake.send_event({"type": "message", "subtype": "bot_message",
                                     "bot_id": OTHER_BOT_ID, "text": "I am a bot", "ts": "9.9",
                                     "thread_ts": ts, "channel": CHANNEL})
    assert other.status == 200
    await s.idle()
    assert "I am a bot" not in json.dumps(await s.run_events(ts))
    assert len(s.model.requests) == 1


# -- approvals ---------------------------------------------------------------------------------
ANNOUNCE = ("Draft: we ship Friday.", "We ship Friday.",
            reply("", ("post_message", json.dumps({"channel": "#announcements",
                                                    "text": "We ship **Friday**."}))),
            "Posted. DONE")


async def _approval(s: Stack) -> tuple[str, dict]:
    ts = await s.fake.say(ALICE, f"{BOT} announce Friday's release")
    request = await wait_until(
        lambda: next((m for m in s.thread(ts) if any(b["type"] == "actions"
                                                    for b in m.get("blocks", []))), None),
        what="the approval request")
    return ts, request


def _buttons(message: dict) -> list[str]:
    return [e["action_id"] for b in message.get("blocks", []) if b["type"] == "actions"
            for e in b["elements"]]


@MODES
async def test_approve_by_button_updates_the_request_in_place(stack_factory, mode) -> None:
    s = await stack_factory(mode, *ANNOUNCE)
    ts, request = await _approval(s)
    assert request["username"] == "Announcer"
    assert _buttons(request) == [APPROVE_ACTION, ALWAYS_ACTION, DENY_ACTION]
    styles = [e.get("style") for b in request["blocks"] if b["type"] == "actions"
              for e in b["elements"]]
    assert styles == ["primary", None, "danger"]
    assert "`approve 1`" in request["text"]

    click = await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=ALICE)
    assert click.status == 200
    await s.finished(ts)
    updated = s.fake.message(CHANNEL, request["ts"])
    assert updated["text"].startswith(f"✅ Approved by <@{ALICE}>")
    assert _buttons(updated) == []
    posted = [c for c in s.fake.calls_to("chat.postMessage")
              if c.params["channel"] == OTHER_CHANNEL]  # #announcements, by its id
    assert len(posted) == 1 and "thread_ts" not in posted[0].params
    assert posted[0].params["text"] == "We ship *Friday*."
    assert posted[0].params["username"] == "Announcer"


@MODES
async def test_an_unauthorised_click_is_refused_privately_and_changes_nothing(stack_factory,
                                                                               mode) -> None:
    s = await stack_factory(mode, *ANNOUNCE[:3])  # nobody who may approve does
    ts, request = await _approval(s)
    await s.idle()
    asked = len(s.model.requests)
    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=MALLORY)
    refusal = await wait_until(lambda: s.fake.calls_to("chat.postEphemeral"),
                               what="the ephemeral refusal")
    await s.idle()
    assert refusal[0].params["user"] == MALLORY
    assert refusal[0].params["thread_ts"] == ts
    assert refusal[0].params["text"].startswith(f"Sorry, only <@{ALICE}> can approve")
    assert s.fake.calls_to("chat.update") == []
    assert _buttons(s.fake.message(CHANNEL, request["ts"])) == [APPROVE_ACTION, ALWAYS_ACTION,
                                                                 DENY_ACTION]
    assert len(s.model.requests) == asked

    # A refused reply is the same: private, and nothing moves.
    await s.fake.say(MALLORY, "approve", thread_ts=ts)
    await wait_until(lambda: len(s.fake.calls_to("chat.postEphemeral")) == 2)
    await s.idle()
    assert s.fake.calls_to("chat.update") == [] and len(s.model.requests) == asked


async def test_approve_by_reply_also_updates_the_request(stack_factory) -> None:
    s = await stack_factory("http", *ANNOUNCE)
    ts, request = await _approval(s)
    await s.fake.say(ALICE, f"{BOT} approve", thread_ts=ts)  # a mention works as a reply too
    await s.finished(ts)
    updated = s.fake.message(CHANNEL, request["ts"])
    assert updated["text"].startswith(f"✅ Approved by <@{ALICE}>") and _buttons(updated) == []


async def test_deny_by_reply_with_a_reason(stack_factory) -> None:
    s = await stack_factory("http", *ANNOUNCE[:3], "Not posted. DONE")
    ts, request = await _approval(s)
    await s.fake.say(ALICE, "deny not before legal signs off", thread_ts=ts)
    await s.finished(ts)
    updated = s.fake.message(CHANNEL, request["ts"])
    assert updated["text"].startswith(f"❌ Denied by <@{ALICE}>: not before legal signs off")
    assert not [c for c in s.fake.calls_to("chat.postMessage")
                if c.params["channel"] == OTHER_CHANNEL]


# -- behaving well ------------------------------------------------------------------------------
@MODES
async def test_a_redelivered_event_is_processed_once(stack_factory, mode) -> None:
    s = await stack_factory(mode, "Bull.", "Bear.", "FINAL ANSWER: ok.")
    event = {"type": "app_mention", "user": ALICE, "text": f"{BOT} debate Once?",
             "ts": "1699999999.000001", "channel": CHANNEL, "event_ts": "1699999999.000001"}
    first = await s.fake.send_event(event, event_id="Ev0REDELIVER")
    again = await s.fake.send_event(event, event_id="Ev0REDELIVER", retry_num=1)
    later = await s.fake.send_event(event, event_id="Ev0REDELIVER", retry_num=2)
    assert first.status == again.status == later.status == 200
    await s.finished("1699999999.000001")
    await s.idle()
    thread = s.thread("1699999999.000001")
    assert sum(1 for m in thread if "is on it" in m["text"]) == 1
    assert len(s.model.requests) == 3


async def test_a_rate_limit_burst_delays_posts_but_drops_none(stack_factory) -> None:
    s = await stack_factory("http", "Bull one.", "Bear two.", "FINAL ANSWER: three.")
    s.fake.rate_limit("chat.postMessage", times=3, retry_after=1)
    ts = await s.fake.say(ALICE, f"{BOT} debate Rate limits?")
    thread = await s.finished(ts, within=20)
    assert [m["text"].split(" ")[0] for m in thread[1:4]] == ["Bull", "Bear", "FINAL"]
    limited = s.fake.calls_to("chat.postMessage", ok=False)
    assert len(limited) == 3 and all(c.status == 429 for c in limited)
    after = s.fake.calls_to("chat.postMessage", ok=True)[0]
    assert after.at - limited[-1].at >= 0.95  # Retry-After was honoured
    assert len(s.fake.calls_to("chat.postMessage", ok=True)) == 5


async def test_a_long_reply_is_split_in_order_under_one_persona(stack_factory) -> None:
    paragraphs = [f"Point {i}: " + " ".join(["evidence"] * 170) for i in range(5)]
    s = await stack_factory("http", "\n\n".join(paragraphs), "Bear.", "FINAL ANSWER: ok.")
    ts = await s.fake.say(ALICE, f"{BOT} debate Long?")
    thread = await s.finished(ts)
    bull = [m for m in thread if m.get("username") == "Bull"]
    assert len(bull) > 1 and all(len(m["text"]) <= 3000 for m in bull)
    assert "\n\n".join(m["text"] for m in bull) == "\n\n".join(paragraphs)
    assert [m.get("username") for m in thread].index("Bear") > thread.index(bull[-1])


async def test_working_shows_status_or_a_placeholder_that_becomes_the_reply(stack_factory) -> None:
    s = await stack_factory("http", "Bull.", "Bear.", "FINAL ANSWER.")
    ts = await s.fake.say(ALICE, f"{BOT} debate Status?")
    await s.finished(ts)
    status = s.fake.calls_to("assistant.threads.setStatus")
    assert [c.params["username"] for c in status] == ["Bull", "Bear", "Synthesis"]
    assert s.fake.calls_to("chat.update") == []

    s.fake.status_error = "not_allowed"  # a plain channel thread: no assistant status there
    s.model.add("Growth.", "Risk.", "FINAL ANSWER: slowly.")
    ts = await s.fake.say(ALICE, f"{BOT} debate Placeholder?")
    thread = await s.finished(ts)
    await s.idle()
    placeholders = [c for c in s.fake.calls_to("chat.postMessage")
                    if c.params.get("thread_ts") == ts and "thinking" in c.params["text"]]
    assert [c.params["username"] for c in placeholders] == ["Bull", "Bear", "Synthesis"]
    agents = [(m.get("username"), m["text"]) for m in thread if m.get("username")]
    assert agents == [("Bull", "Growth."), ("Bear", "Risk."), ("Synthesis", "FINAL ANSWER: slowly.")]
    assert not any("thinking" in m["text"] for m in thread) and s.fake.deleted == []


async def test_a_streaming_model_fills_the_placeholder_as_it_writes(stack_factory,
                                                                     fake_openai) -> None:
    answer = "Which **plan** do you prefer: A, B or C? I will compare them on cost."
    fake_openai.queue_text(answer, chunks=6)
    fake_openai.chunk_delay = 0.5  # about three seconds of writing
    s = await stack_factory("http", model_env={
        "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake_openai.url,
        "THREADTEAM_MODEL": "openai:gpt-4o-mini"})
    s.fake.status_error = "not_allowed"
    ts = await s.fake.say(ALICE, f"{BOT} interview Which plan?")
    await wait_until(lambda: any("waiting for you" in m["text"] for m in s.thread(ts)),
                     within=15, what="the analyst's turn")
    [placeholder] = [c for c in s.fake.calls_to("chat.postMessage")
                     if c.params.get("username") == "Analyst"]
    assert "thinking" in placeholder.params["text"]
    [analyst] = [m for m in s.thread(ts) if m.get("username") == "Analyst"]
    *streamed, final = s.fake.calls_to("chat.update")
    shown = [c.params["text"].removesuffix(" …") for c in streamed]
    assert len(shown) >= 2 and shown == sorted(shown, key=len) and len(set(shown)) == len(shown)
    assert all(c.params["ts"] == analyst["ts"] for c in [*streamed, final])
    assert final.params["text"] == analyst["text"] == (
        "Which *plan* do you prefer: A, B or C? I will compare them on cost.")


# -- the HTTP endpoint --------------------------------------------------------------------------
async def test_forged_unsigned_and_stale_requests_get_401_and_do_nothing(stack_factory) -> None:
    import time

    s = await stack_factory("http", "Bull.", "Bear.", "FINAL ANSWER: signed.")
    body = json.dumps(s.fake.envelope({"type": "app_mention", "user": ALICE, "ts": "5.000001",
                                       "text": f"{BOT} debate Forged?", "channel": CHANNEL}))
    assert (await s.fake.post_signed(body, secret="not-the-secret"))[0] == 401
    assert (await s.fake.post_signed(body, unsigned=True))[0] == 401
    assert (await s.fake.post_signed(body, timestamp=int(time.time()) - 600))[0] == 401
    assert (await s.fake.post_signed(body, signature="v0=" + "0" * 64))[0] == 401
    await s.idle()
    assert [c.method for c in s.fake.calls if c.method != "auth.test"] == []
    assert s.model.requests == []
    assert (await s.fake.post_signed(body))[0] == 200  # the same body, signed: accepted
    await s.finished("5.000001")


@pytest.mark.parametrize(("timestamp", "signature"), [
    ("", ""), (None, None), ("", None), ("abc", "v0=00"), ("9" * 5000, "v0=00"),
    ("now", None), ("now", ""), ("now", "v0=é"), ("now", "v1=" + "0" * 64), ("-1", "v0=00"),
    ("now", "v0=" + "0" * 5000),
])
async def test_malformed_signature_headers_get_401_quietly(stack_factory, caplog, timestamp,
                                                             signature) -> None:
    import logging
    import time

    import aiohttp

    caplog.set_level(logging.DEBUG)
    s = await stack_factory("http")
    headers = {"Content-Type": "application/json"}
    for name, value in (("X-Slack-Request-Timestamp", timestamp),
                        ("X-Slack-Signature", signature)):
        if value is not None:
            headers[name] = str(int(time.time())) if value == "now" else value
    # A bot's post takes a shortcut past bolt; a person's goes through it: both refused.
    for event in ({"type": "message", "bot_id": "B0X", "text": "x", "ts": "5.1",
                   "channel": CHANNEL},
                  {"type": "app_mention", "user": ALICE, "text": f"{BOT} debate Forged?",
                   "ts": "5.2", "channel": CHANNEL}):
        body = json.dumps(s.fake.envelope(event)).encode()
        async with aiohttp.ClientSession() as session, \
                session.post(s.adapter.url, data=body, headers=headers) as resp:
            assert resp.status == 401
    await s.idle()
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [c.method for c in s.fake.calls if c.method != "auth.test"] == []


async def test_an_event_whose_text_is_not_text_is_ignored_quietly(stack_factory, caplog) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    s = await stack_factory("http")
    for text in (42, ["a", "list"], {"a": "map"}):
        d = await s.fake.send_event({"type": "app_mention", "user": ALICE, "text": text,
                                     "ts": "6.1", "channel": CHANNEL})
        assert d.status == 200
    await s.idle()
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_healthz(stack_factory) -> None:
    import aiohttp

    s = await stack_factory("http")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{s.adapter.port}/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["ok"] is True


async def test_url_verification_challenge(stack_factory) -> None:
    s = await stack_factory("http")
    status, text = await s.fake.post_signed(json.dumps({"token": "t", "challenge": "abc123",
                                                        "type": "url_verification"}))
    assert status == 200 and "abc123" in text
