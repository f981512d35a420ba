"""The one retry policy for calls to a chat platform (Slack's Web API, Discord's REST API).

- A rate limit (HTTP 429) is waited out for as long as the platform says
  (`Retry-After`), as often as it takes: a post is never dropped for a limit
  that will pass.
- A transient failure (HTTP 5xx, a refused or dropped connection, a timeout) is
  retried `transient_tries` times, backing off 0.5 s, 1 s, 2 s, 4 s, 8 s; then
  the call fails, the adapter raises `PlatformError`, the thread is told and the
  run can be retried with `retry`.
- Anything else (a 4xx refusal) fails at once.

Adapters say which of the three an exception is; this module owns the waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["PLATFORM_RETRY", "RateLimited", "RetryPolicy", "Transient", "Verdict", "retrying"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The platform asked us to wait `after` seconds."""

    after: float


@dataclass(frozen=True, slots=True)
class Transient:
    """A failure that may pass: a 5xx, a dropped connection, a timeout."""

    reason: str


Verdict = RateLimited | Transient | None
"""How an adapter classifies a failed call; None means "do not retry"."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    transient_tries: int = 5
    first_backoff: float = 0.5
    max_backoff: float = 8.0
    min_rate_wait: float = 0.05

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before transient retry number `attempt` (1-based)."""
        return min(self.first_backoff * 2 ** (attempt - 1), self.max_backoff)

    def jittered(self, attempt: int) -> float:
        """`backoff(attempt)` give or take a fifth: for many waiters one failure stopped
        together (runs, threads), so they do not all come back at the same moment."""
        return self.backoff(attempt) * random.uniform(0.8, 1.2)


PLATFORM_RETRY = RetryPolicy()


async def retrying(
    call: Callable[[], Awaitable[T]],
    classify: Callable[[BaseException], Verdict],
    *,
    what: str,
    policy: RetryPolicy = PLATFORM_RETRY,
) -> T:
    """Await `call()` under `policy`; re-raise the last failure once it gives up.

    `classify` sees every exception `call` raises and says whether it is a rate
    limit, a transient failure or final; `what` names the call in the log.
    """
    transient = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            verdict = classify(exc)
            if isinstance(verdict, RateLimited):
                wait = max(verdict.after, policy.min_rate_wait)
                log.info("%s rate limited; retrying in %.2fs", what, wait)
            elif isinstance(verdict, Transient) and transient < policy.transient_tries:
                transient += 1
                wait = policy.backoff(transient)
                log.warning("%s failed (%s); retry %d of %d in %.2fs",
                            what, verdict.reason, transient, policy.transient_tries, wait)
            else:
                raise
        await asyncio.sleep(wait)
