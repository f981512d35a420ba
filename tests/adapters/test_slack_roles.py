"""`role:` approvers on Slack are user groups: the real slack_bolt / slack_sdk, the fake Slack.

A team file's `approvers: ["role:oncall"]` lets anyone in the user group with the
handle `oncall` (or the id, `role:S0ONCALL`) decide its approvals, by button or by
reply; never a group that merely has that display name. The adapter
asks `usergroups.list` only for approval attempts in runs that have `role:`
approvers, and at most once a minute per workspace.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.adapters.slack_stack import Stack
from tests.bot.helpers import ANNOUNCE
from tests.fakes.slack import (
    ALICE,
    BOB,
    BOT_USER,
    CHANNEL,
    MALLORY,
    OTHER_CHANNEL,
    TEAM,
    wait_until,
)
from threadteam.adapters.slack.directory import group_labels
from threadteam.adapters.slack.inbound import ALWAYS_ACTION, APPROVE_ACTION, DENY_ACTION
from threadteam.teams.approvers import Approvers
from threadteam.teams.models.scripted import reply

BOT = f"<@{BOT_USER}>"
ONCALL = {"id": "S0ONCALL", "team_id": TEAM, "name": "On-call engineers", "handle": "oncall",
          "users": [BOB]}
OTHERS = {"id": "S0DESIGN", "team_id": TEAM, "name": "Design", "handle": "design",
          "users": [MALLORY]}
STEPS = (reply("", ("post_message", json.dumps({"channel": "#announcements",
                                                "text": "We ship Friday."}))),
         "Posted. DONE")


async def _approval(s: Stack) -> tuple[str, dict]:
    """Alice summons the announcer; the thread and its approval request."""
    ts = await s.fake.say(ALICE, f"{BOT} announce Friday's release")
    request = await wait_until(lambda: next((m for m in s.thread(ts) if _buttons(m)), None),
                               what="the approval request")
    await s.idle()
    return ts, request


def _announced(s: Stack) -> list:
    return [c for c in s.fake.calls_to("chat.postMessage")
            if c.params["channel"] == OTHER_CHANNEL]  # #announcements, by its id


@pytest.fixture
def announcer(stack_factory):
    """A Slack stack whose `announce` team has the given `approvers:` (YAML flow list)."""
    async def build(approvers: str, mode: str = "http") -> Stack:
        return await stack_factory(mode, *STEPS,
                                   teams={"announce": ANNOUNCE.format(approvers=approvers)})
    return build


def _buttons(message: dict) -> list[str]:
    return [e["action_id"] for b in message.get("blocks", []) if b["type"] == "actions"
            for e in b["elements"]]


# -- matching -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("wanted", "held"), [
    ("oncall", True), ("OnCall", True), ("@oncall", True), (" @ONCALL ", True),
    ("S0ONCALL", True), ("On-call engineers", False),  # a display name is no identity
    ("design", False), ("on", False), ("", False), ("@", False),
])
def test_a_role_names_a_user_group_by_handle_or_id_in_any_case(wanted, held) -> None:
    assert Approvers.parse([f"role:{wanted}"]).admits("U0NOBODY", group_labels(ONCALL)) == held


def test_any_one_of_a_persons_groups_is_enough() -> None:
    labels = group_labels(ONCALL) | group_labels(OTHERS)
    assert Approvers.parse(["role:ops", "role:@OnCall"]).admits("U0NOBODY", labels)
    assert not Approvers.parse(["role:ops"]).admits("U0NOBODY", labels)
    assert not Approvers.parse(["role:oncall"]).admits("U0NOBODY", ())


# -- end to end -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_member_of_the_group_approves_by_button(announcer, mode) -> None:
    s = await announcer('["role:OnCall"]', mode)  # any case: the handle is `oncall`
    s.fake.usergroups = [OTHERS, ONCALL]
    ts, request = await _approval(s)
    assert s.fake.calls_to("usergroups.list") == []  # summons and agents' turns never ask

    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=BOB)
    await s.finished(ts)
    updated = s.fake.message(CHANNEL, request["ts"])
    assert updated["text"].startswith(f"✅ Approved by <@{BOB}>")
    assert _buttons(updated) == []
    assert len(_announced(s)) == 1
    assert s.fake.calls_to("chat.postEphemeral") == []
    [asked] = s.fake.calls_to("usergroups.list")
    assert asked.params.get("include_users") in (True, "true", "1")


async def test_someone_outside_the_group_is_refused_privately_and_nothing_changes(
        announcer) -> None:
    s = await announcer('["role:oncall"]')
    s.fake.usergroups = [OTHERS, ONCALL]
    ts, request = await _approval(s)
    asked = len(s.model.requests)

    for user, action in ((MALLORY, APPROVE_ACTION), (ALICE, DENY_ACTION)):  # Alice summoned it
        await s.fake.click(CHANNEL, request["ts"], action, user=user)
    refusals = await wait_until(lambda: len(s.fake.calls_to("chat.postEphemeral")) == 2
                                and s.fake.calls_to("chat.postEphemeral"),
                                what="two ephemeral refusals")
    await s.idle()
    assert sorted(r.params["user"] for r in refusals) == sorted([MALLORY, ALICE])
    for r in refusals:
        assert r.params["thread_ts"] == ts
        assert r.params["text"].startswith("Sorry, only members of oncall can approve")
    assert s.fake.calls_to("chat.update") == []
    assert _buttons(s.fake.message(CHANNEL, request["ts"])) == [APPROVE_ACTION, ALWAYS_ACTION,
                                                                 DENY_ACTION]
    assert len(s.model.requests) == asked and _announced(s) == []
    # A burst of attempts asks Slack once: the groups are kept for a minute.
    assert len(s.fake.calls_to("usergroups.list")) == 1

    # Joining the group counts once the minute is up.
    s.fake.usergroups = [{**OTHERS, "users": [MALLORY]}, {**ONCALL, "users": [BOB, MALLORY]}]
    s.adapter.directory.forget()
    await s.fake.say(MALLORY, "approve", thread_ts=ts)
    await s.finished(ts)
    assert s.fake.message(CHANNEL, request["ts"])["text"].startswith(
        f"✅ Approved by <@{MALLORY}>")


@pytest.mark.parametrize(("role", "lookalike"), [
    # Anyone may name a group "oncall"; only the group with the handle @oncall is oncall.
    ("oncall", {"id": "S0LOOK", "team_id": TEAM, "name": "oncall", "handle": "notoncall",
                "users": [MALLORY]}),
    # Nor may a handle pass for another group's id.
    ("S0ONCALL", {"id": "S0LOOK", "team_id": TEAM, "name": "S0ONCALL", "handle": "s0oncall",
                  "users": [MALLORY]}),
])
async def test_a_lookalike_group_grants_nothing(announcer, role, lookalike) -> None:
    s = await announcer(f'["role:{role}"]')
    s.fake.usergroups = [lookalike, ONCALL]
    ts, request = await _approval(s)
    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=MALLORY)
    [refusal] = await wait_until(lambda: s.fake.calls_to("chat.postEphemeral"),
                                 what="Mallory's refusal")
    await s.idle()
    assert refusal.params["user"] == MALLORY and refusal.params["text"].startswith("Sorry")
    assert _buttons(s.fake.message(CHANNEL, request["ts"])) == [APPROVE_ACTION, ALWAYS_ACTION,
                                                                 DENY_ACTION]
    assert _announced(s) == []

    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=BOB)  # the real group
    await s.finished(ts)
    assert s.fake.message(CHANNEL, request["ts"])["text"].startswith(f"✅ Approved by <@{BOB}>")
    assert len(_announced(s)) == 1


async def test_a_member_approves_by_reply(announcer) -> None:
    s = await announcer('[U0CAROL, "role:@oncall"]')  # `@oncall`, as Slack shows it
    s.fake.usergroups = [ONCALL]
    ts, request = await _approval(s)
    await s.fake.say(MALLORY, "approve", thread_ts=ts)
    [refusal] = await wait_until(lambda: s.fake.calls_to("chat.postEphemeral"),
                                 what="Mallory's refusal")
    assert refusal.params["text"].startswith(
        "Sorry, only <@U0CAROL>, members of @oncall can approve")
    await s.fake.say(BOB, "approve", thread_ts=ts)
    await s.finished(ts)
    updated = s.fake.message(CHANNEL, request["ts"])
    assert updated["text"].startswith(f"✅ Approved by <@{BOB}>") and _buttons(updated) == []
    assert len(_announced(s)) == 1
    assert len(s.fake.calls_to("usergroups.list")) == 1


async def test_slack_is_not_asked_when_the_team_names_no_roles(announcer) -> None:
    s = await announcer(f"[{ALICE}]")
    s.fake.usergroups = [ONCALL]
    ts, request = await _approval(s)
    await s.fake.say(BOB, "Looks good to me", thread_ts=ts)  # not an approval attempt
    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=BOB)
    await wait_until(lambda: s.fake.calls_to("chat.postEphemeral"), what="Bob's refusal")
    await s.fake.say(ALICE, f"{BOT} approve", thread_ts=ts)
    await s.finished(ts)
    assert s.fake.message(CHANNEL, request["ts"])["text"].startswith(f"✅ Approved by <@{ALICE}>")
    assert s.fake.calls_to("usergroups.list") == []


async def test_without_the_scope_a_member_is_refused_politely_and_a_warning_says_why(
        announcer, caplog) -> None:
    s = await announcer('["role:oncall"]')
    s.fake.usergroups = [ONCALL]
    s.fake.fail("usergroups.list", "missing_scope")  # the next call only
    ts, request = await _approval(s)
    caplog.set_level(logging.WARNING, logger="threadteam")

    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=BOB)
    await s.fake.say(BOB, "approve", thread_ts=ts)
    refusals = await wait_until(lambda: len(s.fake.calls_to("chat.postEphemeral")) == 2
                                and s.fake.calls_to("chat.postEphemeral"),
                                what="the polite refusals")
    await s.idle()
    for r in refusals:
        assert r.params["user"] == BOB
        assert r.params["text"].startswith("Sorry, only members of oncall can approve")
    assert s.fake.calls_to("chat.update") == [] and _announced(s) == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    line = warnings[0].getMessage()
    assert "missing_scope" in line and "usergroups:read" in line and "\n" not in line
    assert "xoxb-" not in caplog.text
    assert len(s.fake.calls_to("usergroups.list")) == 1

    # The failure is kept for the minute too; once the scope is granted, the member gets through.
    s.adapter.directory.forget()
    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=BOB)
    await s.finished(ts)
    assert s.fake.message(CHANNEL, request["ts"])["text"].startswith(f"✅ Approved by <@{BOB}>")
