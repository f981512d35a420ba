"""Slack payloads -> Inbound: who may reach the host, as what, under which id."""

from __future__ import annotations

from tests.fakes.slack import ALICE, BOT_ID, BOT_USER, CHANNEL, TEAM, FakeSlack
from threadteam.adapters.slack.inbound import (
    APPROVE_ACTION,
    RecentIds,
    button_inbound,
    message_inbound,
    strip_mention,
)
from threadteam.bot.shapes import ThreadKey

BOT = BOT_USER


def body(**event) -> dict:
    base = {"type": "message", "user": ALICE, "channel": CHANNEL, "ts": "100.000001",
            "text": "hi", "channel_type": "channel"}
    return FakeSlack().envelope({**base, **event})


def test_strip_mention() -> None:
    assert strip_mention(f"<@{BOT}> debate X", BOT) == "debate X"
    assert strip_mention(f"  <@{BOT}|threadteam>: approve", BOT) == "approve"
    assert strip_mention(f"hello <@{BOT}>", BOT) == f"hello <@{BOT}>"


def test_top_level_mention_summons_into_its_own_thread() -> None:
    got = message_inbound(body(type="app_mention", text=f"<@{BOT}> debate Tea?"), BOT)
    assert got is not None
    assert (got.kind, got.text, got.user) == ("summon", "debate Tea?", ALICE)
    assert got.key == ThreadKey("slack", TEAM, CHANNEL, "100.000001")
    assert got.event_id == f"{TEAM}:{CHANNEL}:100.000001"


def test_text_reaches_the_team_as_typed() -> None:
    got = message_inbound(body(thread_ts="5.1", text="is a &lt; b &amp;&amp; c &gt; d? &amp;lt;"),
                          BOT)
    assert got is not None and got.text == "is a < b && c > d? &lt;"


def test_thread_reply_is_a_reply_in_that_thread() -> None:
    got = message_inbound(body(thread_ts="50.000001", text="I disagree"), BOT)
    assert got is not None and got.kind == "reply" and got.key.thread == "50.000001"


def test_channel_chatter_and_the_message_copy_of_a_mention_are_dropped() -> None:
    assert message_inbound(body(text="lunch?"), BOT) is None
    assert message_inbound(body(text=f"<@{BOT}> debate Tea?"), BOT) is None
    assert message_inbound(body(thread_ts="50.000001", text=f"<@{BOT}> approve"), BOT) is None


def test_mention_in_a_thread_is_a_command_or_a_summon() -> None:
    cmd = message_inbound(body(type="app_mention", thread_ts="50.000001",
                               text=f"<@{BOT}> approve 2"), BOT)
    assert cmd is not None and (cmd.kind, cmd.text) == ("reply", "approve 2")
    summon = message_inbound(body(type="app_mention", thread_ts="50.000001",
                                  text=f"<@{BOT}> debate Tea?"), BOT)
    assert summon is not None and summon.kind == "summon" and summon.key.thread == "50.000001"


def test_bots_edits_and_joins_are_not_people() -> None:
    assert message_inbound(body(bot_id=BOT_ID, subtype="bot_message", thread_ts="5.1"), BOT) is None
    assert message_inbound(body(bot_id="B0OTHER", thread_ts="5.1"), BOT) is None
    assert message_inbound(body(user=BOT, thread_ts="5.1"), BOT) is None
    assert message_inbound(body(subtype="message_changed", thread_ts="5.1"), BOT) is None
    assert message_inbound(body(subtype="channel_join", thread_ts="5.1"), BOT) is None
    assert message_inbound(body(subtype="thread_broadcast", thread_ts="5.1"), BOT) is not None
    assert message_inbound(body(subtype="file_share", thread_ts="5.1"), BOT) is not None


def test_a_direct_message_summons_without_a_mention() -> None:
    got = message_inbound(body(channel="D0ALICE", channel_type="im", text="debate Tea?"), BOT)
    assert got is not None and got.kind == "summon"


def test_button_press_names_the_call_and_the_thread() -> None:
    payload = {"type": "block_actions", "user": {"id": ALICE, "name": "alice"},
               "team": {"id": TEAM}, "container": {"message_ts": "60.1", "channel_id": CHANNEL},
               "message": {"ts": "60.1", "thread_ts": "50.1"},
               "actions": [{"action_id": APPROVE_ACTION, "value": "call_0", "action_ts": "61.2"}]}
    got = button_inbound(payload)
    assert got is not None
    assert (got.kind, got.action, got.call_id, got.key.thread) == ("button", "approve", "call_0",
                                                                   "50.1")
    assert button_inbound({**payload, "actions": [{"action_id": "other"}]}) is None


def test_recent_ids_forget_after_ttl() -> None:
    seen = RecentIds(ttl=-1.0)
    assert seen.first("a")
    assert seen.first("a")  # expired at once
    seen = RecentIds(ttl=60.0, size=2)
    assert seen.first("a") and not seen.first("a")
    assert seen.first("b") and seen.first("c") and seen.first("d")
    assert seen.first("a")  # pushed out by size
