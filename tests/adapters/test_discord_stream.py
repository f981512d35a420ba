"""A reply visible while it is written on Discord: one webhook message under the persona,
posted at the first words and edited as the text grows; 429s delay edits and lose
nothing; the reply lands in that message once and whole, even after a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.adapters.test_discord_wire import BEAR, BULL, RecordingHost, key_for, seen, started
from tests.fakes.discord import ALICE, CHANNEL_ID, FakeDiscord, wait_until
from threadteam.adapters.discord import DiscordAdapter
from threadteam.bot.host import Host
from threadteam.bot.memory import StoreMemory
from threadteam.bot.shapes import Outbound
from threadteam.bot.stores import SQLiteStore
from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.models import ModelPool

WEBHOOK_POST = r"/webhooks/\d+/[^/]+"
WEBHOOK_EDIT = r"/webhooks/\d+/[^/]+/messages/\d+"
WORDS = [f"word{i} " for i in range(25)]  # 2.5 s of writing
REPLY = "".join(WORDS).strip()
KEY = key_for(CHANNEL_ID)


async def write(sink: Callable[[str], Awaitable[None]] | None, words: list[str],
                until: Callable[[], object]) -> int:
    """Feed `words` to `sink` 100 ms apart; how many were written when `until()` first held."""
    assert sink is not None
    shown_after = 0
    for i, w in enumerate(words):
        await sink(w)
        if not shown_after and until():
            shown_after = i + 1
        await asyncio.sleep(0.1)
    return shown_after or len(words)


async def test_the_reply_shows_as_it_is_written_and_lands_in_that_message(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    written = await write(adapter.poster.stream(KEY, BEAR), WORDS,
                          lambda: fake_discord.calls_to("POST", WEBHOOK_POST, status=200))
    assert written < len(WORDS)  # people saw it before the model finished
    [opened] = fake_discord.calls_to("POST", WEBHOOK_POST)
    assert opened.body["username"] == "🐻 Bear" and opened.body["content"].startswith("word0")
    edits = [c.body["content"] for c in fake_discord.calls_to("PATCH", WEBHOOK_EDIT)]
    assert edits and all(e.endswith(" …") for e in edits)
    assert [len(e) for e in edits] == sorted(len(e) for e in edits)  # it grows
    mid = await adapter.poster.post(Outbound(KEY, REPLY, "k1", BEAR, meta={"agent": "bear"}))
    assert seen(fake_discord) == [("🐻 Bear", REPLY)]  # one message, whole
    assert mid == fake_discord.posts_in(CHANNEL_ID)[0]["id"]
    assert len(fake_discord.calls_to("POST", WEBHOOK_POST)) == 1


async def test_a_429_delays_an_edit_and_loses_nothing(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    sink = adapter.poster.stream(KEY, BEAR)
    await write(sink, WORDS[:4], lambda: False)
    await wait_until(lambda: fake_discord.calls_to("POST", WEBHOOK_POST, status=200),
                     what="the message to open")
    fake_discord.fail("PATCH", WEBHOOK_EDIT, status=429, times=3, retry_after=0.3)
    await write(sink, WORDS[4:], lambda: False)
    mid = await adapter.poster.post(Outbound(KEY, REPLY, "k1", BEAR, meta={"agent": "bear"}))
    limited = fake_discord.calls_to("PATCH", WEBHOOK_EDIT, status=429)
    assert len(limited) == 3  # Discord said "slow down" three times ...
    final = fake_discord.calls_to("PATCH", WEBHOOK_EDIT)[-1]
    assert final.status == 200 and final.body["content"] == REPLY  # ... and the reply is whole
    assert seen(fake_discord) == [("🐻 Bear", REPLY)]
    assert mid == fake_discord.posts_in(CHANNEL_ID)[0]["id"]


async def test_a_reply_written_at_once_is_simply_posted(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    sink = adapter.poster.stream(KEY, BEAR)
    assert sink is not None
    await sink(REPLY)
    await adapter.poster.post(Outbound(KEY, REPLY, "k1", BEAR, meta={"agent": "bear"}))
    assert seen(fake_discord) == [("🐻 Bear", REPLY)]
    assert fake_discord.calls_to("PATCH", WEBHOOK_EDIT) == []


async def test_another_speakers_post_takes_the_message_down(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    # Bear wrote a little, then called a tool: no post of its own; Bull speaks next.
    await write(adapter.poster.stream(KEY, BEAR), WORDS[:8],
                lambda: fake_discord.calls_to("POST", WEBHOOK_POST, status=200))
    await adapter.poster.post(Outbound(KEY, "Growth is strong.", "k2", BULL))
    assert seen(fake_discord) == [("Bull", "Growth is strong.")]
    assert [m["author"]["username"] for m in fake_discord.deleted] == ["🐻 Bear"]


async def test_a_turn_without_a_post_hands_its_message_to_the_next(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    # Bear writes a little, then only calls a tool; Bear's next turn writes the reply.
    await write(adapter.poster.stream(KEY, BEAR), WORDS[:8],
                lambda: fake_discord.calls_to("POST", WEBHOOK_POST, status=200))
    await write(adapter.poster.stream(KEY, BEAR), WORDS, lambda: False)
    mid = await adapter.poster.post(Outbound(KEY, REPLY, "k1", BEAR, meta={"agent": "bear"}))
    assert seen(fake_discord) == [("🐻 Bear", REPLY)] and fake_discord.deleted == []
    assert mid == fake_discord.posts_in(CHANNEL_ID)[0]["id"]
    assert len(fake_discord.calls_to("POST", WEBHOOK_POST)) == 1


async def test_a_notice_after_a_failed_turn_takes_the_half_reply_down(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    # Bear's model fails half-way through; the host says so in the thread, as the bot.
    await write(adapter.poster.stream(KEY, BEAR), WORDS[:8],
                lambda: fake_discord.calls_to("POST", WEBHOOK_POST, status=200))
    await adapter.poster.post(Outbound(KEY, "Bear's model failed; `retry` to try again.",
                                       "k2", notice=True))
    assert seen(fake_discord) == [("threadteam", "Bear's model failed; `retry` to try again.")]
    assert [m["author"]["username"] for m in fake_discord.deleted] == ["🐻 Bear"]


async def test_a_crash_mid_reply_leaves_one_whole_reply(
        fake_discord: FakeDiscord, adapter: DiscordAdapter, sqlite_store: SQLiteStore) -> None:
    await write(adapter.poster.stream(KEY, BEAR), WORDS[:8], lambda: False)
    await wait_until(lambda: fake_discord.calls_to("POST", WEBHOOK_POST, status=200),
                     what="the message to open")
    await adapter.aclose()  # the process stops with the reply half written
    successor = await started(fake_discord, RecordingHost(), StoreMemory(sqlite_store, "discord"))
    try:  # the resumed run asks Bear again, and this time Bear answers whole
        mid = await successor.poster.post(Outbound(KEY, REPLY, "k1", BEAR, unsure=True,
                                                   meta={"agent": "bear"}))
        await successor.poster.post(Outbound(KEY, "Growth is strong.", "k2", BULL))
    finally:
        await successor.aclose()
    assert seen(fake_discord) == [("🐻 Bear", REPLY), ("Bull", "Growth is strong.")]
    assert mid == fake_discord.posts_in(CHANNEL_ID)[0]["id"]


async def test_a_message_whose_answer_was_lost_is_found_not_posted_again(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    await adapter.poster.post(Outbound(KEY, "warm-up", "k0", BEAR))  # the webhook exists
    fake_discord.fail("POST", WEBHOOK_POST, status=0, stored=True)  # stored, then the line drops
    await write(adapter.poster.stream(KEY, BEAR), WORDS, lambda: False)
    await adapter.poster.post(Outbound(KEY, REPLY, "k1", BEAR, meta={"agent": "bear"}))
    assert seen(fake_discord) == [("🐻 Bear", "warm-up"), ("🐻 Bear", REPLY)]
    assert len(fake_discord.calls_to("POST", WEBHOOK_POST)) == 2  # warm-up, and the lost one


SOLO = """\
name: solo
description: One analyst answers.
model: openai:gpt-4o-mini
agents:
  - {name: analyst, persona: {display_name: Analyst, avatar: ":mag:"}, system_message: Answer.}
