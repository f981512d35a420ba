"""Nothing is posted twice on Discord: lost answers, retries and re-posts after a crash.

Real discord.py against the fake Discord, which keeps Discord's documented
rules: an enforced nonce returns the author's earlier message, webhooks take
no nonce, and an injected failure can let a post be stored before the
connection drops.
"""

from __future__ import annotations

from tests.adapters.test_discord_wire import BEAR, BULL, RecordingHost, key_for, seen, started
from tests.fakes.discord import CHANNEL_ID, FakeDiscord
from threadteam.adapters.discord import DiscordAdapter
from threadteam.bot.memory import StoreMemory
from threadteam.bot.shapes import Outbound
from threadteam.bot.stores import SQLiteStore

WEBHOOK_POST = r"/webhooks/\d+/[^/]+"
BOT_POST = rf"/channels/{CHANNEL_ID}/messages"


async def test_a_webhook_post_whose_answer_is_lost_is_posted_once(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    key = key_for(CHANNEL_ID)
    # The same words earlier in the thread are an earlier post, not this one.
    await adapter.poster.post(Outbound(key, "Margins are thin.", "k0", BEAR))
    fake_discord.fail("POST", WEBHOOK_POST, status=0, stored=True)  # stored, then the line drops
    mid = await adapter.poster.post(Outbound(key, "Margins are thin.", "k1", BEAR))
    assert seen(fake_discord) == [("🐻 Bear", "Margins are thin.")] * 2
    assert mid == fake_discord.posts_in(CHANNEL_ID)[1]["id"]
    assert len(fake_discord.calls_to("POST", WEBHOOK_POST)) == 2  # the lost one was not sent again
    assert fake_discord.calls_to("GET", rf"/channels/{CHANNEL_ID}/messages")  # it looked


async def test_a_webhook_post_dropped_before_discord_took_it_is_posted(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    key = key_for(CHANNEL_ID)
    await adapter.poster.post(Outbound(key, "warm-up", "k0", BEAR))
    fake_discord.fail("POST", WEBHOOK_POST, status=0)  # dropped, nothing stored
    mid = await adapter.poster.post(Outbound(key, "Growth is strong.", "k1", BULL))
    assert seen(fake_discord) == [("🐻 Bear", "warm-up"), ("Bull", "Growth is strong.")]
    assert mid == fake_discord.posts_in(CHANNEL_ID)[1]["id"]


async def test_an_unsure_post_already_in_the_thread_is_adopted(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    key = key_for(CHANNEL_ID)
    first = await adapter.poster.post(Outbound(key, "Margins are thin.", "k1", BEAR))
    await fake_discord.say(1_000_000_000_000_000_100, CHANNEL_ID, "interesting")
    # A crashed process posted it but never recorded the id; its successor is unsure.
    again = await adapter.poster.post(Outbound(key, "Margins are thin.", "k1", BEAR, unsure=True))
    assert again == first
    # The same words from another persona are not this post.
    await adapter.poster.post(Outbound(key, "Margins are thin.", "k2", BULL, unsure=True))
    assert [who for who, _ in seen(fake_discord)] == ["🐻 Bear", "alice", "Bull"]


async def test_an_unsure_long_post_cut_short_by_a_crash_gets_only_its_missing_parts(
        fake_discord: FakeDiscord, adapter: DiscordAdapter, sqlite_store: SQLiteStore) -> None:
    key = key_for(CHANNEL_ID)
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(6))
    first = await adapter.poster.post(Outbound(key, text, "k1", BEAR))
    parts = fake_discord.posts_in(CHANNEL_ID)
    assert len(parts) >= 3
    del fake_discord.messages[int(parts[-1]["id"])]  # the crash came before the last part
    await adapter.aclose()
    successor = await started(fake_discord, RecordingHost(), StoreMemory(sqlite_store, "discord"))
    try:
        again = await successor.poster.post(Outbound(key, text, "k1", BEAR, unsure=True))
    finally:
        await successor.aclose()
    now = fake_discord.posts_in(CHANNEL_ID)
    assert again == first and len(now) == len(parts)
    assert [p["content"] for p in now] == [p["content"] for p in parts]
    assert " ".join(p["content"] for p in now).split() == text.split()


async def test_the_bots_own_post_carries_a_stable_nonce_and_a_lost_answer_posts_once(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    key = key_for(CHANNEL_ID)
    fake_discord.fail("POST", BOT_POST, status=0, stored=True)
    mid = await adapter.poster.post(Outbound(key, "Finished: done.", "run1:7"))
    assert seen(fake_discord) == [("threadteam", "Finished: done.")]
    assert mid == fake_discord.posts_in(CHANNEL_ID)[0]["id"]
    tries = fake_discord.calls_to("POST", BOT_POST)
    assert len(tries) == 2
    nonces = {c.body["nonce"] for c in tries}
    assert len(nonces) == 1 and len(nonces.pop()) <= 25
    assert all(c.body["enforce_nonce"] is True for c in tries)


async def test_an_unsure_bot_post_is_found_after_discord_forgot_its_nonce(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    key = key_for(CHANNEL_ID)
    first = await adapter.poster.post(Outbound(key, "Your turn, <@1>.", "run1:3"))
    fake_discord.nonce_window = 0.0  # the successor started long after the crash
    again = await adapter.poster.post(Outbound(key, "Your turn, <@1>.", "run1:3", unsure=True))
    assert again == first and len(fake_discord.posts_in(CHANNEL_ID)) == 1


async def test_without_webhooks_an_agents_unsure_post_is_found_as_the_bots(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    fake_discord.manage_webhooks = False
    key = key_for(CHANNEL_ID)
    first = await adapter.poster.post(Outbound(key, "Cats.", "k1", BULL))
    fake_discord.nonce_window = 0.0
    again = await adapter.poster.post(Outbound(key, "Cats.", "k1", BULL, unsure=True))
    assert again == first
    assert [t for _, t in seen(fake_discord)][1:] == ["**Bull**: Cats."]
