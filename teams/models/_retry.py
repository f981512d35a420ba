"""Our retry policy for vendor calls: backoff with jitter, Retry-After honoured.

The vendor clients are built with `max_retries=0` so that this is the only
retry loop: one policy for every provider, and tests can shrink its delays.
Each vendor module turns its exceptions into a `Failure` in one place; this
module decides whether to wait and try again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..errors import ModelError, ModelHTTPError

__all__ = [
    "IDLE_TIMEOUT", "RETRYABLE_STATUSES", "TURN_TIMEOUT", "Failure", "RetryPolicy", "call_with_retries", "gave_up",
    "is_retryable_status", "retry_after_seconds",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

# Defaults: a model silent this long is hung (a streaming model sends something every few
# seconds); a turn whose answer has not begun by then tells the thread so.
IDLE_TIMEOUT = 30.0
TURN_TIMEOUT = 120.0

# Statuses worth trying again: timeouts, conflicts, rate limits, server trouble (incl. 529).
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int | None) -> bool:
    """True for statuses that tend to succeed on a later attempt."""
    return status is None or status in RETRYABLE_STATUSES or status >= 500


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often to try and how long to wait: backoff `base * 2**n` with jitter, capped at
    `max_wait`; `idle_timeout` seconds of silence end an attempt; `turn_timeout` seconds
    without the answer beginning (retries and waits included) end the turn."""

    attempts: int = 4
    base: float = 0.5
    max_wait: float = 20.0
    idle_timeout: float = IDLE_TIMEOUT
    turn_timeout: float = TURN_TIMEOUT

    def backoff(self, retry: int) -> float:
        """Seconds before retry number `retry` (0-based) when the server gave no hint."""
        full = min(self.base * 2**retry, self.max_wait)
        # "Equal jitter": never less than half, so retries stay spaced out, but
        # concurrent runs hitting one rate limit do not retry in lockstep.
        return full / 2 + random.uniform(0, full / 2)


@dataclass(frozen=True, slots=True)
class Failure:
    """What a vendor exception means to us: the error to raise, any server wait hint, and
    `detail` for the log only (status, URL, the provider's own words; no key).

    The error's text may reach a shared thread, so it names the provider and what to do,
    never a host or the provider's response body; those stay in `detail`.
    """

    error: ModelError
    retry_after: float | None = None
    detail: str = ""
    note: str = ""  # what happened, said after the provider's name: "is overloaded"


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The server's wait hint in seconds (`retry-after-ms` or `retry-after`), if numeric."""
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue  # an HTTP date: rare for these APIs; fall back to our backoff
        if seconds >= 0:
            return seconds
    return None


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    translate: Callable[[Exception], Failure | None],
    policy: RetryPolicy,
    *,
    may_retry: Callable[[], bool] = lambda: True,
    on_retry: Callable[[Failure, int, float], Awaitable[None]] | None = None,
) -> T:
    """Run `attempt`, retrying retryable failures; raise the translated error `from` the original.

    `translate` returns None for exceptions that are not the vendor's (they
    propagate untouched). `may_retry` lets a caller refuse a retry, e.g. once
    streamed text has reached the user, where a retry would repeat it. `on_retry`
    hears of each retry before its wait: the failure, the coming attempt's number
    (from 2) and the seconds it will wait.
    """
    for number in range(policy.attempts):
        try:
            return await attempt()
        except Exception as exc:
            if isinstance(exc, ModelError):
                raise
            failure = translate(exc)
            if failure is None:
                raise
            error = failure.error
            if not error.retryable or not may_retry():
                log.warning("model call failed: %s", failure.detail or error)
                raise error from exc
            if number == policy.attempts - 1:
                log.warning("model call failed %d times, giving up: %s", policy.attempts,
                            failure.detail or error)
                raise gave_up(error, f"Gave up after {policy.attempts} attempts.") from exc
            if failure.retry_after is not None and failure.retry_after > policy.max_wait:
                log.warning("model call failed, and the provider asks to wait %.0f s: %s",
                            failure.retry_after, failure.detail or error)
                raise gave_up(error, f"The provider asked to wait {failure.retry_after:.0f} s; "
                                      "try again later.") from exc
            wait = (failure.retry_after if failure.retry_after is not None
                    else policy.backoff(number))
            log.warning("model call failed (attempt %d of %d); retrying in %.2f s: %s",
                        number + 1, policy.attempts, wait, failure.detail or error)
            if on_retry is not None:
                await on_retry(failure, number + 2, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def gave_up(error: ModelError, why: str) -> ModelError:
    """`error` (same class, same fields) with `why` added to its sentence."""
    if not isinstance(error, ModelHTTPError):
        return error
    # Not copy.copy: it rebuilds through __init__, whose signature differs per subclass.
    given_up = type(error).__new__(type(error), f"{error} {why}")
    given_up.__dict__.update(error.__dict__)
    return given_up
