"""`threadteam run discord`: serve Discord until interrupted, or print the invite URL."""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import os
import sys

from threadteam.bot.app import Runtime, Shutdown
from threadteam.bot.config import Settings
from threadteam.bot.errors import ConfigError

__all__ = ["add_arguments", "application_id", "run"]

_HELP = """Discord: /team and @mentions open threads where teams work; personas post
through a channel webhook; approvals by button or reply.

environment:
  DISCORD_BOT_TOKEN       the bot's token (Developer Portal -> your app -> Bot)
  DISCORD_APPLICATION_ID  the application id (only for --print-invite; read from the
                          token when unset)
  DISCORD_API_BASE        another API base URL, e.g. a rate-limit proxy (optional)
  DISCORD_SHARDS          like --shards
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `threadteam run discord`."""
    parser.description = _HELP
    parser.add_argument("--print-invite", action="store_true",
                        help="print the URL that adds the bot to a server, and exit")
    parser.add_argument("--shards", type=int, metavar="N", default=None,
                        help="run N gateway shards in this process (0: as many as Discord "
                             "recommends); default: one connection, no sharding")


def application_id(env: dict[str, str] | os._Environ) -> str:
    """DISCORD_APPLICATION_ID, else the id a bot token starts with (base64 of the bot's id)."""
    explicit = (env.get("DISCORD_APPLICATION_ID") or "").strip()
    if explicit:
        if not explicit.isdigit():
            raise ConfigError(f"DISCORD_APPLICATION_ID must be a number, got {explicit!r}")
        return explicit
    token = (env.get("DISCORD_BOT_TOKEN") or "").strip()
    if not token:
        raise ConfigError("Set DISCORD_APPLICATION_ID (Developer Portal -> your app -> General "
                          "Information -> Application ID) or DISCORD_BOT_TOKEN to print the invite.")
    head = token.split(".")[0]
    try:
        decoded = base64.b64decode(head + "=" * (-len(head) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if not (decoded.isascii() and decoded.isdigit()):
        raise ConfigError("DISCORD_BOT_TOKEN is malformed: a bot token starts with the bot's id "
                          "in base64, then a dot. Copy it again (Developer Portal -> your app -> "
                          "Bot -> Reset Token), or set DISCORD_APPLICATION_ID to print the invite.")
    return decoded


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Log in, start the host, serve Discord until SIGINT/SIGTERM; the exit code."""
    from .adapter import DiscordAdapter  # discord.py loads only for this command
    from .client import PERMISSIONS, invite_url

    env = dict(settings.env)
    if args.print_invite:
        print(invite_url(application_id(env)))
        print(f"(scopes bot + applications.commands; permissions {PERMISSIONS.value})",
              file=sys.stderr)
        return 0
    shards = args.shards
    if shards is None and env.get("DISCORD_SHARDS"):
        try:
            shards = int(env["DISCORD_SHARDS"])
        except ValueError:
            raise ConfigError(f"DISCORD_SHARDS must be a number, got {env['DISCORD_SHARDS']!r}") from None
    if shards is not None and shards < 0:
        raise ConfigError(f"--shards must be 0 or more, got {shards}")
    shutdown = Shutdown()  # before anything is served: a stop during start-up is clean
    runtime = await Runtime.open(settings)
    adapter = DiscordAdapter(env.get("DISCORD_BOT_TOKEN", ""), shards=shards,
                             api_base=env.get("DISCORD_API_BASE") or None,
                             memory=runtime.memory("discord"))
    try:
        host = await runtime.start_host(adapter.poster, platform="discord",
                                        directory=adapter.directory)
        await adapter.start(host)  # a wrong token is one line saying what to fix
        me = adapter.client.user
        print(f"threadteam: serving Discord as @{me.name if me else '?'}; Ctrl-C stops",
              file=sys.stderr)
        await shutdown.wait(asyncio.ensure_future(adapter.wait_closed()))
        return 0
    finally:
        await adapter.aclose()
        await runtime.aclose()
