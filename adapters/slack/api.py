"""The one caller of the Slack Web API, and the one place its errors are translated.

Every call the adapter makes goes through `SlackApi`:

- `call(method, ...)` follows the platform retry policy (`threadteam.bot.retry`):
  a rate limit (HTTP 429, `ratelimited`) is waited out for as long as
  `Retry-After` says, as often as it takes; a Slack 5xx, a dropped or refused
  connection or a timeout is retried 5 times with backoff; any other refusal
  fails at once. What fails is raised as `SlackError`.
- Every message text it sends (`text`, and the text of Block Kit elements) goes
  through `no_broadcasts` on the way out: no post, edit or ephemeral of this
  bot ever pings a channel, whatever a model or a person wrote.
- `call_keyed(method, find, ...)` is `call` for what must take effect once (a
  post): after an attempt whose outcome is unknown (a timeout, a connection
  dropped after the request left, a 5xx, Slack's own `fatal_error`), and first
  of all when the caller is `unsure`, `find` looks for what an earlier attempt
  did (a post's key in its metadata); what it finds is the answer, and nothing
  is sent again.
- `once(method, ...)` makes one attempt within a short deadline and raises
  `SlackError` at the first failure: for courtesies (thread status,
  placeholders, streaming edits, reactions) that must never hold up a post.

A `SlackError` (a `PlatformError`) names the method and Slack's error code,
nothing else: its text is posted in threads, so it never carries a URL, an
internal host or a response body. The full error goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from threadteam.bot.errors import PlatformError
from threadteam.bot.retry import (
    PLATFORM_RETRY,
    RateLimited,
    RetryPolicy,
    Transient,
    Verdict,
    retrying,
)

from .text import no_broadcasts

__all__ = ["COURTESY_TIMEOUT", "Find", "SlackApi", "SlackError", "may_have_happened"]

log = logging.getLogger("threadteam.slack")

COURTESY_TIMEOUT = 5.0  # seconds a courtesy call (`once`) may take
# Methods that take a JSON body; Slack reads the others' arguments from the query or
# a form only (a JSON body there is silently ignored).
_JSON_METHODS = frozenset({
    "chat.postMessage", "chat.update", "chat.delete", "chat.postEphemeral",
    "reactions.add", "reactions.remove", "assistant.threads.setStatus",
    "chat.startStream", "chat.appendStream", "chat.stopStream",
})
# Methods whose text people read in a conversation.
_MESSAGE_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral",
                              "chat.startStream", "chat.appendStream", "chat.stopStream"})
# The fields of those methods' arguments that hold such text (or hold what does).
_TEXT_FIELDS = ("text", "markdown_text", "blocks", "chunks", "elements", "fields")
# Errors Slack answers (with HTTP 200) when the fault is on its side and may pass.
_SLACK_TRANSIENT = frozenset({"internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})

Find = Callable[[float | None], Awaitable[Any]]
"""Looks for what an earlier attempt of a call did, given when that attempt was sent
(epoch seconds; None when not known): the call's answer if it took effect, else None."""


class SlackError(PlatformError):
    """Slack refused a call, or could not be reached, after the retry policy gave up.

    `code` is Slack's error code (`channel_not_found`, `ratelimited`, ...) or, when
    no answer came (`answered` False), what went wrong (`unreachable`, `timeout`);
    `retry_after` is set for a rate limit; `unknown` says the call may have taken
    effect all the same (see `may_have_happened`).
    """

    def __init__(self, method: str, code: str, *, answered: bool = True,
                 retry_after: float | None = None, unknown: bool = False) -> None:
        self.method = method
        self.code = code
        self.answered = answered
        self.retry_after = retry_after
        self.unknown = unknown
        said = (f"Slack refused {method} ({code})" if answered
                else f"Slack could not be reached for {method} ({code})")
        super().__init__(said)

    @property
    def rate_limited(self) -> bool:
        return self.retry_after is not None


