"""Malformed payloads from Discord are logged and skipped: nothing reaches a run, no
traceback, and the bot keeps hearing what comes next.

Real discord.py against the fake Discord, which here sends what Discord never
should: a text that is a number or a list, a message without an author, an
author that is null (which discord.py's own parser cannot read).
"""

from __future__ import annotations

import logging

import pytest

from tests.adapters.test_discord_wire import RecordingHost, started
from tests.fakes.discord import ALICE, CHANNEL_ID, FakeDiscord, wait_until


@pytest.mark.parametrize("shape", ["number", "list", "no author", "null author"])
async def test_a_malformed_message_is_skipped_and_the_next_one_still_arrives(
        fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture, shape: str) -> None:
    host = RecordingHost()
    adapter = await started(fake_discord, host)
    try:
        await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate", task="tabs or spaces")
        [thread] = await wait_until(fake_discord.threads)
        await wait_until(lambda: host.seen, what="the summon")
        good = fake_discord._message(thread["id"], fake_discord.users[ALICE], "tabs")
        del fake_discord.messages[int(good["id"])]  # garbled on the way: only the gateway has it
        bad = {"number": {**good, "content": 42}, "list": {**good, "content": ["tabs"]},
               "no author": {k: v for k, v in good.items() if k != "author"},
               "null author": {**good, "author": None}}[shape]
        caplog.set_level(logging.INFO)
        await fake_discord.dispatch("MESSAGE_CREATE", bad)
        await fake_discord.say(ALICE, thread["id"], "spaces")
        await wait_until(lambda: any(e.text == "spaces" for e in host.seen),
                         what="the next message")
        # Even where discord.py's own parser fails ("null author"), on the same connection.
        assert len(fake_discord.identifies) == 1
    finally:
        await adapter.aclose()
    assert [e.text for e in host.seen] == ["debate tabs or spaces", "spaces"]
    assert "Traceback" not in caplog.text
    assert "skipped message" in caplog.text or "could not read" in caplog.text


async def test_a_team_command_whose_options_are_not_text_gets_the_usage(
        fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    host = RecordingHost()
    adapter = await started(fake_discord, host)
    try:
        token = await fake_discord.slash(ALICE, CHANNEL_ID, "team", team=7, task=["x"])  # type: ignore[arg-type]
        [answer] = await wait_until(lambda: fake_discord.responses(token), what="an answer")
    finally:
        await adapter.aclose()
    assert answer["data"]["flags"] & 64 and "Unknown team" in answer["data"]["content"]
    assert not host.seen and not fake_discord.threads()
    assert "Traceback" not in caplog.text
