"""Pointing discord.py at another API base (a rate-limit proxy or a test server).

discord.py builds every REST URL, webhooks and interaction callbacks included,
from the class attribute `discord.http.Route.BASE`; a plain `Client` connects
to `DiscordWebSocket.DEFAULT_GATEWAY` without asking `GET /gateway/bot`. Both
are process-wide, so they are pointed once per process: REST before login,
the gateway from the base's own `/gateway/bot` once logged in.
"""

from __future__ import annotations

import re

import yarl
from discord import gateway, http

__all__ = ["point_gateway", "point_rest", "rest_base"]

_DEFAULT_REST = http.Route.BASE
_DEFAULT_GATEWAY = gateway.DiscordWebSocket.DEFAULT_GATEWAY


def rest_base(api_base: str) -> str:
    """`http(s)://host[:port][/api/vN]` -> the REST base with the API version discord.py speaks."""
    base = api_base.rstrip("/")
    if not re.search(r"/api/v\d+$", base):
        base += f"/api/v{http.INTERNAL_API_VERSION}"
    return base


def point_rest(api_base: str | None) -> None:
    """Send REST calls (webhooks and interaction callbacks too) to `api_base`; None: discord.com."""
    http.Route.BASE = rest_base(api_base) if api_base else _DEFAULT_REST
    if not api_base:
        gateway.DiscordWebSocket.DEFAULT_GATEWAY = _DEFAULT_GATEWAY


async def point_gateway(client_http: http.HTTPClient) -> None:
    """Connect the gateway where the REST base says it lives (`GET /gateway/bot`)."""
    _shards, url, _limits = await client_http.get_bot_gateway()
    gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
