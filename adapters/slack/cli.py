"""`threadteam run slack`: serve one Slack workspace until interrupted."""

from __future__ import annotations

import argparse
import gc
import logging
import sys

from threadteam.bot.app import Runtime, Shutdown
from threadteam.bot.config import Settings

from . import EVENTS_PATH

__all__ = ["add_arguments", "run"]

log = logging.getLogger("threadteam.slack")

_HELP = f"""Slack: Socket Mode when SLACK_APP_TOKEN is set, else HTTP on --port
(POST {EVENTS_PATH} for events, slash commands and interactivity; GET /healthz).

Slack environment:
  SLACK_BOT_TOKEN       Bot User OAuth Token, xoxb-... (always)
  SLACK_APP_TOKEN       app-level token, xapp-... (Socket Mode)
  SLACK_SIGNING_SECRET  signing secret (HTTP mode)
  SLACK_API_URL         another Web API base URL (a proxy or a test server)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `threadteam run slack`."""
    parser.description = _HELP
    parser.add_argument("--port", type=int, default=None,
                        help="HTTP mode: port to serve on (default: $PORT or 3000)")
    parser.add_argument("--bind", default="0.0.0.0", metavar="ADDR",
                        help="HTTP mode: address to listen on (default: 0.0.0.0)")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Check the tokens, start the host, serve Slack until SIGINT/SIGTERM; the exit code."""
    from .adapter import SlackAdapter, SlackConfig  # slack_bolt loads only for this command

    shutdown = Shutdown()  # before anything is served: a stop during start-up is clean
    port = settings.http_port(args.port)  # ConfigError for a bad PORT: one line
    config = SlackConfig.from_env(settings.env)  # ConfigError: one line naming the variable
    runtime = await Runtime.open(settings)
    adapter = SlackAdapter(config, memory=runtime.memory("slack"), inbox=runtime.inbox("slack"))
    try:
        await adapter.connect()  # the bot token is checked before the host starts
        host = await runtime.start_host(adapter.poster, platform="slack",
                                        directory=adapter.directory)
        await adapter.start(host, port=port, bind=args.bind)
        _freeze_startup_heap()
        mode = "Socket Mode" if config.socket_mode else f"HTTP on port {adapter.port}"
        print(f"threadteam: serving Slack as @{adapter.bot_name} ({mode}); Ctrl-C stops",
              file=sys.stderr)
        await shutdown.wait()
        await adapter.stop()  # no new events while the host winds down
        return 0
    finally:
        await runtime.aclose()  # the host first: it posts through the adapter
        await adapter.aclose()


def _freeze_startup_heap() -> None:
    """Keep what lives as long as the process out of garbage collection.

    Modules, team specs and clients (~100k objects) can never be garbage, yet every
    full collection walked them: 60-80 ms pauses during which no event was acked.
    """
    gc.collect()
    gc.freeze()
