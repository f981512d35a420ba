"""What people write while the bot is down or disconnected still reaches their runs.

Discord never re-delivers a message the gateway missed; the adapter reads each
open run's thread after every (re)connect. Real discord.py against the fake
Discord (whose gateway can be taken away), with the recording host and, end to
end, the real host.
"""

from __future__ import annotations

from pathlib import Path

from tests.adapters.test_discord import INTERVIEW, Bot
from tests.adapters.test_discord_wire import RecordingHost, started
from tests.fakes.discord import ALICE, BOB, CHANNEL_ID, FakeDiscord, wait_until
from threadteam.bot.memory import StoreMemory
from threadteam.bot.stores import SQLiteStore
from threadteam.teams.events import HumanMessage, from_json
from threadteam.teams.models.scripted import ScriptedModel


def replies(host: RecordingHost) -> list[str]:
    return [e.text for e in host.seen if e.kind == "reply"]


async def test_replies_written_during_a_disconnect_reach_the_run_in_order(
        fake_discord: FakeDiscord, sqlite_store: SQLiteStore) -> None:
    host = RecordingHost()
    adapter = await started(fake_discord, host, StoreMemory(sqlite_store, "discord"))
    try:
        await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate", task="tabs or spaces")
        [thread] = await wait_until(fake_discord.threads)
        await wait_until(lambda: host.seen, what="the summon")
        await fake_discord.say(ALICE, thread["id"], "before the outage")
        await wait_until(lambda: replies(host), what="the live reply")
        await fake_discord.drop_gateway()
        written = [await fake_discord.say(who, thread["id"], text, deliver=False)
                   for who, text in ((ALICE, "tabs"), (BOB, "spaces, surely"))]
        fake_discord.reopen_gateway()
        # The session cannot be resumed, so discord.py identifies anew, which it spaces
        # 5 s apart (Discord's identify limit): the only wait in this test.
        await wait_until(lambda: len(replies(host)) >= 3, within=15,
                         what="the two missed replies")
        await fake_discord.replay(written[0])  # the same message, live after all
        await fake_discord.say(ALICE, thread["id"], "after the outage")
        await wait_until(lambda: "after the outage" in replies(host), what="the next live reply")
    finally:
        await adapter.aclose()
    assert replies(host) == ["before the outage", "tabs", "spaces, surely", "after the outage"]
    caught = [e for e in host.seen if e.text in ("tabs", "spaces, surely")]
    # The same event ids as the live path gives, so the host can tell a message seen twice.
    assert [e.event_id for e in caught] == [f"discord:msg:{m['id']}" for m in written]
    assert [e.user for e in caught] == [str(ALICE), str(BOB)]
    assert len(fake_discord.identifies) == 2


async def test_after_a_restart_only_what_was_not_yet_handed_over_is_read(
        fake_discord: FakeDiscord, sqlite_store: SQLiteStore) -> None:
    host = RecordingHost()
    adapter = await started(fake_discord, host, StoreMemory(sqlite_store, "discord"))
    await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate", task="tea or coffee")
    [thread] = await wait_until(fake_discord.threads)
    await wait_until(lambda: host.seen, what="the summon")
    await fake_discord.say(ALICE, thread["id"], "tea")
    await wait_until(lambda: replies(host), what="the live reply")
    await adapter.aclose()
    await fake_discord.say(ALICE, thread["id"], "no, coffee", deliver=False)
    adapter = await started(fake_discord, host, StoreMemory(sqlite_store, "discord"))
    try:
        await wait_until(lambda: len(replies(host)) >= 2, what="the reply sent while down")
        await adapter.catch_up.done()
    finally:
        await adapter.aclose()
    assert replies(host) == ["tea", "no, coffee"]  # "tea" was not handed over again
    [read] = fake_discord.calls_to("GET", rf"/channels/{thread['id']}/messages")
    assert int(read.query["after"]) > int(thread["id"])  # from the last message seen


async def test_replies_written_while_the_bot_was_down_reach_the_run_and_are_answered(
        fake_discord: FakeDiscord, tmp_path: Path) -> None:
    bot = Bot(fake_discord, tmp_path)
    try:
        await bot.start(INTERVIEW, model=ScriptedModel(
            ["What is your budget?", "Within 10k, outside August. DONE"]))
        thread = await bot.summon("interview", "plan our offsite")
        await bot.until_said(thread, "waiting for you")
        await bot.stop()
        for text in ("About 10k.", "And not in August."):
            await fake_discord.say(ALICE, thread["id"], text, deliver=False)
        await bot.start()
        await bot.until_said(thread, "Finished")
        assert bot.agents_said(thread)[-1] == ("Closer", "Within 10k, outside August. DONE")
        assert "About 10k." in [m.content for m in bot.model.requests[1].messages]
        run_id = await bot.host.store.run_for_thread(
            f"discord:{fake_discord.channels[CHANNEL_ID]['guild_id']}:{CHANNEL_ID}:{thread['id']}")
        assert run_id is not None
        logged = [from_json(e) for e in await bot.host.store.load(run_id)]
        assert [e.text for e in logged if isinstance(e, HumanMessage)] == [
            "About 10k.", "And not in August."]
    finally:
        await bot.stop()
