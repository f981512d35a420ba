"""While an agent works, the thread says so, and the reply streams in as the model writes.

`assistant.threads.setStatus` where Slack accepts it; otherwise a placeholder post
under the agent's persona that fills with the reply as the model streams it
(edited at most once a second; Slack's chat.update allows about 50 a minute) and
becomes the reply itself. A placeholder is remembered in the adapter's memory,
so a turn resumed after a crash reuses it (same persona) or takes it down.

All of it is a courtesy: one attempt per call (`SlackApi.once`), never retried,
never waited on for long, and the first thing to give way to a rate limit.
The poster decides when each step happens, in its thread's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from threadteam.bot.memory import LocalMemory
from threadteam.bot.shapes import BOT_PERSONA, Memory, Outbound, ThreadKey
from threadteam.teams.persona import Persona

from .api import COURTESY_TIMEOUT, SlackApi, SlackError
from .text import LIMIT, to_mrkdwn

__all__ = ["LIVE_EVERY", "PLACEHOLDER", "Live", "Placeholders", "face", "message", "truncate"]

PLACEHOLDER = "_thinking…_"
LIVE_EVERY = 1.0  # seconds between edits of a reply being streamed into its placeholder


@dataclass(eq=False)
class Live:
    """A turn's placeholder post: where the reply streams to, and then lands."""

    persona: Persona
    stale: Live | None = None  # an earlier turn's placeholder nobody replied into
    ts: str = ""  # the placeholder's message, once posted
    text: str = ""  # what the model has streamed so far
    shown: str = ""  # what the placeholder shows now
    last: float = 0.0  # when it was last edited (loop time)
    done: bool = False  # the reply is being posted (or the turn passed): no more edits
    status: bool = False  # the thread's status line shows the work: nothing to stream into
    more: asyncio.Event = field(default_factory=asyncio.Event)
    edits: asyncio.Task[None] | None = None
    editing: bool = False

    def stop(self) -> None:
        """No more edits; an edit asleep between two is cancelled, one on the wire lands."""
        self.done = True
        self.more.set()
        if self.edits is not None and not self.editing:
            self.edits.cancel()