class SlackApi:
    """Calls Slack's Web API through one slack_sdk client, under one retry policy."""

    def __init__(self, client: AsyncWebClient, *, policy: RetryPolicy = PLATFORM_RETRY) -> None:
        self.client = client
        self.policy = policy
        # slack_sdk retries a failed connection once on its own; one policy is enough.
        client.retry_handlers = []

    async def call(self, method: str, **params: Any) -> Any:
        """Call `method`; wait out rate limits, retry transient failures, else raise SlackError."""
        try:
            return await retrying(lambda: self._send(method, params), _classify,
                                  what=f"slack {method}", policy=self.policy)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(method, exc) from exc

    async def call_keyed(self, method: str, find: Find, *, unsure: bool = False,
                         **params: Any) -> Any:
        """`call` for a call that must take effect once: before any attempt that follows
        one whose outcome is unknown (and before the first, when `unsure`), `find` looks
        for what that attempt did, and its answer, if any, is the call's answer."""
        doubt = unsure
        since: float | None = None  # when the doubtful attempt was sent, if known

        async def attempt() -> Any:
            nonlocal doubt, since
            if doubt:
                try:
                    found = await find(since)
                except SlackApiError as exc:
                    if _classify(exc) is not None:
                        raise  # Slack is struggling: look again after the policy's wait
                    # Refused (a missing scope, a channel the bot is not in): there is no
                    # knowing, and a post twice is better than a post lost.
                    log.warning("slack %s: could not look for an earlier attempt (%s); "
                                "sending it again", method, _code_of(exc) or exc)
                    found = None
                if found is not None:
                    return found
                doubt = False
            sent = time.time()
            try:
                return await self._send(method, params)
            except Exception as exc:
                if may_have_happened(exc):
                    doubt, since = True, sent
                raise

        try:
            return await retrying(attempt, _classify, what=f"slack {method}", policy=self.policy)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(method, exc) from exc

    async def attempt(self, method: str, **params: Any) -> Any:
        """One attempt at `method`, its failure raised as slack_sdk or aiohttp raise it
        (for lookups inside a `Find`, which `call_keyed` classifies)."""
        return await self._send(method, params)

    async def once(self, method: str, *, timeout: float = COURTESY_TIMEOUT,
                   **params: Any) -> Any:
        """One attempt at `method` within `timeout` seconds; SlackError at the first failure."""
        try:
            async with asyncio.timeout(timeout):
                return await self._send(method, params)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(method, exc) from exc

    async def _send(self, method: str, params: Mapping[str, Any]) -> Any:
        if method in _MESSAGE_METHODS:
            params = _quiet(params)
        if method in _JSON_METHODS:
            return await self.client.api_call(method, json=dict(params))
        return await self.client.api_call(method, http_verb="GET", params=dict(params))


def _quiet(value: Any) -> Any:
    """A message's arguments with every text in them passed through `no_broadcasts`."""
    if isinstance(value, str):
        return no_broadcasts(value)
    if isinstance(value, Mapping):
        return {k: _quiet(v) if k in _TEXT_FIELDS else v
                for k, v in value.items()}
    if isinstance(value, list):
        return [_quiet(v) for v in value]
    return value


def may_have_happened(exc: BaseException) -> bool:
    """Could a call that failed with `exc` have taken effect all the same? Yes when the
    request may have reached Slack and no clear answer came back: a timeout, a connection
    dropped or reset after it was sent, a 5xx, Slack's own "something broke" codes. No
    for a refusal, a rate limit, or a connection that was never made."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        return status >= 500 or (status != 429 and _code_of(exc) in _SLACK_TRANSIENT)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False  # never connected: nothing was sent
    return isinstance(exc, TimeoutError | aiohttp.ClientError)


def _classify(exc: BaseException) -> Verdict:
    if isinstance(exc, SlackApiError):
        if _is_ratelimited(exc):
            return RateLimited(_retry_after(exc))
        if exc.response.status_code >= 500:
            return Transient(f"HTTP {exc.response.status_code}")
        if _code_of(exc) in _SLACK_TRANSIENT:  # Slack's own "try again" answers
            return Transient(_code_of(exc))
        return None
    if isinstance(exc, TimeoutError):
        return Transient("timed out")
    if isinstance(exc, aiohttp.ClientError):
        return Transient(type(exc).__name__)
    return None


def _translate(method: str, exc: SlackApiError | aiohttp.ClientError | TimeoutError
               ) -> SlackError:
    """`exc` as a SlackError whose text is fit for a thread; the details go to the log."""
    if isinstance(exc, SlackApiError):
        status = exc.response.status_code
        if _is_ratelimited(exc):
            return SlackError(method, "ratelimited", retry_after=_retry_after(exc))
        code = _code_of(exc) or (f"http_{status}" if status >= 400 else "unknown_error")
        if status >= 500 or code in _SLACK_TRANSIENT:
            log.warning("slack %s failed: %s", method, exc)
        return SlackError(method, code, unknown=may_have_happened(exc))
    if isinstance(exc, TimeoutError):
        return SlackError(method, "timeout", answered=False, unknown=True)
    log.warning("slack %s could not be sent: %s", method, exc)
    return SlackError(method, "unreachable", answered=False, unknown=may_have_happened(exc))


def _code_of(exc: SlackApiError) -> str:
    """Slack's error code, if the answer has one that looks like a code (never free text)."""
    data = exc.response.data
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, str) or not 0 < len(error) <= 64:
        return ""
    return error if all(c.isalnum() or c in "_.-" for c in error) else ""


def _is_ratelimited(exc: SlackApiError) -> bool:
    return exc.response.status_code == 429 or _code_of(exc) == "ratelimited"


def _retry_after(exc: SlackApiError) -> float:
    headers = {k.lower(): v for k, v in (exc.response.headers or {}).items()}
    value = headers.get("retry-after", "1")
    if isinstance(value, list):
        value = value[0] if value else "1"
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0
