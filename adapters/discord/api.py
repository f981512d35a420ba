"""Discord's REST API: where it lives, and the one place its calls are retried.

Every REST call the adapter makes goes through `DiscordApi.call`, under the one
platform retry policy (`threadteam.bot.retry`):

- a 429 is waited out for as long as Discord says, as often as it takes;
- a 5xx, a timeout or a dropped connection is retried five times with backoff,
  then the call fails with `DiscordError` (a `PlatformError`), the host says so
  in the thread and the run can be retried;
- any other refusal fails at once as `DiscordError`, carrying Discord's status
  and error code for the caller to branch on.

discord.py retries inside a call too: a 429 up to five times, and on the bot's
own routes a 500/502/504/524 up to five times (sleeping 1+3+5+7+9 s), which this
policy then counts as one try; discord.py offers no switch for that. Webhook
posts (every agent's turn) go through `webhook_session`, which hands any 5xx
straight back to this policy, so there the policy is the only one.

An error's message is a sentence for the thread: it names Discord and what to
do, never an address, a token or Discord's answer verbatim; those go to the log.

Pointing discord.py at another API base (a rate-limit proxy or a test server):
discord.py builds every REST URL, webhooks and interaction callbacks included,
from the class attribute `discord.http.Route.BASE`; a plain `Client` connects
to `DiscordWebSocket.DEFAULT_GATEWAY` without asking `GET /gateway/bot`. Both
are process-wide, so they are pointed once per process: REST before login,
the gateway from the base's own `/gateway/bot` once logged in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import discord
import yarl
from discord import gateway, http

from threadteam.bot.errors import PlatformError
from threadteam.bot.retry import (
    PLATFORM_RETRY,
    RateLimited,
    RetryPolicy,
    Transient,
    Verdict,
    retrying,
)

__all__ = [
    "DiscordApi", "DiscordError", "classify", "point_gateway", "point_rest", "rest_base",
    "webhook_session",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

_DEFAULT_REST = http.Route.BASE
_DEFAULT_GATEWAY = gateway.DiscordWebSocket.DEFAULT_GATEWAY

MISSING_PERMISSIONS = 50013
UNKNOWN_WEBHOOK = 10015
UNKNOWN_CHANNEL = 10003


class DiscordError(PlatformError):
    """Discord refused a call, or could not be reached after retries.

    `status` is the HTTP status (None when Discord could not be reached) and
    `code` Discord's JSON error code (0 when it gave none).
    """

    def __init__(self, message: str, *, status: int | None = None, code: int = 0) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class _ServerError(Exception):
    """A 5xx seen by `webhook_session`, before discord.py could retry it itself."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def classify(exc: BaseException) -> Verdict:
    """How the retry policy sees a failed Discord call."""
    if isinstance(exc, discord.RateLimited):
        return RateLimited(exc.retry_after)
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429:
            return RateLimited(_retry_after(exc))
        return Transient(f"HTTP {exc.status}") if exc.status >= 500 else None
    if isinstance(exc, _ServerError):
        return Transient(str(exc))
    if isinstance(exc, (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        return Transient(type(exc).__name__)
    return None


class DiscordApi:
    """Runs REST calls under one `RetryPolicy` and translates what fails into `DiscordError`."""

    def __init__(self, policy: RetryPolicy = PLATFORM_RETRY) -> None:
        self.policy = policy

    async def call(self, call: Callable[[], Awaitable[T]], *, what: str) -> T:
        """Await `call()` until Discord accepts it or the policy gives up.

        `what` says what the call does, in words for a person ("post in the thread").
        """
        try:
            return await retrying(call, classify, what=f"Discord: {what}", policy=self.policy)
        except (discord.DiscordException, _ServerError, TimeoutError, aiohttp.ClientError) as exc:
            raise _translate(exc, what) from exc


def _translate(exc: BaseException, what: str) -> DiscordError:
    """A sentence for the thread; what Discord said (bodies, addresses) goes to the log only."""
    log.warning("Discord: could not %s: %r", what, exc)
    if isinstance(exc, discord.DiscordException) and not isinstance(exc, discord.HTTPException):
        return DiscordError(f"I could not {what} on Discord: this looks like a bug in the bot; "
                            "the log has the details.")
    if isinstance(exc, discord.HTTPException) and exc.status < 500:
        if exc.status == 403:
            hint = "check the bot's permissions in that channel"
        elif exc.status == 404:
            hint = "it may have been deleted"
        else:
            hint = "this looks like a bug; the log has the details"
        return DiscordError(f"Discord refused to {what} (HTTP {exc.status}"
                            f"{f', error {exc.code}' if exc.code else ''}): {hint}.",
                            status=exc.status, code=exc.code)
    status = getattr(exc, "status", None)
    reason = f"HTTP {status}" if isinstance(status, int) else "no answer"
    return DiscordError(f"Discord is having trouble ({reason}), so I could not {what}; "
                        "it usually passes within minutes, so try again shortly.", status=status)


def _retry_after(exc: discord.HTTPException) -> float:
    headers = getattr(exc.response, "headers", {}) or {}
    for name in ("X-RateLimit-Reset-After", "Retry-After"):
        try:
            return max(float(headers[name]), 0.0)
        except (KeyError, TypeError, ValueError):
            continue
    return 1.0


async def _server_errors(response: aiohttp.ClientResponse) -> None:
    if response.status >= 500:
        response.release()
        raise _ServerError(response.status)


def webhook_session() -> aiohttp.ClientSession:
    """An HTTP session for webhook calls that leaves 5xx retries to this module's policy."""
    return aiohttp.ClientSession(raise_for_status=_server_errors,
                                 cookie_jar=aiohttp.DummyCookieJar())


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
