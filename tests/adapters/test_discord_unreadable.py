"""A gateway payload discord.py's own parser cannot read is logged and skipped, on one
connection and with shards alike: the client stays up and the bot keeps hearing.

Real discord.py against the fake Discord, which sends a MESSAGE_CREATE that Discord
never should. The sharded client runs one shard here (the code path is the same as
for many; further shards only add discord.py's 5 s between IDENTIFYs).
"""

from __future__ import annotations

import logging

import pytest

from tests.adapters.test_discord_wire import QUICK, RecordingHost
from tests.fakes.discord import ALICE, CHANNEL_ID, FakeDiscord, wait_until
from threadteam.adapters.discord import DiscordAdapter


@pytest.mark.parametrize("shards", [None, 1], ids=["one connection", "sharded"])
@pytest.mark.parametrize("shape", ["null author", "id not a number"])
async def test_an_unreadable_payload_is_skipped_and_the_bot_keeps_hearing(
        fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture, shards: int | None,
        shape: str) -> None:
    host = RecordingHost()
    adapter = DiscordAdapter(fake_discord.token, api_base=fake_discord.url, shards=shards,
                             retry=QUICK)
    await adapter.start(host, within=10)
    try:
        await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate", task="tabs or spaces")
        [thread] = await wait_until(fake_discord.threads)
        await wait_until(lambda: host.seen, what="the summon")
        good = fake_discord._message(thread["id"], fake_discord.users[ALICE], "tabs")
        del fake_discord.messages[int(good["id"])]  # garbled on the way: only the gateway has it
        bad = {"null author": {**good, "author": None},
               "id not a number": {**good, "id": "not-a-snowflake"}}[shape]
        caplog.set_level(logging.INFO)
        await fake_discord.dispatch("MESSAGE_CREATE", bad)
        await fake_discord.say(ALICE, thread["id"], "spaces")
        await wait_until(lambda: any(e.text == "spaces" for e in host.seen),
                         what="the next message")
        assert not adapter.client.is_closed()
        assert adapter._task is not None and not adapter._task.done()
    finally:
        await adapter.aclose()
    assert [e.text for e in host.seen] == ["debate tabs or spaces", "spaces"]
    assert "Traceback" not in caplog.text
    assert "could not read a MESSAGE_CREATE" in caplog.text
