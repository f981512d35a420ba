"""A reply shown while the model writes it: one webhook message under the persona.

The first words (once the reply has been writing for `OPEN_AFTER`; a quicker reply
is simply posted) go out through the channel's webhook under the agent's name and
avatar, and the message is edited as the text grows, at most once every
`EDIT_EVERY` seconds. Every call goes through `DiscordApi`, so a 429 delays an edit
(waited out as long as Discord says) and never drops it; and the reply itself lands
in that message (`claim`), so its final text is whole whatever the edits met.

Exactly once: the message is remembered in the adapter's memory with what it first
said before it is posted, and with its id once posted, so after a crash at any
moment the next post in the thread finds it (by id, or by its author and first text
among the thread's recent messages) and turns it into that post when the same
persona speaks, or takes it down. A turn that ends without a post (a tool call)
hands its message on the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import discord

from threadteam.bot.shapes import Memory, ThreadKey
from threadteam.teams.persona import Persona

from .api import DiscordApi, DiscordError
from .posted import LOOK_BACK, adoptable
from .text import split_message, webhook_username

__all__ = ["EDIT_EVERY", "OPEN_AFTER", "Live", "LiveReplies"]

log = logging.getLogger(__name__)

OPEN_AFTER = 0.5  # seconds a reply must have been writing before it is shown
EDIT_EVERY = 1.0  # seconds between edits of one message (Discord allows about 5 per 2 s)
_SHOWN = 1990  # characters of the text so far a message shows (with " …" after)

#: Sends one webhook message (content, username, avatar) in (channel, thread); its id.
Send = Callable[[discord.Webhook, int, int, str, Persona], Awaitable[str]]
#: The channel's webhook, or None where the bot may not use webhooks.
Hook = Callable[[int, int], Awaitable["discord.Webhook | None"]]


@dataclass(eq=False)
class Live:
    """One turn's message while the model writes it."""

    persona: Persona
    stale: Live | None = None  # an earlier turn's message that no post took
    id: int = 0
    text: str = ""  # what the model has written so far
    shown: str = ""  # what the message shows
    first: float = 0.0  # when the first text came (loop time)
    last: float = 0.0  # when it was last posted or edited (loop time)
    done: bool = False
    editing: bool = False
    more: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """No more edits: one asleep is cancelled, one on the wire lands."""
        self.done = True
        self.more.set()
        if self.task is not None and not self.editing:
            self.task.cancel()


