"""What the host may ask about people on Discord: the roles a member holds."""

from __future__ import annotations

import logging

import discord

from threadteam.bot.errors import PlatformError
from threadteam.bot.shapes import ThreadKey

from . import inbound
from .api import DiscordAPI

__all__ = ["DiscordDirectory"]

log = logging.getLogger(__name__)


class DiscordDirectory:
    """The host's `Directory` for Discord, answered from the client's cache or REST."""

    def __init__(self, client: discord.Client, api: DiscordAPI) -> None:
        self.client, self.api = client, api

    async def roles(self, key: ThreadKey, user: str) -> frozenset[str]:
        """The labels of the roles `user` holds in the guild of `key` (see `inbound.roles_of`)."""
        guild = self._guild(key)
        if guild is None or not user.isdigit():
            return frozenset()
        member = await self._member(guild, int(user))
        return frozenset(inbound.roles_of(member)) if member is not None else frozenset()

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
