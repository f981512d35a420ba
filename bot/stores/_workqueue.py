"""The in-process work queue of the embedded store: one process, so memory suffices.

Delivered work stays pending until acked; work a consumer took and did not ack
within `reclaim_after` seconds goes to the next consumer that asks, like a
Redis consumer group's XAUTOCLAIM. Crash recovery across restarts is the
store's active-run flags, not this queue.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque

__all__ = ["BATCH", "WorkQueue"]

# How many runs one `next_work` call hands out at most.
BATCH = 100


class WorkQueue:
    """Runs waiting for a worker, delivered to one consumer each."""

    def __init__(self, reclaim_after: float) -> None:
        self._reclaim_after = reclaim_after
        self._ready: deque[str] = deque()
        # Consumers waiting for work, each on a future of its own. (asyncio.wait_for on an
        # asyncio.Queue made a task and three passes of the event loop per item.)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._pending: dict[str, tuple[str, float]] = {}  # receipt -> (run_id, delivered at)
        self._ids = itertools.count(1)

    def put(self, run_id: str) -> None:
        """Add a run to the queue."""
        self._ready.append(run_id)
        self._wake_one()

    async def take(self, wait: float) -> list[tuple[str, str]]:
        """Up to `BATCH` (receipt, run_id) pairs; [] once `wait` seconds pass."""
        out = self._reclaim()
        if not out and not self._ready and wait > 0:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_later(wait, _time_up, waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: the work goes to another
                raise
            finally:
                timer.cancel()
                if waiter in self._waiters:  # its time was up, or it was cancelled
                    self._waiters.remove(waiter)
        ready = self._ready
        while len(out) < BATCH and ready:
            out.append(self._deliver(ready.popleft()))
        if ready:
            self._wake_one()  # more than one batch: the next consumer takes the rest
        return out

    def ack(self, receipt: str) -> None:
        """Forget delivered work; unknown receipts are ignored (acks are idempotent)."""
        self._pending.pop(receipt, None)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _deliver(self, run_id: str) -> tuple[str, str]:
        receipt = f"w{next(self._ids)}"
        self._pending[receipt] = (run_id, time.monotonic())
        return receipt, run_id

    def _reclaim(self) -> list[tuple[str, str]]:
        cutoff = time.monotonic() - self._reclaim_after
        stale: list[str] = []
        # Receipts are kept in delivery order, so the stale ones come first.
        for receipt, (_, at) in self._pending.items():
            if at > cutoff or len(stale) >= BATCH:
                break
            stale.append(receipt)
        return [self._deliver(self._pending.pop(r)[0]) for r in stale]


def _time_up(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
