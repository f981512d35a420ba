"""Retrying Discord calls until they succeed: 429s waited out, passing failures backed off."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import discord

__all__ = ["retrying"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def retrying(call: Callable[[], Awaitable[T]]) -> T:
    """Run `call` until Discord accepts it, waiting out 429s and passing failures.

    discord.py already retries 429s a few times, but gives up after five tries
    and does not retry a 429 that lacks the `Via` header; here a post is never
    dropped for a limit that will pass.
    """
    delay = 1.0
    while True:
        try:
            return await call()
        except discord.HTTPException as exc:
            if exc.status == 429:
                wait = _retry_after(exc)
            elif exc.status >= 500:
                wait, delay = delay, min(delay * 2, 30.0)
            else:
                raise
            log.warning("Discord answered %s; retrying in %.2fs", exc.status, wait)
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            wait, delay = delay, min(delay * 2, 30.0)
            log.warning("Discord unreachable (%s); retrying in %.2fs", exc, wait)
        await asyncio.sleep(wait)


def _retry_after(exc: discord.HTTPException) -> float:
    headers = getattr(exc.response, "headers", {}) or {}
    for name in ("X-RateLimit-Reset-After", "Retry-After"):
        try:
            return max(float(headers[name]), 0.05)
        except (KeyError, TypeError, ValueError):
            continue
    return 1.0
