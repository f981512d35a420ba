"""Automatic pipelining: commands issued in one event-loop turn travel as one pipeline.

redis-py spends most of a command's cost in Python (connection checkout,
packing, parsing), not on the wire. A thousand runs appending at once issue
their commands in the same loop turn; sending them as one non-transactional
pipeline is the Redis twin of SQLite's group commit (~4x the appends/s).
Blocking commands (XREADGROUP BLOCK) must not come through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

Command = Callable[[Pipeline], Any]  # adds one command to the pipeline it is given


class AutoPipeline:
    """Queues commands and flushes them together at the end of the loop turn."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._queued: list[tuple[Command, asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()  # keeps in-flight sends alive

    def call(self, command: Command) -> asyncio.Future[Any]:
        """Queue `command`; the future holds its reply (or the error Redis gave)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((command, future))
        return future

    async def aclose(self) -> None:
        """Wait for commands already sent."""
        while self._queued or self._flushing:
            await asyncio.gather(*self._flushing, asyncio.sleep(0))

    def _flush(self) -> None:
        batch, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        sent: list[asyncio.Future[Any]] = []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for command, future in batch:
                    try:
                        command(pipe)
                    except Exception as exc:  # bad arguments: refused before queueing
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        sent.append(future)
                replies = await pipe.execute(raise_on_error=False) if sent else []
        except Exception as exc:  # the connection failed: every caller hears it
            for future in sent:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, reply in zip(sent, replies, strict=True):
            if future.done():  # the caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