class Placeholders:
    """The threads with an agent at work, and what each shows."""

    def __init__(self, api: SlackApi, *, memory: Memory | None = None,
                 limit: int = LIMIT) -> None:
        self.api = api
        #: Remembers placeholders across a restart, so a resumed turn reuses or removes them.
        self.memory: Memory = memory if memory is not None else LocalMemory()
        self.limit = limit
        self._live: dict[ThreadKey, Live] = {}
        self._no_status: set[str] = set()  # channels where assistant.threads.setStatus fails
        self._edits_hold = 0.0  # no streaming edits before this (loop time): rate limited
        self._streaming: set[asyncio.Task[None]] = set()  # edits into placeholders, per turn
        self._background: set[asyncio.Task[None]] = set()

    def begin(self, key: ThreadKey, persona: Persona) -> Live:
        """A new turn of `persona` in `key`; an earlier turn's placeholder becomes stale."""
        stale = self._live.get(key)
        if stale is not None:  # its turn ended without a post (a tool call, say)
            stale.stop()
        live = self._live[key] = Live(persona, stale=stale)
        return live

    async def show(self, key: ThreadKey, live: Live) -> None:
        """The thread's status line, else a placeholder post under the persona.

        Where `assistant.threads.setStatus` is refused once, that channel gets placeholders.
        """
        with contextlib.suppress(SlackError, TimeoutError):
            async with asyncio.timeout(COURTESY_TIMEOUT):
                if key.channel not in self._no_status:
                    try:
                        await self.api.once("assistant.threads.setStatus", channel_id=key.channel,
                                            thread_ts=key.thread, status="is thinking…",
                                            **face(live.persona))
                        live.status = True
                        live.more.set()  # lets a streaming task see it has nothing to do
                        return
                    except SlackError as exc:
                        if exc.rate_limited or not exc.answered:
                            return
                        self._no_status.add(key.channel)
                await self._place(key, live)

    def sink(self, key: ThreadKey, persona: Persona) -> Callable[[str], Awaitable[None]] | None:
        """Where the model's text goes while `persona` answers: into its placeholder."""
        live = self._live.get(key)
        if live is None or live.persona != persona:
            return None

        async def sink(delta: str) -> None:
            if live.done or live.status:
                return
            live.text += delta
            live.more.set()
            if live.edits is None:  # lives as long as the turn: not one of drain()'s
                live.edits = asyncio.ensure_future(self._stream_edits(key, live))
                self._streaming.add(live.edits)
                live.edits.add_done_callback(self._streaming.discard)

        return sink

    def finish(self, key: ThreadKey) -> Live | None:
        """Stop streaming into the thread's placeholder; it is about to be replied into."""
        live = self._live.pop(key, None)
        if live is not None:
            live.stop()
        return live

    async def claim(self, out: Outbound, live: Live | None) -> str:
        """The placeholder `out` should replace, if any; others are taken down."""
        if live is None:
            return ""
        edits = {p.edits for p in (live, live.stale) if p is not None and p.edits is not None}
        if edits:  # an edit on the wire lands before the reply does
            await asyncio.wait(edits)
        into = ""
        for placeholder in (live.stale, live):
            if placeholder is None or not placeholder.ts:
                continue
            if placeholder is live and live.persona == out.persona and not into:
                into = live.ts
            else:
                await self._take_down(out.key, placeholder.ts)
        if live.ts:
            self._forget(f"live:{out.key}")
        return into

    async def drain(self) -> None:
        """Wait for memory writes still on their way."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def stop(self) -> None:
        """Stop streaming into placeholders (shutdown: the turns are cut short)."""
        for live in list(self._live.values()):
            live.stop()
        if self._streaming:
            await asyncio.wait(list(self._streaming), timeout=5.0)

    # -- the calls ------------------------------------------------------------------------
    async def _place(self, key: ThreadKey, live: Live) -> None:
        """Post `live`'s placeholder, or adopt the one an earlier try of the turn left."""
        stale = live.stale.ts if live.stale is not None else ""
        stale_face = _face_id(live.stale.persona) if live.stale is not None else ""
        live.stale = None
        if not stale and (kept := await self._kv_get(f"live:{key}")):
            stale, _, stale_face = kept.partition(" ")
        if stale and stale_face == _face_id(live.persona):
            live.ts = stale  # the same agent again (a retry, a resumed run): it still fits
            return
        if stale:
            await self._take_down(key, stale)
        reply = await self.api.once("chat.postMessage", **message(key, PLACEHOLDER, live.persona))
        live.ts = reply["ts"]
        live.more.set()  # text that streamed in meanwhile can show now
        await self._kv_set(f"live:{key}", f"{live.ts} {_face_id(live.persona)}")

    async def _stream_edits(self, key: ThreadKey, live: Live) -> None:
        """Edit the placeholder as text streams in, at most once every LIVE_EVERY seconds."""
        loop = asyncio.get_running_loop()
        while not live.done:
            await live.more.wait()
            live.more.clear()
            if live.status:
                return
            await asyncio.sleep(max(0.0, live.last + LIVE_EVERY - loop.time(),
                                    self._edits_hold - loop.time()))
            if live.done or not live.ts or live.text == live.shown:
                continue
            text, live.editing = live.text, True
            try:
                await self.api.once("chat.update", channel=key.channel, ts=live.ts,
                                    text=truncate(to_mrkdwn(text, italics=True) + " …",
                                                  self.limit))
                live.shown = text
            except SlackError as exc:
                if exc.rate_limited:  # streaming is the first thing to give way
                    self._edits_hold = loop.time() + max(exc.retry_after or 0.0, LIVE_EVERY)
            finally:
                live.editing = False
                live.last = loop.time()

    async def _take_down(self, key: ThreadKey, ts: str) -> None:
        with contextlib.suppress(SlackError):
            await self.api.once("chat.delete", channel=key.channel, ts=ts)

    async def _kv_get(self, key: str) -> str | None:
        with contextlib.suppress(Exception):  # a placeholder is a courtesy
            return await self.memory.get(key)
        return None

    async def _kv_set(self, key: str, value: str) -> None:
        with contextlib.suppress(Exception):
            await self.memory.set(key, value)

    def _forget(self, key: str) -> None:
        """Clear a kv entry without holding up the post that made it obsolete."""
        task = asyncio.ensure_future(self._kv_set(key, ""))
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def message(key: ThreadKey, text: str, persona: Persona) -> dict[str, Any]:
    """chat.postMessage arguments for `text` in `key`'s thread under `persona`."""
    params: dict[str, Any] = {"channel": key.channel, "text": text, **face(persona)}
    if key.thread:
        params["thread_ts"] = key.thread
    return params


def face(persona: Persona) -> dict[str, Any]:
    """username / icon for a persona; the app's own face for the host's notices."""
    if persona == BOT_PERSONA or not persona.display_name:
        return {}
    found: dict[str, Any] = {"username": persona.display_name}
    if persona.avatar_emoji:
        found["icon_emoji"] = persona.avatar_emoji
    elif persona.avatar_url:
        found["icon_url"] = persona.avatar_url
    return found


def truncate(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with an ellipsis if longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _face_id(persona: Persona) -> str:
    """A persona as one token, to tell whether a placeholder still fits its speaker."""
    return f"{persona.display_name}|{persona.avatar}".replace(" ", "\u00a0")