termination: {text_mention: DONE}
"""


async def test_a_run_shows_its_agents_reply_while_the_model_writes(
        fake_discord: FakeDiscord, fake_openai, tmp_path) -> None:
    answer = "Plan A costs less, Plan B scales better, and both ship this quarter. DONE"
    fake_openai.queue_text(answer, chunks=8)
    fake_openai.chunk_delay = 0.3  # about two and a half seconds of writing
    (tmp_path / "teams").mkdir()
    (tmp_path / "teams" / "solo.yaml").write_text(SOLO)
    store = SQLiteStore(str(tmp_path / "runs.sqlite3"))
    await store.start()
    adapter = DiscordAdapter(fake_discord.token, api_base=fake_discord.url,
                             memory=StoreMemory(store, "discord"))
    host = Host(store=store, catalog=TeamCatalog.load(tmp_path / "teams", strict=True),
                models=ModelPool(env={"OPENAI_API_KEY": "sk-test",
                                      "OPENAI_BASE_URL": fake_openai.url}),
                poster=adapter.poster, directory=adapter.directory)
    await host.start()
    try:
        await adapter.start(host, within=10)
        await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="solo", task="Which plan?")
        [thread] = await wait_until(fake_discord.threads, what="the run's thread")
        await wait_until(lambda: any("Finished" in m["content"]
                                     for m in fake_discord.posts_in(thread["id"])),
                         within=15, what="the run to finish")
        await host.idle()
    finally:
        await adapter.aclose()
        await host.aclose()
        await store.aclose()
        await host.models.aclose()
    [opened] = fake_discord.calls_to("POST", WEBHOOK_POST)  # the reply's one message ...
    assert opened.body["username"] == "🔍 Analyst" and opened.body["content"].endswith(" …")
    assert len(opened.body["content"]) < len(answer)  # ... opened before it was written
    analyst = [m for m in fake_discord.posts_in(thread["id"]) if m.get("webhook_id")]
    assert [(m["author"]["username"], m["content"]) for m in analyst] == [("🔍 Analyst", answer)]
