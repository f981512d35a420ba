"""`role:` approvers on Slack are user groups: the real slack_bolt / slack_sdk, the fake Slack.

A team file's `approvers: ["role:oncall"]` lets anyone in the user group with the
handle (or name) `oncall` decide its approvals, by button or by reply. The adapter
asks `usergroups.list` only for approval attempts in runs that have `role:`
approvers, and at most once a minute per workspace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.slack import SlackAdapter, SlackConfig
from adapters.slack._inbound import APPROVE_ACTION, DENY_ACTION, group_labels, roles_held
from bot.host import Host
from bot.stores import open_store
from teams.catalog import TeamCatalog
from teams.models import ModelPool
from teams.models.scripted import ScriptedModel, reply
from tests.bot.helpers import ANNOUNCE
from tests.fakes.slack import ALICE, BOB, BOT_USER, CHANNEL, MALLORY, TEAM, FakeSlack, wait_until

BOT = f"<@{BOT_USER}>"
ONCALL = {"id": "S0ONCALL", "team_id": TEAM, "name": "On-call engineers", "handle": "oncall",
          "users": [BOB]}
OTHERS = {"id": "S0DESIGN", "team_id": TEAM, "name": "Design", "handle": "design",
          "users": [MALLORY]}
STEPS = (reply("", ("post_message", json.dumps({"channel": "#announcements",
                                                "text": "We ship Friday."}))),
         "Posted. DONE")


@dataclass
class Stack:
    fake: FakeSlack
    adapter: SlackAdapter
    host: Host
    model: ScriptedModel

    async def idle(self) -> None:
        for _ in range(3):
            await self.adapter.settle()
            await self.host.idle()
            await self.fake.drain()

    def thread(self, ts: str) -> list[dict]:
        return self.fake.thread(CHANNEL, ts)

    async def approval(self) -> tuple[str, dict]:
        """Alice summons the announcer; the thread and its approval request."""
        ts = await self.fake.say(ALICE, f"{BOT} announce Friday's release")
        request = await wait_until(
            lambda: next((m for m in self.thread(ts) if _buttons(m)), None),
            what="the approval request")
        await self.idle()
        return ts, request

    async def finished(self, ts: str) -> None:
        await wait_until(lambda: any(m["text"].startswith("Finished") for m in self.thread(ts)),
                         what="the run's Finished notice")

    def announced(self) -> list:
        return [c for c in self.fake.calls_to("chat.postMessage")
                if c.params["channel"] == "#announcements"]


@pytest.fixture
async def stack_factory(fake_slack: FakeSlack, tmp_path: Path) -> AsyncIterator:
    built: list[Stack] = []

    async def build(approvers: str, mode: str = "http") -> Stack:
        teams = tmp_path / "teams"
        teams.mkdir(exist_ok=True)
        (teams / "announce.yaml").write_text(ANNOUNCE.format(approvers=approvers))
        model = ScriptedModel(STEPS)
        store = open_store(f"sqlite:///{tmp_path / 'runs.sqlite3'}")
        await store.start()
        adapter = SlackAdapter(SlackConfig.from_env(fake_slack.env(socket_mode=mode == "socket")))
        host = Host(store=store, catalog=TeamCatalog.load(teams, strict=True),
                    models=ModelPool(env={}, overrides={"scripted": model}),
                    poster=adapter.poster)
        await host.start()
        await adapter.start(host, port=0, bind="127.0.0.1")
        if mode == "http":
            fake_slack.events_url = adapter.url
        else:
            await wait_until(lambda: fake_slack.sockets, what="the Socket Mode connection")
        stack = Stack(fake_slack, adapter, host, model)
        built.append(stack)
        return stack

    yield build
    for s in built:
        await s.adapter.stop()
        await s.host.aclose()
        await s.adapter.aclose()
        await s.host.store.aclose()


def _buttons(message: dict) -> list[str]:
    return [e["action_id"] for b in message.get("blocks", []) if b["type"] == "actions"
            for e in b["elements"]]


# -- matching -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("wanted", "held"), [
    ("oncall", True), ("OnCall", True), ("@oncall", True), (" @ONCALL ", True),
    ("On-call engineers", True), ("S0ONCALL", True),
    ("design", False), ("on", False), ("", False), ("@", False),
])
def test_a_role_names_a_user_group_by_handle_or_name_in_any_case(wanted, held) -> None:
    assert roles_held([wanted], [group_labels(ONCALL)]) == ((wanted,) if held else ())


def test_roles_come_back_as_the_team_file_wrote_them() -> None:
    groups = [group_labels(ONCALL), group_labels(OTHERS)]
    assert roles_held(["@OnCall", "design", "ops"], groups) == ("@OnCall", "design")
    assert roles_held(["oncall"], []) == ()


# -- end to end -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_member_of_the_group_approves_by_button(stack_factory, mode) -> None:
    s = await stack_factory('["role:OnCall"]', mode)  # any case: the handle is `oncall`
    s.fake.usergroups = [OTHERS, ONCALL]
    ts, request = await s.approval()
    assert s.fake.calls_to("usergroups.list") == []  # summons and agents' turns never ask

    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=BOB)
    await s.finished(ts)
    updated = s.fake.message(CHANNEL, request["ts"])
    assert updated["text"].startswith(f"✅ Approved by <@{BOB}>")
    assert _buttons(updated) == []
    assert len(s.announced()) == 1
    assert s.fake.calls_to("chat.postEphemeral") == []
    [asked] = s.fake.calls_to("usergroups.list")
    assert asked.params.get("include_users") in (True, "true", "1")


async def test_someone_outside_the_group_is_refused_privately_and_nothing_changes(
        stack_factory) -> None:
    s = await stack_factory('["role:oncall"]')
    s.fake.usergroups = [OTHERS, ONCALL]
    ts, request = await s.approval()
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
    assert _buttons(s.fake.message(CHANNEL, request["ts"])) == [APPROVE_ACTION, DENY_ACTION]
    assert len(s.model.requests) == asked and s.announced() == []
    # A burst of attempts asks Slack once: the groups are kept for a minute.
    assert len(s.fake.calls_to("usergroups.list")) == 1

    # Joining the group counts once the minute is up.
    s.fake.usergroups = [{**OTHERS, "users": [MALLORY]}, {**ONCALL, "users": [BOB, MALLORY]}]
    s.adapter.usergroups.forget()
    await s.fake.say(MALLORY, "approve", thread_ts=ts)
    await s.finished(ts)
    assert s.fake.message(CHANNEL, request["ts"])["text"].startswith(
        f"✅ Approved by <@{MALLORY}>")


async def test_a_member_approves_by_reply(stack_factory) -> None:
    s = await stack_factory('[U0CAROL, "role:@oncall"]')  # `@oncall`, as Slack shows it
    s.fake.usergroups = [ONCALL]
    ts, request = await s.approval()
    await s.fake.say(MALLORY, "approve", thread_ts=ts)
    [refusal] = await wait_until(lambda: s.fake.calls_to("chat.postEphemeral"),
                                 what="Mallory's refusal")
    assert refusal.params["text"].startswith(
        "Sorry, only <@U0CAROL>, members of @oncall can approve")
    await s.fake.say(BOB, "approve", thread_ts=ts)
    await s.finished(ts)
    updated = s.fake.message(CHANNEL, request["ts"])
    assert updated["text"].startswith(f"✅ Approved by <@{BOB}>") and _buttons(updated) == []
    assert len(s.announced()) == 1
    assert len(s.fake.calls_to("usergroups.list")) == 1


async def test_slack_is_not_asked_when_the_team_names_no_roles(stack_factory) -> None:
    s = await stack_factory(f"[{ALICE}]")
    s.fake.usergroups = [ONCALL]
    ts, request = await s.approval()
    await s.fake.say(BOB, "Looks good to me", thread_ts=ts)  # not an approval attempt
    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=BOB)
    await wait_until(lambda: s.fake.calls_to("chat.postEphemeral"), what="Bob's refusal")
    await s.fake.say(ALICE, f"{BOT} approve", thread_ts=ts)
    await s.finished(ts)
    assert s.fake.message(CHANNEL, request["ts"])["text"].startswith(f"✅ Approved by <@{ALICE}>")
    assert s.fake.calls_to("usergroups.list") == []


async def test_without_the_scope_a_member_is_refused_politely_and_a_warning_says_why(
        stack_factory, caplog) -> None:
    s = await stack_factory('["role:oncall"]')
    s.fake.usergroups = [ONCALL]
    s.fake.fail("usergroups.list", "missing_scope")  # the next call only
    ts, request = await s.approval()
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
    assert s.fake.calls_to("chat.update") == [] and s.announced() == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    line = warnings[0].getMessage()
    assert "missing_scope" in line and "usergroups:read" in line and "\n" not in line
    assert "xoxb-" not in caplog.text
    assert len(s.fake.calls_to("usergroups.list")) == 1

    # The failure is kept for the minute too; once the scope is granted, the member gets through.
    s.adapter.usergroups.forget()
    await s.fake.click(CHANNEL, request["ts"], APPROVE_ACTION, user=BOB)
    await s.finished(ts)
    assert s.fake.message(CHANNEL, request["ts"])["text"].startswith(f"✅ Approved by <@{BOB}>")
