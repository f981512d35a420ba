"""What the Discord adapter tells the host about people: where they may post, which roles
they hold. Real discord.py against the fake, whose server has a moderators-only channel,
a read-only one, and a second server the bot is also in."""

from __future__ import annotations

import pytest

from tests.adapters.test_discord_wire import BEAR, RecordingHost, key_for, started
from tests.fakes.discord import (
    ALICE,
    BOB,
    CAROL,
    DM_CHANNEL_ID,
    FOREIGN_CHANNEL_ID,
    GUILD_ID,
    MALLORY,
    MODERATORS_ROLE_ID,
    OTHER_CHANNEL_ID,
    PRIVATE_CHANNEL_ID,
    READONLY_CHANNEL_ID,
    FakeDiscord,
    wait_until,
)
from threadteam.adapters.discord import DiscordAdapter
from threadteam.bot.errors import Refused
from threadteam.bot.shapes import Outbound, ThreadKey

KEY = key_for(1_000_000_000_000_000_500)  # a run's thread in #general


@pytest.fixture
async def adapter(fake_discord: FakeDiscord):
    started_adapter = await started(fake_discord, RecordingHost())
    yield started_adapter
    await started_adapter.aclose()


@pytest.mark.parametrize("channel", ["#random", "random", f"<#{OTHER_CHANNEL_ID}>",
                                     str(OTHER_CHANNEL_ID), " #Random "])
async def test_a_channel_of_the_run_s_server_is_reached_by_name_or_id(
        adapter: DiscordAdapter, channel: str) -> None:
    # The other server has a #random too: a name is looked up in the run's server only.
    assert await adapter.directory.reach(KEY, str(BOB), channel) == str(OTHER_CHANNEL_ID)


@pytest.mark.parametrize("channel, says", [
    (f"<#{FOREIGN_CHANNEL_ID}>", "not in this server"),
    (str(FOREIGN_CHANNEL_ID), "not in this server"),
    (str(DM_CHANNEL_ID), "not in this server"),
    (f"<@{ALICE}>", "never to a person or a role"),
    (f"<@!{ALICE}>", "never to a person or a role"),
    (f"<@&{MODERATORS_ROLE_ID}>", "never to a person or a role"),
    ("@everyone", "never to a person or a role"),
    ("#nowhere", "There is no text channel called #nowhere"),
    ("1234567", "can't find a channel"),
])
async def test_another_server_a_dm_or_a_person_is_refused(
        fake_discord: FakeDiscord, adapter: DiscordAdapter, channel: str, says: str) -> None:
    with pytest.raises(Refused, match=says):
        await adapter.directory.reach(KEY, str(ALICE), channel)  # Alice owns the run's server


@pytest.mark.parametrize("user, channel, allowed", [
    (BOB, PRIVATE_CHANNEL_ID, False),  # @everyone may not see #mods-only
    (CAROL, PRIVATE_CHANNEL_ID, True),  # a Moderator may
    (ALICE, PRIVATE_CHANNEL_ID, True),  # the server's owner may do anything
    (BOB, READONLY_CHANNEL_ID, False),  # sees #rules but may not send there
    (CAROL, READONLY_CHANNEL_ID, True),
])
async def test_only_where_the_member_could_post_themselves(
        adapter: DiscordAdapter, user: int, channel: int, allowed: bool) -> None:
    if allowed:
        assert await adapter.directory.reach(KEY, str(user), f"<#{channel}>") == str(channel)
    else:
        with pytest.raises(Refused, match=f"<@{user}> can't post in <#{channel}>"):
            await adapter.directory.reach(KEY, str(user), f"<#{channel}>")


@pytest.mark.parametrize("channel", [f"<#{FOREIGN_CHANNEL_ID}>", str(DM_CHANNEL_ID), f"<@{BOB}>"])
async def test_the_poster_never_posts_outside_the_run_s_server(
        fake_discord: FakeDiscord, adapter: DiscordAdapter, channel: str) -> None:
    elsewhere = ThreadKey("discord", KEY.workspace, channel, "")  # what post_message hands it
    with pytest.raises(Refused):
        await adapter.poster.post(Outbound(elsewhere, "hello", "k", BEAR))
    assert not fake_discord.posts_in(FOREIGN_CHANNEL_ID) and not fake_discord.posts_in(DM_CHANNEL_ID)
    assert not fake_discord.webhooks


async def test_roles_answer_to_their_id_and_to_a_name_only_while_it_is_unique(
        fake_discord: FakeDiscord, adapter: DiscordAdapter) -> None:
    guild = adapter.client.get_guild(GUILD_ID)
    assert guild is not None
    assert await adapter.directory.roles(KEY, str(CAROL)) == {str(MODERATORS_ROLE_ID), "Moderators"}
    lookalike = await fake_discord.add_role("moderators", MALLORY)  # same name, any case
    digits = await fake_discord.add_role(str(MODERATORS_ROLE_ID), BOB)  # a name shaped like an id
    await wait_until(lambda: len(guild.roles) == 4, what="the new roles in the cache")
    assert await adapter.directory.roles(KEY, str(CAROL)) == {str(MODERATORS_ROLE_ID)}
    assert await adapter.directory.roles(KEY, str(MALLORY)) == {str(lookalike)}
    assert await adapter.directory.roles(KEY, str(BOB)) == {str(digits)}
