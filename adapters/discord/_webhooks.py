"""One "threadteam" webhook per channel, through which agents post under their personas.

A webhook's token lets anyone post as it, so it is never stored: the store
keeps only the webhook's id, and a new process asks Discord for the channel's
webhooks (`GET /channels/{id}/webhooks` returns the tokens of the bot's own) and
holds the token in memory.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import discord

from threadteam.bot.shapes import Memory

from ._locks import KeyedLocks
from .api import MISSING_PERMISSIONS, DiscordApi, DiscordError, webhook_session

__all__ = ["WEBHOOK_NAME", "ChannelWebhooks"]

WEBHOOK_NAME = "threadteam"
_RECHECK_PERMISSION = 600.0  # seconds before trying webhooks again where they were refused


class ChannelWebhooks:
    """Finds or creates each channel's webhook once per process; tokens stay in memory."""

    def __init__(self, client: discord.Client, api: DiscordApi, memory: Memory) -> None:
        self.client, self.api, self.memory = client, api, memory
        self._hooks: dict[int, discord.Webhook] = {}
        self._refused: dict[int, float] = {}  # channel -> when Discord refused us webhooks
        self._locks = KeyedLocks()
        self._session: aiohttp.ClientSession | None = None  # see api.webhook_session

    async def get(self, channel: int) -> discord.Webhook | None:
        """The channel's webhook; None where the bot may not manage webhooks (asked again
        after ten minutes, so a permission granted meanwhile is noticed)."""
        if channel in self._hooks:
            return self._hooks[channel]
        refused = self._refused.get(channel)
        if refused is not None and time.monotonic() - refused < _RECHECK_PERMISSION:
            return None
        async with self._locks[channel]:
            if channel in self._hooks:
                return self._hooks[channel]
            # An older version stored "id:token"; only the id is kept from now on.
            raw = await self.memory.get(f"webhook:{channel}") or ""
            stored = raw.split(":", 1)[0]
            try:
                data = await self.api.call(lambda: self._find_or_create(channel, stored),
                                           what="set up the channel's webhook")
            except DiscordError as exc:
                if exc.code != MISSING_PERMISSIONS:
                    raise
                self._refused[channel] = time.monotonic()
                return None
            if raw != data["id"]:
                await self.memory.set(f"webhook:{channel}", data["id"])
            self._refused.pop(channel, None)
            hook = self._hooks[channel] = self._bind(int(data["id"]), data["token"])
            return hook

    async def forget(self, channel: int) -> None:
        """The channel's webhook is gone (deleted by someone): make a new one next time."""
        self._hooks.pop(channel, None)
        await self.memory.set(f"webhook:{channel}", "")

    async def aclose(self) -> None:
        """Close the webhook session and drop the tokens."""
        self._hooks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _bind(self, wid: int, token: str) -> discord.Webhook:
        if self._session is None:
            self._session = webhook_session()
        return discord.Webhook.partial(wid, token, session=self._session, client=self.client)

    async def _find_or_create(self, channel: int, stored: str) -> dict[str, str]:
        """The bot's webhook in `channel` (the stored id first), or a new one: id and token."""
        me = str(self.client.application_id or (self.client.user and self.client.user.id))
        listed: list[Any] = await self.client.http.channel_webhooks(channel)
        mine = [d for d in listed if d.get("token") and str(
            d.get("application_id") or (d.get("user") or {}).get("id")) == me]
        found = next((d for d in mine if str(d["id"]) == stored), None) or next(
            (d for d in mine if d.get("name") == WEBHOOK_NAME), None)
        if found is None:
            found = await self.client.http.create_webhook(channel, name=WEBHOOK_NAME,
                                                          reason="threadteam agent personas")
        return {"id": str(found["id"]), "token": str(found["token"])}
