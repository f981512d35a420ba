"""Catch-up: what people wrote in open runs' threads while the bot was not listening.

Discord's gateway never re-delivers a message sent while the bot was down or
disconnected. So on every READY or RESUME (the first one at start included)
the adapter asks the host for its open threads and reads each one's messages
after the last it saw (the adapter's memory keeps that id per thread, so it
outlives a restart; a thread's own id is the floor, as every message in it is
newer). Each person's message goes to the host exactly as a live one does,
with the same event id, so one seen both ways is de-duplicated by the host.
A live message in a thread being caught up waits for the catch-up, so a run
gets its messages in order, and one the catch-up already handed over is not
handed over again.

A live message the host could not take (its store failed) leaves its thread behind:
later live messages there wait, and the thread is read again from the last message
the host took, in order, once the store works (tried after 1 s, then backing off).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

import discord

from threadteam.bot.errors import PlatformError, StoreError
from threadteam.bot.retry import RetryPolicy
from threadteam.bot.shapes import Memory, ThreadKey

from . import inbound
from ._locks import KeyedLocks
from .api import DiscordApi

__all__ = ["CatchUp"]

log = logging.getLogger(__name__)

_PAGE = 100  # Discord's largest page of messages
_AT_ONCE = 8  # threads read at the same time (each is one rate-limit bucket)
_HANDED_KEPT = 4096  # threads whose last handed-over message is remembered in memory
# A thread left behind is read again after 1 s, doubling while the store fails, up to 30 s.
BEHIND_RETRY = RetryPolicy(first_backoff=1.0, max_backoff=30.0)

Deliver = Callable[[discord.Message, ThreadKey], Awaitable[None]]


class CatchUp:
    """Reads open threads after a (re)connect and hands people's messages to `deliver`."""

    def __init__(self, client: discord.Client, api: DiscordApi, memory: Memory,
                 locks: KeyedLocks, deliver: Deliver) -> None:
        self.client, self.api, self.memory = client, api, memory
        self._locks, self._deliver = locks, deliver
        self._open_threads: Callable[[], Awaitable[list[ThreadKey]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._pending: dict[str, asyncio.Event] = {}  # thread -> set once it is caught up
        self._handed: dict[str, int] = {}  # thread -> the last message handed over (this process)
        #: Threads with a message the host could not take (the store failed), to read again.
        self.behind: dict[str, ThreadKey] = {}
        self._behind_task: asyncio.Task[None] | None = None
        self.behind_retry = BEHIND_RETRY

    def soon(self, open_threads: Callable[[], Awaitable[list[ThreadKey]]]) -> None:
        """Catch up now, or once more after the catch-up under way (shards connect apart)."""
        self._open_threads = open_threads
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run())

    async def done(self) -> None:
        """Until the catch-up under way (if any) has finished."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def before_live(self, thread: str) -> None:
        """A live message in `thread` waits until what was written before it is handed over."""
        pending = self._pending.get(thread)
        if pending is not None:
            await pending.wait()

    def handed(self, thread: str, message_id: int) -> bool:
        """Whether this process already handed `message_id` over (asked under the thread's
        lock: a live message the catch-up read first)."""
        return message_id <= self._handed.get(thread, 0)

    async def saw(self, thread: str, message_id: int) -> None:
        """Everything in `thread` up to `message_id` has reached the host."""
        await self.memory.set(f"seen:{thread}", str(message_id))
        self._handed.pop(thread, None)
        self._handed[thread] = message_id
        while len(self._handed) > _HANDED_KEPT:
            del self._handed[next(iter(self._handed))]

    def fell_behind(self, key: ThreadKey) -> None:
        """The host could not take a message in `key`'s thread (its store failed): the
        thread is read again, from the last message it took, once the store works; live
        messages there wait for that (asked under the thread's lock)."""
        self.behind[key.thread] = key
        if self._behind_task is None or self._behind_task.done():
            self._behind_task = asyncio.create_task(self._catch_up_behind())

    async def _catch_up_behind(self) -> None:
        tries = 0
        while self.behind:
            tries += 1
            await asyncio.sleep(self.behind_retry.jittered(tries))
            try:
                open_threads = {k.thread for k in await self._open_threads()} \
                    if self._open_threads is not None else set()
                for thread, key in list(self.behind.items()):
                    # A run's thread (an open run, or one whose messages were handed over
                    # before: a finished run keeps what is written to it) is read again; one
                    # that never had a run has nothing for the host.
                    if thread in open_threads or await self.memory.get(f"seen:{thread}"):
                        await self._thread(key)  # no longer behind once it is read
                    else:
                        self.behind.pop(thread, None)
            except StoreError as exc:
                log.warning("discord: the store still fails (%s); %d thread(s) are read "
                            "again later", exc, len(self.behind))
            except Exception:
                log.exception("discord: reading threads left behind failed; trying again")

    async def aclose(self) -> None:
        """Stop catching up (what was handed over stays handed over)."""
        for task in (self._task, self._behind_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for pending in self._pending.values():
            pending.set()
        self._pending.clear()

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self._all()
            except Exception:  # the next (re)connect tries again; live messages still flow
                log.exception("catching up on Discord threads failed")
            if not self._again:
                return

    async def _all(self) -> None:
        if self._open_threads is None:
            return
        keys = [k for k in await self._open_threads()
                if k.platform == inbound.PLATFORM and k.thread.isdigit()]
        mine = {k.thread: asyncio.Event() for k in keys}
        for thread, pending in mine.items():
            self._pending.setdefault(thread, pending)
        gate = asyncio.Semaphore(_AT_ONCE)

        async def one(key: ThreadKey) -> None:
            try:
                async with gate:
                    await self._thread(key)
            finally:
                mine[key.thread].set()

        try:
            await asyncio.gather(*(one(k) for k in keys))
        finally:
            for thread, pending in mine.items():
                pending.set()
                if self._pending.get(thread) is pending:
                    del self._pending[thread]

    async def _thread(self, key: ThreadKey) -> None:
        """Hand over, in order, people's messages in the thread after the last one seen."""
        async with self._locks[key.thread]:
            stored = await self.memory.get(f"seen:{key.thread}") or ""
            after = max(int(stored) if stored.isdigit() else 0, int(key.thread))
            guild = int(key.workspace) if key.workspace.isdigit() else None
            channel = self.client.get_partial_messageable(int(key.thread), guild_id=guild)
            while True:
                try:
                    page = await self.api.call(partial(_page, channel, after),
                                               what="read what was written in the thread")
                except PlatformError as exc:  # deleted, or no longer visible to the bot
                    log.info("could not catch up on thread %s: %s", key.thread, exc)
                    self.behind.pop(key.thread, None)
                    return
                except Exception as exc:  # a message on this page that discord.py can't parse
                    log.warning("could not catch up on thread %s: Discord sent a message that "
                                "can't be read (%r); new messages there still arrive", key.thread,
                                exc)
                    return
                me = self.client.user
                for message in page:
                    if inbound.unreadable(message) is None and inbound.by_a_person(message, me):
                        await self._deliver(message, key)
                    after = message.id
                if len(page) < _PAGE:
                    self.behind.pop(key.thread, None)  # all it held has reached the host
                    return


async def _page(channel: discord.PartialMessageable, after: int) -> list[discord.Message]:
    """Up to a page of the messages after `after`, oldest first."""
    return [m async for m in channel.history(limit=_PAGE, after=discord.Object(after),
                                             oldest_first=True)]