class LiveReplies:
    """The threads' messages being written, for the poster."""

    def __init__(self, client: discord.Client, api: DiscordApi, memory: Memory, *,
                 hook: Hook, send: Send) -> None:
        self.client, self.api, self.memory = client, api, memory
        self._hook, self._send = hook, send
        self._live: dict[int, Live] = {}

    def sink(self, key: ThreadKey, persona: Persona) -> Callable[[str], Awaitable[None]] | None:
        """Where `persona`'s text goes while it is written in `key`'s thread."""
        if not key.thread.isdigit():
            return None
        thread = int(key.thread)
        stale = self._live.pop(thread, None)
        if stale is not None:  # its turn ended without a post: its message is handed on
            stale.stop()
            if not stale.id and not stale.editing:  # (one being opened is waited for)
                stale = stale.stale
        live = self._live[thread] = Live(persona, stale=stale)

        async def sink(delta: str) -> None:
            if live.done or not delta:
                return
            loop = asyncio.get_running_loop()
            if not live.text:
                live.first = loop.time()
            live.text += delta
            live.more.set()
            if live.task is None:
                live.task = asyncio.ensure_future(self._show(int(key.channel), thread, live))

        return sink

    async def finish(self, thread: int) -> Live | None:
        """The thread's message stops changing (its reply is about to be posted)."""
        live = self._live.pop(thread, None)
        if live is None:
            return None
        live.stop()
        tasks = {p.task for p in (live, live.stale) if p is not None and p.task is not None}
        if tasks:  # an edit on the wire lands before the reply
            await asyncio.wait(tasks)
        return live

    async def claim(self, hook: discord.Webhook | None, channel: int, thread: int,
                    live: Live | None, persona: Persona, *,
                    adopted: set[int]) -> tuple[int, bool]:
        """The message the post by `persona` should become (0: none), and whether memory
        holds one to forget once the post is up (`posted`); every other message the
        thread has (this turn's, an earlier turn's, one a crash left) is taken down.
        `adopted`: the post's parts already up (an earlier try): nothing is reused, and
        they are never taken down. `hook` is the post's webhook (None for the bot's own
        posts); what is taken down goes through the channel's webhook, whose messages
        these are."""
        mine = [p for p in (live, live.stale if live is not None else None)
                if p is not None and p.id]
        left = [(p.id, webhook_username(p.persona)) for p in mine]
        try:
            raw = await self.memory.get(_memory_key(thread))
        except Exception:  # nothing to go on; the post goes ahead
            raw = None
        if not left and not raw:
            return 0, False
        own = hook or await self._channel_hook(channel, thread)
        remembered = await self._remembered(own, thread, {i for i, _ in left}, raw or "")
        if remembered is not None:
            left.append(remembered)
        into = 0
        for mid, username in left:
            if mid in adopted:
                continue
            if not adopted and not into and hook is not None \
                    and username == webhook_username(persona):
                into = mid
            else:
                await self._take_down(own, channel, thread, mid)
        return into, True

    async def posted(self, thread: int) -> None:
        """The post that claimed the thread's message is up: memory forgets it."""
        with contextlib.suppress(Exception):
            await self.memory.set(_memory_key(thread), "")

    async def aclose(self) -> None:
        """Stop every edit (shutdown): what is up stays, remembered for the next process."""
        lives = list(self._live.values())
        for live in lives:
            live.stop()
        tasks = [t for live in lives for t in (live.task,) if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    # -- showing it -------------------------------------------------------------------
    async def _show(self, channel: int, thread: int, live: Live) -> None:
        loop = asyncio.get_running_loop()
        while not live.done:
            await live.more.wait()
            live.more.clear()
            wait = live.first + OPEN_AFTER if not live.id else live.last + EDIT_EVERY
            await asyncio.sleep(max(0.0, wait - loop.time()))
            if live.done or live.text == live.shown:
                continue
            live.editing = True
            try:
                hook = await self._hook(channel, thread)
                if hook is None:
                    return  # no webhook here: the reply is posted whole, as the bot
                if live.id:
                    await self._edit(hook, channel, thread, live)
                else:
                    await self._open(hook, channel, thread, live)
            except DiscordError as exc:  # Discord stays down or refuses: the post says so
                log.info("Discord: could not show a reply being written in %s: %s", thread, exc)
                return
            finally:
                live.editing = False
                live.last = loop.time()

    async def _open(self, hook: discord.Webhook, channel: int, thread: int, live: Live) -> None:
        """Post the message (or take on the earlier turn's, if the same persona's)."""
        username = webhook_username(live.persona)
        stale, live.stale = live.stale, None
        if stale is not None and stale.task is not None and not stale.task.done():
            await asyncio.wait([stale.task])  # its message, if it was being posted, is up
        if stale is not None and stale.id:
            if webhook_username(stale.persona) == username:
                live.id = stale.id
                await self._edit(hook, channel, thread, live)
                return
            await self._take_down(hook, channel, thread, stale.id)
        content, text = _shown(live.text), live.text
        await self._remember(thread, 0, username, content)
        live.id = int(await self._send(hook, channel, thread, content, live.persona))
        live.shown = text
        await self._remember(thread, live.id, username, content)

    async def _edit(self, hook: discord.Webhook, channel: int, thread: int, live: Live) -> None:
        text = live.text
        content = _shown(text)
        await self.api.call(lambda: hook.edit_message(
            live.id, content=content, thread=_in_thread(channel, thread),
            allowed_mentions=discord.AllowedMentions.none()), what="show a reply being written")
        live.shown = text

    async def _take_down(self, hook: discord.Webhook | None, channel: int, thread: int,
                         mid: int) -> None:
        if hook is None:
            return
        try:
            await self.api.call(lambda: hook.delete_message(mid, thread=_in_thread(
                channel, thread)), what="take down a reply being written")
        except DiscordError as exc:
            if exc.status != 404:
                log.info("Discord: could not take down message %s in %s: %s", mid, thread, exc)

    # -- memory ---------------------------------------------------------------------------
    async def _remember(self, thread: int, mid: int, username: str, content: str) -> None:
        value = json.dumps({"id": mid, "username": username, "content": content})
        await self.memory.set(_memory_key(thread), value)

    async def _channel_hook(self, channel: int, thread: int) -> discord.Webhook | None:
        try:
            return await self._hook(channel, thread)
        except DiscordError as exc:
            log.info("Discord: no webhook to take down a reply being written in %s: %s",
                     thread, exc)
            return None

    async def _remembered(self, hook: discord.Webhook | None, thread: int, known: set[int],
                          raw: str) -> tuple[int, str] | None:
        """The message memory (`raw`) holds for `thread` that this process does not
        already have in hand: its id and author, if it is among the thread's recent
        messages and still shows a reply being written (a crash after it became a post
        leaves it alone)."""
        try:
            data: Any = json.loads(raw) if raw else None
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("username"), str):
            return None
        try:
            mid, username = int(data.get("id") or 0), data["username"]
        except (TypeError, ValueError):
            return None
        if mid in known or hook is None:
            return None
        try:
            page: list[Any] = await self.client.http.logs_from(thread, LOOK_BACK)
        except discord.HTTPException:
            return None
        me = self.client.user
        if not mid:  # posted, with its answer lost (or not posted at all): look for it
            found = adoptable(page, [str(data.get("content") or "")], webhook=str(hook.id),
                              username=username, bot=str(me.id if me else ""))
            mid = int(found[0]) if found else 0
        there = next((m for m in page if str(m.get("id")) == str(mid)), None)
        if there is None or not str(there.get("content") or "").endswith(" …"):
            return None
        return mid, username


def _shown(text: str) -> str:
    """What a message shows of a reply being written: its first part so far, and " …"."""
    parts = split_message(text)
    first = parts[0] if parts else ""
    return first[:_SHOWN].rstrip() + " …"


def _memory_key(thread: int) -> str:
    return f"live:{thread}"


def _in_thread(channel: int, thread: int) -> Any:
    return discord.Object(thread) if thread != channel else discord.utils.MISSING
