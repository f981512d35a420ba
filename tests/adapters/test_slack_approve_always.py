"""Slack: "Approve for this run" beside Approve / Deny, through the real bolt and the fake Slack.

An approver's press approves the request and the tool for the rest of the run (the
log records who); anyone else's is refused privately and changes nothing; the button
goes with the others when the request is settled another way or expires.
"""

from __future__ import annotations

import json

from tests.adapters.slack_stack import Stack
from tests.bot.helpers import TWICE
from tests.fakes.slack import ALICE, BOT_USER, CHANNEL, MALLORY, OTHER_CHANNEL, wait_until
from threadteam.adapters.slack.inbound import ALWAYS_ACTION, APPROVE_ACTION, DENY_ACTION
from threadteam.teams.models.scripted import reply

BOT = f"<@{BOT_USER}>"


def _post(text: str) -> object:
    return reply("", ("post_message", json.dumps({"channel": "#announcements", "text": text})))


TWO_POSTS = (_post("Release one is out."), _post("Release two is out."), "Posted both. DONE")


def _buttons(message: dict) -> list[tuple[str, str]]:
    return [(e["action_id"], e["text"]["text"]) for b in message.get("blocks", [])
            if b["type"] == "actions" for e in b["elements"]]


def _requests(s: Stack) -> list[dict]:
    """Every approval request the bot posted, as it was posted (with its buttons)."""
    return [c.params for c in s.fake.calls_to("chat.postMessage")
            if "blocks" in c.params and any(b["type"] == "actions" for b in c.params["blocks"])]


async def _pending(s: Stack) -> tuple[str, dict]:
    ts = await s.fake.say(ALICE, f"{BOT} twice ship the releases")
    request = await wait_until(
        lambda: next((m for m in s.thread(ts) if _buttons(m)), None), what="the approval request")
    return ts, request


def _announced(s: Stack) -> list[str]:
    return [c.params["text"] for c in s.fake.calls_to("chat.postMessage")
            if c.params["channel"] == OTHER_CHANNEL]


async def test_approve_for_this_run_settles_the_request_and_covers_the_next_call(
        stack_factory) -> None:
    s = await stack_factory("http", *TWO_POSTS, teams={"twice": TWICE.format(extra="")})
    ts, request = await _pending(s)
    assert _buttons(request) == [(APPROVE_ACTION, "Approve"),
                                 (ALWAYS_ACTION, "Approve for this run"), (DENY_ACTION, "Deny")]

    click = await s.fake.click(CHANNEL, request["ts"], ALWAYS_ACTION, user=ALICE)
    assert click.status == 200
    await s.finished(ts)
    settled = s.fake.message(CHANNEL, request["ts"])
    assert settled["text"].startswith(
        f"✅ Approved by <@{ALICE}>: approved for the rest of the run")
    assert _buttons(settled) == []
    # Both posts went out, and the second call asked nobody.
    assert _announced(s) == ["Release one is out.", "Release two is out."]
    assert len(_requests(s)) == 1
    assert s.thread(ts)[-1]["text"].startswith("Finished")
    always = [e for e in await s.run_events(ts) if e["kind"] == "tool_always_approved"]
    assert [(e["tool"], e["by"]) for e in always] == [("post_message", ALICE)]
    assert s.fake.calls_to("chat.postEphemeral") == []


async def test_a_non_approver_pressing_it_is_refused_privately_and_nothing_changes(
        stack_factory) -> None:
    s = await stack_factory("http", *TWO_POSTS[:1], teams={"twice": TWICE.format(extra="")})
    ts, request = await _pending(s)
    await s.idle()
    asked = len(s.model.requests)

    await s.fake.click(CHANNEL, request["ts"], ALWAYS_ACTION, user=MALLORY)
    [refusal] = await wait_until(lambda: s.fake.calls_to("chat.postEphemeral"),
                                 what="the private refusal")
    await s.idle()
    assert refusal.params["user"] == MALLORY and refusal.params["thread_ts"] == ts
    assert refusal.params["text"].startswith(f"Sorry, only <@{ALICE}> can approve")
    assert s.fake.calls_to("chat.update") == []
    assert [a for a, _ in _buttons(s.fake.message(CHANNEL, request["ts"]))] == [
        APPROVE_ACTION, ALWAYS_ACTION, DENY_ACTION]
    assert len(s.model.requests) == asked and _announced(s) == []
    assert not [e for e in await s.run_events(ts)
                if e["kind"] in ("tool_always_approved", "approval_decided")]


async def test_the_button_goes_when_the_request_is_approved_by_reply(stack_factory) -> None:
    s = await stack_factory("http", *TWO_POSTS[:1], "Posted one. DONE",
                            teams={"twice": TWICE.format(extra="")})
    ts, request = await _pending(s)
    await s.fake.say(ALICE, "approve 1", thread_ts=ts)
    await s.finished(ts)
    settled = s.fake.message(CHANNEL, request["ts"])
    assert settled["text"].startswith(f"✅ Approved by <@{ALICE}>") and _buttons(settled) == []


async def test_the_button_goes_when_the_request_expires(stack_factory) -> None:
    s = await stack_factory("http", *TWO_POSTS[:1], "Nobody answered. DONE",
                            teams={"twice": TWICE.format(extra="approval: {expires_after: 1s}")})
    ts = await s.fake.say(ALICE, f"{BOT} twice ship the releases")
    [posted] = await wait_until(lambda: _requests(s), what="the approval request")
    assert [a for a, _ in _buttons(posted)] == [APPROVE_ACTION, ALWAYS_ACTION, DENY_ACTION]
    await s.finished(ts)
    expired = next(m for m in s.thread(ts) if "wanted to run" in m["text"])
    assert expired["text"].startswith("⌛ Expired") and _buttons(expired) == []
    assert _announced(s) == []


async def test_under_a_quorum_only_approve_and_deny_are_offered(stack_factory) -> None:
    s = await stack_factory("http", *TWO_POSTS[:1], teams={"twice": TWICE.format(
        extra=f"approvers: [{ALICE}, {MALLORY}]\napproval: {{quorum: 2}}")})
    _, request = await _pending(s)
    assert [a for a, _ in _buttons(request)] == [APPROVE_ACTION, DENY_ACTION]
