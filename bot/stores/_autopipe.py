"""Automatic pipelining: commands issued in one event-loop turn travel as one pipeline.

redis-py spends most of a command's cost in Python (connection checkout,
packing, parsing), not on the wire. A thousand runs appending at once issue
their commands in the same loop turn; sending them as one non-transactional
pipeline is the Redis twin of SQLite's group commit (~4x the appends/s).
Blocking commands (XREADGROUP BLOCK) must not come through here.

One command never fails another: an error reply goes to its own caller only, and
a command that cannot even be packed (an argument of a type Redis cannot take)
fails alone while the rest of its batch is sent without it. A cluster's pipeline
(`pipeline=`) refuses such a command as it is queued instead, and bounds the
batches in flight (`max_in_flight=`): its nodes' connections do not wait for a
free one, they fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.client import Pipeline

__all__ = ["AutoPipeline", "Command"]

Command = Callable[[Pipeline], Any]  # adds one command to the pipeline it is given
Entry = tuple[tuple[Any, ...], Mapping[str, Any]]  # a queued command: (args, options)

# What packing a batch raises for one bad command, before anything is sent.
_PACKING_ERRORS = (rx.DataError, TypeError, ValueError)


class AutoPipeline:
    """Queues commands and flushes them together at the end of the loop turn.

    `check(*args)` packs one command as the connection would, raising what packing
    it would raise; it finds the culprit when packing a whole batch fails.
    """

    def __init__(self, client: aioredis.Redis | Any, check: Callable[..., Any], *,
                 pipeline: Callable[[], Any] | None = None,
                 max_in_flight: int | None = None) -> None:
        self._client = client
        self._check = check
        self._pipeline = pipeline or (lambda: client.pipeline(transaction=False))
        self._max_in_flight = max_in_flight
        self._queued: list[tuple[Command, asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()  # keeps in-flight sends alive
        self._deferred = False  # a flush waits for a batch in flight to land

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
        if not self._queued:
            return
        if self._max_in_flight is not None and len(self._flushing) >= self._max_in_flight:
            # Every connection is busy: these commands join the batch sent when one lands.
            self._deferred = True
            return
        batch, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._flushing.add(task)
        task.add_done_callback(self._landed)

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        if self._deferred:
            self._deferred = False
            self._flush()

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        sent: list[asyncio.Future[Any]] = []
        try:
            async with self._pipeline() as pipe:
                for command, future in batch:
                    try:
                        command(pipe)
                    except Exception as exc:  # bad arguments: refused before queueing
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        sent.append(future)
                # A checked (cluster) pipeline has no stack: it refused bad commands.
                entries: list[Entry] = list(getattr(pipe, "command_stack", ()))
                try:
                    replies = await pipe.execute(raise_on_error=False) if sent else []
                except _PACKING_ERRORS as exc:
                    # Packing precedes sending, so nothing went out: find who cannot
                    # be packed and send the others without them.
                    if not entries:
                        raise
                    replies = await self._without_culprits(entries, exc)
        except Exception as exc:  # the connection failed: every caller hears it
            for future in sent:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, reply in zip(sent, replies, strict=True):
            if future.done():  # the caller was cancelled
                continue
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _without_culprits(self, entries: list[Entry], error: Exception) -> list[Any]:
        replies: list[Any] = [None] * len(entries)
        innocent: list[int] = []
        for i, (args, _) in enumerate(entries):
            try:
                self._check(*args)
            except Exception as exc:
                replies[i] = exc
            else:
                innocent.append(i)
        if len(innocent) == len(entries):
            raise error  # no one command is to blame
        if innocent:
            async with self._client.pipeline(transaction=False) as pipe:
                for i in innocent:
                    args, options = entries[i]
                    pipe.execute_command(*args, **options)
                answers = await pipe.execute(raise_on_error=False)
            for i, answer in zip(innocent, answers, strict=True):
                replies[i] = answer
        return replies
