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

__all__ = ["BATCH", "WorkQueue"]

# How many runs one `next_work` call hands out at most.
BATCH = 100


class WorkQueue:
    """Runs waiting for a worker, delivered to one consumer each."""

    def __init__(self, reclaim_after: float) -> None:
        self._reclaim_after = reclaim_after
        self._ready: asyncio.Queue[str] | None = None
        self._pending: dict[str, tuple[str, float]] = {}  # receipt -> (run_id, delivered at)
        self._ids = itertools.count(1)

    def _queue(self) -> asyncio.Queue[str]:
        # Created on first use so it binds to the loop that uses it.
        if self._ready is None:
            self._ready = asyncio.Queue()
        return self._ready

    def put(self, run_id: str) -> None:
        """Add a run to the queue."""
        self._queue().put_nowait(run_id)

    async def take(self, wait: float) -> list[tuple[str, str]]:
        """Up to `BATCH` (receipt, run_id) pairs; [] once `wait` seconds pass."""
        out = self._reclaim()
        ready = self._queue()
        if not out:
            try:
                if wait > 0:
                    run_id = await asyncio.wait_for(ready.get(), wait)
                else:
                    run_id = ready.get_nowait()
            except (TimeoutError, asyncio.QueueEmpty):
                return []
            out.append(self._deliver(run_id))
        while len(out) < BATCH and not ready.empty():
            out.append(self._deliver(ready.get_nowait()))
        return out

    def ack(self, receipt: str) -> None:
        """Forget delivered work; unknown receipts are ignored (acks are idempotent)."""
        self._pending.pop(receipt, None)

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
