"""Client wiring: the discord.py client, its intents, and its errors in words a person can act on."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from threadteam.bot.errors import ConfigError, PlatformError

if TYPE_CHECKING:
    from .adapter import DiscordAdapter

__all__ = ["INTENTS", "PERMISSIONS", "explain", "invite_url", "make_client"]

# Message content is privileged: it must also be switched on in the portal.
INTENTS = discord.Intents.none()
INTENTS.guilds = True
INTENTS.guild_messages = True
INTENTS.message_content = True

PERMISSIONS = discord.Permissions(
    send_messages=True, send_messages_in_threads=True, create_public_threads=True,
    manage_webhooks=True, read_message_history=True, add_reactions=True,
    use_application_commands=True,
)

PORTAL = "https://discord.com/developers/applications"


def invite_url(application_id: int | str) -> str:
    """The OAuth2 URL that adds the bot with the scopes and permissions it needs."""
    return discord.utils.oauth_url(
        application_id, permissions=PERMISSIONS,
        scopes=("bot", "applications.commands"))


class _Wiring:
    """Routes discord.py's events to the adapter (it cannot be the client: one may be sharded)."""

    adapter: DiscordAdapter

    async def setup_hook(self) -> None:
        await self.adapter.setup()

    async def on_connect(self) -> None:
        # READY has arrived: GUILD_CREATEs follow before any event of theirs, so
        # there is no need to sit out discord.py's 2 s wait for the last guild.
        self.adapter.connected.set()
        self.adapter.on_gateway_ready()

    async def on_resumed(self) -> None:
        self.adapter.on_gateway_ready()

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)

    async def on_error(self, event: str, *args: Any, **kwargs: Any) -> None:
        self.adapter.log_error(event)


class BotClient(_Wiring, discord.Client):
    """One gateway connection."""


class ShardedBotClient(_Wiring, discord.AutoShardedClient):
    """Several gateway shards in one process, for bots in many guilds."""


def make_client(adapter: DiscordAdapter, shards: int | None) -> discord.Client:
    """A plain client, or a sharded one when `shards` is given (0: Discord's recommendation)."""
    # The bot has no voice; don't warn at every start that voice libraries are missing.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False
    client: discord.Client
    # Whatever a call forgets to say, a post pings no one (posts that should, say so).
    quiet = discord.AllowedMentions.none()
    if shards is None:
        client = BotClient(intents=INTENTS, max_messages=None, allowed_mentions=quiet)
    else:
        client = ShardedBotClient(intents=INTENTS, max_messages=None, allowed_mentions=quiet,
                                  shard_count=shards or None)
    client.adapter = adapter  # type: ignore[attr-defined]
    _skip_unreadable(client, adapter)
    return client


def _skip_unreadable(client: discord.Client, adapter: DiscordAdapter) -> None:
    """A payload discord.py's parser cannot read is skipped and said, not raised.

    Raised, it would end the connection: a plain client's `connect()` returns the error
    (the adapter then connects afresh), but a sharded client closes every shard and
    itself. Skipped, every client keeps hearing, and the adapter reads the open runs'
    threads again (`catch_up`) for a message the payload may have carried. The parsers
    are the table each gateway connection looks events up in (`ws._discord_parsers`).
    """
    parsers: dict[str, Callable[[Any], None]] = client._connection.parsers
    for event, parse in list(parsers.items()):
        parsers[event] = _tolerant(event, parse, adapter)


def _tolerant(event: str, parse: Callable[[Any], None],
              adapter: DiscordAdapter) -> Callable[[Any], None]:
    def parse_or_skip(data: Any) -> None:
        try:
            parse(data)
        except Exception as exc:
            adapter.on_unreadable(event, exc)

    return parse_or_skip


def explain(exc: BaseException, api_base: str | None = None) -> Exception:
    """One sentence saying what to fix, for the errors a person can fix."""
    if isinstance(exc, discord.LoginFailure):
        return ConfigError(
            "DISCORD_BOT_TOKEN was refused by Discord: copy the bot token again from "
            f"{PORTAL} -> your application -> Bot -> Reset Token.")
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return ConfigError(
            "Discord refused the Message Content intent: switch on \"Message Content Intent\" "
            f"at {PORTAL} -> your application -> Bot -> Privileged Gateway Intents, then start "
            "again.")
    if isinstance(exc, discord.ConnectionClosed):
        if exc.code == 4004:
            return explain(discord.LoginFailure(), api_base)
        if exc.code == 4011:
            return ConfigError("Discord requires sharding for this bot: start it with --shards 0 "
                               "(Discord's recommended count) or --shards N.")
        if exc.code in (4013, 4014):
            return explain(discord.PrivilegedIntentsRequired(None), api_base)
        return PlatformError(f"Discord closed the gateway connection (code {exc.code}): {exc.reason}")
    if isinstance(exc, (aiohttp.ClientConnectionError, discord.GatewayNotFound, OSError)):
        where = api_base or "discord.com"
        return PlatformError(f"Can't reach Discord at {where}: {exc}. Check the network "
                             "(and DISCORD_API_BASE if set).")
    if isinstance(exc, discord.HTTPException):
        return PlatformError(f"Discord refused a call: {exc}")
    return PlatformError(f"Discord failed: {exc!r}")
