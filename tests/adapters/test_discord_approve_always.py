"""Discord: "Approve for this run" beside Approve / Deny, through real discord.py and the
fake Discord, with the real host and store.

An approver's press approves the request and the tool for the rest of the run (the
log records who); anyone else's is refused privately and changes nothing; the button
goes with the others when the request is settled another way or expires.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.adapters.test_discord import Bot, buttons
from tests.adapters.test_discord_wire import key_for, wired
from tests.bot.helpers import TWICE
from tests.fakes.discord import (
    ALICE,
    CHANNEL_ID,
    MALLORY,
    OTHER_CHANNEL_ID,
    FakeDiscord,
    wait_until,
)
from threadteam.bot.shapes import ApprovalPrompt, Outbound
from threadteam.teams.models.scripted import ScriptedModel, reply
from threadteam.teams.persona import Persona

__all__ = ["wired"]  # the fixture, shared with test_discord_wire


def _post(text: str) -> object:
    return reply("", ("post_message", json.dumps({"channel": "#random", "text": text})))


@pytest.fixture
async def bot(fake_discord: FakeDiscord, tmp_path: Path):
    b = Bot(fake_discord, tmp_path)
    yield b
    await b.stop()


async def _pending(bot: Bot, *steps: object, extra: str = "") -> tuple[dict, dict]:
    await bot.start(TWICE.format(extra=extra), model=ScriptedModel(list(steps)))
    thread = await bot.summon("twice", "ship both releases")
    await bot.until_said(thread, "Approval #1")
    request = next(m for m in bot.fake.posts_in(thread["id"]) if "Approval #1" in m["content"])
    return thread, request


def _labels(message: dict) -> list[str]:
    return [b["label"] for b in buttons(message)] if message["components"] else []


async def _log(bot: Bot, thread: dict) -> list[dict]:
    assert bot.host is not None
    store = bot.host.store
    run_id = await store.run_for_thread(str(key_for(thread["id"])))
    assert run_id, "no run in that thread"
    return [json.loads(e) for e in await store.load(run_id)]


async def test_approve_for_this_run_settles_the_request_and_covers_the_next_call(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    thread, request = await _pending(bot, _post("Release one is out."),
                                     _post("Release two is out."), "Posted both. DONE")
    assert _labels(request) == ["Approve", "Approve for this run", "Deny"]
    always = buttons(request)[1]["custom_id"]

    pressed = await fake_discord.click(ALICE, request["id"], always)
    await bot.until_said(thread, "Finished")
    assert fake_discord.responses(pressed) == [{"type": 6}]
    settled = fake_discord.messages[int(request["id"])]
    assert settled["content"].startswith(
        f"✅ Approved by <@{ALICE}>: approved for the rest of the run")
    assert not settled["components"]
    # Both posts went out; the second call asked nobody.
    assert [m["content"] for m in fake_discord.posts_in(OTHER_CHANNEL_ID)] == [
        "Release one is out.", "Release two is out."]
    assert len([m for m in fake_discord.posts_in(thread["id"]) if m["components"]
                or "Approval #" in m["content"]]) == 1
    assert [(e["tool"], e["by"]) for e in await _log(bot, thread)
            if e["kind"] == "tool_always_approved"] == [("post_message", str(ALICE))]


async def test_a_non_approver_pressing_it_is_refused_privately_and_nothing_changes(
        bot: Bot, fake_discord: FakeDiscord) -> None:
    thread, request = await _pending(bot, _post("Release one is out."))
    asked = len(bot.model.requests)
    refused = await fake_discord.click(MALLORY, request["id"], buttons(request)[1]["custom_id"])
    [answer] = await wait_until(lambda: fake_discord.responses(refused), what="the refusal")
    assert answer["type"] == 4 and answer["data"]["flags"] & 64  # only Mallory sees it
    assert answer["data"]["content"].startswith(f"Sorry, only <@{ALICE}> can approve")
    assert bot.host is not None
    await bot.host.idle()
    assert _labels(fake_discord.messages[int(request["id"])]) == [
        "Approve", "Approve for this run", "Deny"]
    assert fake_discord.messages[int(request["id"])]["content"] == request["content"]
    assert not fake_discord.posts_in(OTHER_CHANNEL_ID) and len(bot.model.requests) == asked
    assert not [e for e in await _log(bot, thread)
                if e["kind"] in ("tool_always_approved", "approval_decided")]


async def test_the_button_goes_when_the_request_is_denied(bot: Bot, fake_discord: FakeDiscord
                                                          ) -> None:
    thread, request = await _pending(bot, _post("Release one is out."), "Not posted. DONE")
    await fake_discord.say(ALICE, thread["id"], "deny 1 not yet")
    await bot.until_said(thread, "Finished")
    settled = fake_discord.messages[int(request["id"])]
    assert settled["content"].startswith(f"❌ Denied by <@{ALICE}>: not yet")
    assert not settled["components"]


async def test_the_button_goes_when_the_request_expires(bot: Bot, fake_discord: FakeDiscord
                                                        ) -> None:
    await bot.start(TWICE.format(extra="approval: {expires_after: 1s}"),
                    model=ScriptedModel([_post("Release one is out."), "Nobody answered. DONE"]))
    thread = await bot.summon("twice", "ship both releases")
    await bot.until_said(thread, "Finished")
    [created] = [c for c in fake_discord.calls if c.body and isinstance(c.body, dict)
                 and c.body.get("components") and c.method == "POST"]
    assert [b["label"] for row in created.body["components"] for b in row["components"]] == [
        "Approve", "Approve for this run", "Deny"]
    expired = next(m for m in fake_discord.posts_in(thread["id"])
                   if "wanted to run" in m["content"])
    assert expired["content"].startswith("⌛ Expired") and not expired["components"]
    assert not fake_discord.posts_in(OTHER_CHANNEL_ID)


async def test_under_a_quorum_only_approve_and_deny_are_offered(bot: Bot) -> None:
    _, request = await _pending(bot, _post("Release one is out."),
                                extra=f'approvers: ["{ALICE}", "{MALLORY}"]\n'
                                      "approval: {quorum: 2}")
    assert _labels(request) == ["Approve", "Deny"]


async def test_a_call_id_too_long_for_its_custom_id_still_reaches_the_host(
        fake_discord: FakeDiscord, wired) -> None:
    adapter, host = wired
    call_id = "call_" + "x" * 80  # fits beside "approve", not beside "approve_always"
    prompt = ApprovalPrompt(call_id, "post_message", {})
    mid = await adapter.poster.post(Outbound(key_for(CHANNEL_ID), "ok?", "k", Persona("Bear"),
                                             approval=prompt))
    ids = [b["custom_id"] for b in buttons(fake_discord.messages[int(mid)])]
    assert ids[0] == f"tt:approve:{call_id}" and all(len(i) <= 100 for i in ids)
    await fake_discord.click(ALICE, mid, ids[1])
    await wait_until(lambda: host.seen, what="the press")
    assert (host.seen[-1].action, host.seen[-1].call_id) == ("approve_always", call_id)
