"""What the host may ask about people on Discord: the roles a member holds, and
where they could post themselves.

An approved action reaches no further than the person who approved it: a
channel (`#name`, `<#id>` or an id) is looked up only in the run's own server,
never names a person, a role or a DM, and counts only if the member's own
permissions there (their roles and the channel's overwrites, as Discord
computes them) let them see it and send messages.
"""

from __future__ import annotations

import logging
import re

import discord

from threadteam.bot.errors import PlatformError, Refused
from threadteam.bot.shapes import ThreadKey

from . import inbound
from .api import DiscordApi

__all__ = ["DiscordDirectory", "find_channel"]

log = logging.getLogger(__name__)

_BY_ID = re.compile(r"<#(\d{1,20})>|(\d{1,20})")
_NAME_SHOWN = 100  # a channel name as echoed in a refusal (Discord's own limit)


class DiscordDirectory:
    """The host's `Directory` for Discord, answered from the client's cache or REST."""

    def __init__(self, client: discord.Client, api: DiscordApi) -> None:
        self.client, self.api = client, api

    async def roles(self, key: ThreadKey, user: str) -> frozenset[str]:
        """The labels of the roles `user` holds in the guild of `key` (see `inbound.roles_of`)."""
        guild = self._guild(key)
        if guild is None or not user.isdigit():
            return frozenset()
        member = await self._member(guild, int(user))
        return frozenset(inbound.roles_of(member)) if member is not None else frozenset()

    async def reach(self, key: ThreadKey, user: str, channel: str) -> str:
        """The id of the text channel `channel` names in the run's server, if `user` may post
        there themselves; else `Refused` with a sentence for the thread and the model."""
        guild = self._guild(key)
        if guild is None:
            raise Refused("I can't see this run's server right now, so I won't post anywhere "
                          "outside the thread.")
        target = await find_channel(self.client, self.api, guild, channel)
        member = await self._member(guild, int(user)) if user.isdigit() else None
        if member is None:
            raise Refused(f"<@{user}> is not a member of this server, so nothing is posted "
                          "on their approval.")
        allowed = target.permissions_for(member)
        if not (allowed.view_channel and allowed.send_messages):
            raise Refused(f"<@{user}> can't post in <#{target.id}> themselves, so I won't post "
                          "there on their approval. Ask someone who can to approve, or pick "
                          "another channel.")
        return str(target.id)

    def _guild(self, key: ThreadKey) -> discord.Guild | None:
        return self.client.get_guild(int(key.workspace)) if key.workspace.isdigit() else None

    async def _member(self, guild: discord.Guild, user: int) -> discord.Member | None:
        member = guild.get_member(user)
        if member is not None:
            return member
        try:
            return await self.api.call(lambda: guild.fetch_member(user),
                                       what="look up a member of this server")
        except PlatformError as exc:
            log.info("member %s of guild %s not found: %s", user, guild.id, exc)
            return None


async def find_channel(client: discord.Client, api: DiscordApi, guild: discord.Guild,
                       ref: str) -> discord.TextChannel:
    """The text channel of `guild` that `ref` (`#name`, `name`, `<#id>` or an id) names.

    A name is looked up in `guild` only; an id must belong to `guild`. Anything
    else (a person, a role, a DM, another server, a voice channel) is `Refused`.
    """
    ref = ref.strip()
    if ref.startswith(("<@", "@")):
        raise Refused("I post only to channels of this server, never to a person or a role: "
                      "name a channel, such as #announcements.")
    by_id = _BY_ID.fullmatch(ref)
    if by_id:
        found = await _by_id(client, api, guild, int(by_id[1] or by_id[2]))
    else:
        found = _by_name(guild, ref.removeprefix("#").strip())
    if not isinstance(found, discord.TextChannel):
        raise Refused(f"<#{found.id}> is not a text channel; I post only to text channels.")
    return found


async def _by_id(client: discord.Client, api: DiscordApi, guild: discord.Guild,
                 cid: int) -> discord.abc.GuildChannel | discord.Thread:
    found = guild.get_channel_or_thread(cid)
    if found is not None:
        return found
    if client.get_channel(cid) is None:  # not in any server the bot has cached: ask Discord
        try:
            fetched = await api.call(lambda: client.fetch_channel(cid), what="look up a channel")
        except PlatformError as exc:
            log.info("channel %s could not be fetched: %s", cid, exc)
            raise Refused(f"I can't find a channel with the id {cid} in this server.") from exc
        if isinstance(fetched, discord.abc.GuildChannel | discord.Thread) and \
                fetched.guild.id == guild.id:
            return fetched
    raise Refused(f"The channel {cid} is not in this server; I post only to channels of the "
                  "server this run is in.")


def _by_name(guild: discord.Guild, name: str) -> discord.TextChannel:
    wanted = name.casefold()
    matches = [c for c in guild.text_channels if c.name.casefold() == wanted]
    shown = name[:_NAME_SHOWN]
    if not matches:
        raise Refused(f"There is no text channel called #{shown} in this server.")
    if len(matches) > 1:
        ids = ", ".join(f"<#{c.id}> ({c.id})" for c in matches[:5])
        raise Refused(f"Several channels in this server are called #{shown}: {ids}. "
                      "Name the one you mean by its id.")
    return matches[0]
