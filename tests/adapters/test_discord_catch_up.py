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
from threadteam.bot.errors import StoreError
from threadteam.bot.memory import StoreMemory
from threadteam.bot.retry import RetryPolicy
from threadteam.bot.stores import SQLiteStore
from threadteam.teams.events import HumanMessage, from_json
from threadteam.teams.models.scripted import ScriptedModel


def replies(host: RecordingHost) -> list[str]:
    return [e.text for e in host.seen if e.kind == "reply"]


def _in_order(host: RecordingHost, written: list[dict]) -> None:
    """Alice's "tabs" and Bob's "spaces, surely" (`written`) reached the run in order,
    between the replies live before and after them."""
    assert replies(host) == ["before the outage", "tabs", "spaces, surely", "after the outage"]
    caught = [e for e in host.seen if e.text in ("tabs", "spaces, surely")]
    # The same event ids as the live path gives, so the host can tell a message seen twice.
    assert [e.event_id for e in caught] == [f"discord:msg:{m['id']}" for m in written]
    assert [e.user for e in caught] == [str(ALICE), str(BOB)]


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
    _in_order(host, written)
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


async def _summoned(fake: FakeDiscord, host: RecordingHost, store: SQLiteStore):
    """The adapter (retrying threads left behind quickly) and the thread of a run summoned."""
    adapter = await started(fake, host, StoreMemory(store, "discord"))
    adapter.catch_up.behind_retry = RetryPolicy(first_backoff=0.05, max_backoff=0.1)
    await fake.slash(ALICE, CHANNEL_ID, "team", team="debate", task="tabs or spaces")
    [thread] = await wait_until(fake.threads)
    await wait_until(lambda: host.seen, what="the summon")
    return adapter, thread


class _StoreFailsFor(RecordingHost):
    """The recording host whose store fails the next `failing` replies it is handed."""

    failing: int = 0

    async def handle(self, event):
        if event.kind == "reply" and self.failing:
            self.failing -= 1
            raise StoreError("Could not reach Redis at 10.0.0.5:6379: Connection refused.")
        return await super().handle(event)


async def test_a_reply_the_store_failed_to_take_reaches_the_run_before_the_ones_after_it(
        fake_discord: FakeDiscord, sqlite_store: SQLiteStore) -> None:
    """Without waiting for a reconnect, and in the order written: the thread is read again
    from the last message the host took, and the person hears once why it waits."""
    host = _StoreFailsFor()
    adapter, thread = await _summoned(fake_discord, host, sqlite_store)
    try:
        await fake_discord.say(ALICE, thread["id"], "before the outage")
        await wait_until(lambda: replies(host), what="the live reply")
        host.failing = 2  # this reply, and the first time the thread is read again
        written = [await fake_discord.say(ALICE, thread["id"], "tabs")]
        await wait_until(lambda: len(fake_discord.posts_in(thread["id"])) >= 3,
                         what="the word about the store")
        written.append(await fake_discord.say(BOB, thread["id"], "spaces, surely"))
        await wait_until(lambda: len(replies(host)) >= 3, what="both replies, once it works")
        await fake_discord.say(ALICE, thread["id"], "after the outage")
        await wait_until(lambda: "after the outage" in replies(host), what="the next live reply")
    finally:
        await adapter.aclose()
    _in_order(host, written)
    said = [m["content"] for m in fake_discord.posts_in(thread["id"])
            if m["content"].startswith("I could not take that")]
    assert said == ["I could not take that just now: the bot's storage is failing. Nothing "
                    "is lost: your message, and what follows it here, reach the team once it "
                    "works again."]
    assert len(fake_discord.identifies) == 1  # no reconnect was needed


class _StatusFails(RecordingHost):
    """The recording host whose store cannot say, for a while, which threads have runs."""

    unreadable: int = 0

    async def thread_status(self, key):
        if self.unreadable:
            self.unreadable -= 1
            raise StoreError("Could not reach Redis at 10.0.0.5:6379: Connection refused.")
        return await super().thread_status(key)


async def test_a_message_in_a_thread_the_store_cannot_place_is_read_later_without_a_word(
        fake_discord: FakeDiscord, sqlite_store: SQLiteStore) -> None:
    """The bot cannot tell whether the thread is a run's, and nobody called it: it says
    nothing there (it may be anyone's thread), and reads the message once the store can."""
    host = _StatusFails()
    adapter, thread = await _summoned(fake_discord, host, sqlite_store)
    try:
        host.unreadable = 1
        await fake_discord.say(BOB, thread["id"], "psst")
        await wait_until(lambda: replies(host), what="the message, once the store can say")
    finally:
        await adapter.aclose()
    assert replies(host) == ["psst"]
    assert [m["content"] for m in fake_discord.posts_in(thread["id"])] == ["psst"]


class _SummonFails(RecordingHost):
    async def handle(self, event):
        if event.kind == "summon":
            raise StoreError("Could not reach Redis at 10.0.0.5:6379: Connection refused.")
        return await super().handle(event)


async def test_a_team_the_store_fails_to_start_is_said_to_whoever_asked(
        fake_discord: FakeDiscord, sqlite_store: SQLiteStore) -> None:
    host = _SummonFails()
    adapter = await started(fake_discord, host, StoreMemory(sqlite_store, "discord"))
    try:
        asked = await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate", task="tabs")
        followups = lambda: [r for r in fake_discord.responses(asked) if r.get("followup")]  # noqa: E731
        [answer] = await wait_until(followups, what="the word to whoever asked")
    finally:
        await adapter.aclose()
    assert answer["content"] == ("I could not start that team just now: the bot's storage is "
                                 "failing. Please try `/team` again in a minute.")
    assert answer["flags"] & 64  # only they see it
