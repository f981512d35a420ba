"""Durable before acknowledged: Slack hears an event arrived only once the host has stored it.

Slack re-sends an Events API event answered with anything but a 2xx, or not
answered within 3 seconds (`X-Slack-Retry-Num` 1, 2, 3: at once, after a minute,
after five), and never one it got a 200 for. So a listener on the receiver loop
hands the event to the main loop, where the host stores it, and waits: a 200 goes
back once the host has it, a 503 if the host failed (the store is down or locked)
or did not finish within `ACK_WITHIN`, and Slack sends it again. The work goes on
after a 503 for slowness; the host de-duplicates by event id, so whichever copy
lands first counts and the others change nothing.

`Intake` keeps, on the receiver loop only, which events are safe (answered 200 at
once when re-sent) and which are on their way (a copy re-sent meanwhile waits for
the same outcome instead of handing the event over twice).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from .inbound import RecentIds

__all__ = ["ACK_WITHIN", "Intake", "Report"]

ACK_WITHIN = 2.5  # seconds a listener waits for the host: Slack's limit is 3, the wire eats some

Report = Callable[[bool], None]
"""Called once, from any thread, with whether the host took the event."""


class Intake:
    """Events on their way to the host, and those it has; used on the receiver loop only."""

    def __init__(self, within: float = ACK_WITHIN) -> None:
        self.within = within
        self._safe = RecentIds()  # event ids the host has: a re-delivery is answered 200 at once
        self._pending: dict[str, asyncio.Future[bool]] = {}

    def safe(self, event_id: str) -> bool:
        """The host already has this event (a re-delivery, or a copy of it)."""
        return event_id in self._safe

    async def take(self, event_id: str, hand: Callable[[Report], None]) -> bool:
        """Hand the event over (`hand(report)` starts the work; the work reports once) unless
        it is safe or on its way already; True once the host has it, False if it failed or
        did not finish within `within` seconds."""
        if event_id in self._safe:
            return True
        outcome = self._pending.get(event_id)
        if outcome is None:
            loop = asyncio.get_running_loop()
            outcome = self._pending[event_id] = loop.create_future()

            def report(ok: bool) -> None:
                with contextlib.suppress(RuntimeError):  # the receiver loop has closed
                    loop.call_soon_threadsafe(self._settle, event_id, ok)

            try:
                hand(report)
            except RuntimeError:  # the main loop has closed: nothing can take it now
                self._settle(event_id, False)
        try:
            async with asyncio.timeout(self.within):
                return await asyncio.shield(outcome)
        except TimeoutError:
            return False

    def _settle(self, event_id: str, ok: bool) -> None:
        outcome = self._pending.pop(event_id, None)
        if ok:
            self._safe.add(event_id)
        if outcome is not None and not outcome.done():
            outcome.set_result(ok)
