"""While an agent works, the thread says so, and the reply shows as the model writes it.

`assistant.threads.setStatus` where Slack accepts it; otherwise a placeholder post
under the agent's persona that fills with the reply as the model streams it
(edited at most once a second; Slack's chat.update allows about 50 a minute) and
becomes the reply itself. With the status line, a reply still being written after
`OPEN_AFTER` opens a message under the persona: a stream (streams.py) where the
workspace shows the persona on one, else a placeholder holding the text. A
placeholder (or stream) is remembered in the adapter's memory before it is posted,
with the key its post carries, so a crash at any moment leaves nothing behind: the
next post in the thread (or the resumed turn) finds it, by that key if its answer
never came, and replies into it (same persona) or takes it down.

All of it is a courtesy: one attempt per call (`SlackApi.once`), never retried,
never waited on for long, and the first thing to give way to a rate limit.
The poster decides when each step happens, in its thread's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from threadteam.bot.memory import LocalMemory
from threadteam.bot.shapes import BOT_PERSONA, Memory, Outbound, ThreadKey
from threadteam.teams.persona import Persona

from .api import COURTESY_TIMEOUT, SlackApi, SlackError
from .blocks import section
from .posted import find_posts, metadata
from .streams import STREAM_NONCE, Streams
from .text import LIMIT, to_mrkdwn

__all__ = ["LIVE_EVERY", "OPEN_AFTER", "PLACEHOLDER", "Live", "Placeholders", "face", "message",
           "truncate"]

log = logging.getLogger("threadteam.slack")

PLACEHOLDER = "_thinking…_"
LIVE_EVERY = 1.0  # seconds between edits of a reply being streamed into its placeholder
# Seconds a reply must have been writing before its text opens a message of its own (where
# only the status line shows the work): a quick reply is posted whole, and spends none of
# Slack's scarcer calls (chat.startStream allows about 20 a minute).
OPEN_AFTER = 0.5


@dataclass(eq=False)
class Live:
    """A turn's placeholder post: where the reply streams to, and then lands."""

    persona: Persona
    stale: Live | None = None  # an earlier turn's placeholder nobody replied into
    ts: str = ""  # the placeholder's message, once posted
    nonce: str = ""  # the key its post carries, to find it when its answer was lost
    text: str = ""  # what the model has streamed so far
    shown: str = ""  # what the placeholder shows now
    last: float = 0.0  # when it was last edited (loop time)
    done: bool = False  # the reply is being posted (or the turn passed): no more edits
    status: bool = False  # the thread's status line shows the work
    bare: bool = False  # no placeholder is on its way: the first text opens a message itself
    first: float = 0.0  # when the first text came (loop time)
    stream: bool = False  # `ts` is a Slack stream: appended to while it runs
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
        self.streams = Streams(api)
        self._live: dict[ThreadKey, Live] = {}
        self._no_status: set[str] = set()  # channels where assistant.threads.setStatus fails
        self._edits_hold = 0.0  # no streaming edits before this (loop time): rate limited
        self._streaming: set[asyncio.Task[None]] = set()  # edits into placeholders, per turn
        self._background: set[asyncio.Task[bool]] = set()  # memory writes on their way
        self._writes: dict[str, asyncio.Task[bool]] = {}  # the last memory write per thread
        self._settled: set[ThreadKey] = set()  # threads whose claimed placeholders memory drops

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
        With the status line (or with nothing shown, Slack not answering), the reply's first
        text opens a message of its own.
        """
        with contextlib.suppress(SlackError, TimeoutError):
            async with asyncio.timeout(COURTESY_TIMEOUT):
                if key.channel not in self._no_status:
                    try:
                        await self.api.once("assistant.threads.setStatus", channel_id=key.channel,
                                            thread_ts=key.thread, status="is thinking…",
                                            **face(live.persona))
                        live.status = True
                        self._bare(live)
                        if self.streams.may(key, live.persona):
                            await self.streams.recipient(key)  # known before the first text
                        return
                    except SlackError as exc:
                        if exc.rate_limited or not exc.answered:
                            self._bare(live)
                            return
                        self._no_status.add(key.channel)
                await self._place(key, live)

    @staticmethod
    def _bare(live: Live) -> None:
        live.bare = True
        live.more.set()  # text that came meanwhile may open its message now

    def sink(self, key: ThreadKey, persona: Persona) -> Callable[[str], Awaitable[None]] | None:
        """Where the model's text goes while `persona` answers: into its placeholder."""
        live = self._live.get(key)
        if live is None or live.persona != persona:
            return None

        async def sink(delta: str) -> None:
            if live.done or not delta:
                return
            if not live.text:
                live.first = asyncio.get_running_loop().time()
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

    async def claim(self, out: Outbound, live: Live | None, *,
                    adopted: str = "") -> tuple[str, bool]:
        """The placeholder `out` should replace, if any, and whether it was a stream (now
        stopped: its text is blocks, which the reply must replace); every other one is
        taken down.

        Besides the thread's current and stale placeholders, the one memory holds
        counts too: left by a crash, or posted here with its answer lost (found by the
        key its post carries, and left alone if it no longer carries it: it became a
        post). `adopted`: `out`'s first part is already in the thread (an earlier try
        of it): nothing is replaced, and that message is never taken down. Memory
        forgets the placeholder only once `out` is up (`posted`).
        """
        if live is not None:
            edits = {p.edits for p in (live, live.stale) if p is not None and p.edits is not None}
            if edits:  # an edit on the wire lands before the reply does
                await asyncio.wait(edits)
        up = [_Left(p.ts, _face_id(p.persona), p.nonce)
              for p in (live, live.stale if live is not None else None) if p is not None and p.ts]
        kept, settled = await self._remembered(out.key, {p.ts for p in up})
        if kept is not None and kept.ts and all(p.ts != kept.ts for p in up):
            up.append(kept)
        into: _Left | None = None
        for left in up:
            if left.ts == adopted:
                continue
            if not adopted and into is None and left.face == _face_id(out.persona):
                into = left
            else:
                await self._take_down(out.key, left)
        if kept is not None and settled:
            self._settled.add(out.key)
        if into is None:
            return "", False
        if into.stream:
            await self.streams.stop(out.key, into.ts)
        return into.ts, into.stream

    async def posted(self, key: ThreadKey) -> None:
        """The post that claimed the thread's placeholders is up: memory forgets them.

        Not before: a crash between the two would leave a placeholder nobody knows of
        (and after a failed post, the next claim finds it again, or what it became).
        """
        if key in self._settled:
            self._settled.discard(key)
            await self._write(key, None)

    def unsettled(self, key: ThreadKey) -> None:
        """The post that claimed the thread's placeholders failed: memory keeps them."""
        self._settled.discard(key)

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
    async def _place(self, key: ThreadKey, live: Live, text: str = "") -> None:
        """Post `live`'s placeholder, or adopt the one an earlier try of the turn left.

        The placeholder is remembered (with the key its post carries) before it is
        posted, so one left by a crash at any moment is found again and reused or
        taken down; if it cannot be remembered, it is not posted. With `text` (the reply
        so far), a stream is tried first, and the placeholder shows that text.
        """
        earlier, live.stale = live.stale, None
        kept, settled = await self._remembered(
            key, {earlier.ts} if earlier is not None and earlier.ts else set())
        if not settled:
            return  # one may be up that Slack will not tell us about: not a second one
        stale = kept if kept is not None and kept.ts else None
        if stale is None and earlier is not None and earlier.ts:  # memory may have failed it
            stale = _Left(earlier.ts, _face_id(earlier.persona), earlier.nonce)
        face_id = _face_id(live.persona)
        if stale is not None and stale.ts and stale.face == face_id and not stale.stream:
            # the same agent again (a retry, a resumed run): it still fits
            live.ts, live.nonce = stale.ts, stale.nonce
            await self._write(key, stale)  # its ts, now known for sure
            live.more.set()  # the text so far shows at the next edit
            return
        if stale is not None and stale.ts:
            await self._take_down(key, stale)  # a stream is never reopened: a new one is
        if text and self.streams.may(key, live.persona) and await self._stream(key, live, text):
            return
        # Its key says when it was tried, so a look for it reads only the thread since then.
        nonce = f"placeholder:{time.time():.0f}:{uuid.uuid4().hex}"
        if not await self._write(key, _Left("", face_id, nonce)):
            return  # the store is not taking writes: no placeholder a crash could strand
        live.nonce = nonce
        # If the answer is lost, the post may be up all the same: memory says so, and the
        # next post in the thread finds it by its key.
        shown = self._shown(text) if text else PLACEHOLDER
        reply = await self.api.once("chat.postMessage", metadata=metadata(nonce),
                                    **message(key, shown, live.persona))
        live.ts, live.shown = reply["ts"], text
        live.more.set()  # text that streamed in meanwhile can show now
        await self._write(key, _Left(live.ts, face_id, nonce))

    async def _stream(self, key: ThreadKey, live: Live, text: str) -> bool:
        """Open a stream under `live`'s persona showing `text`; False if Slack will not
        (or shows it under the app's name: then it is taken down), so a placeholder goes
        up instead. Remembered before it is opened, like a placeholder: a stream whose
        answer is lost is found again (streams.py) and taken down or replied into."""
        face_id, shown_as = _face_id(live.persona), face(live.persona)
        nonce = f"{STREAM_NONCE}{time.time():.0f}:{uuid.uuid4().hex}"
        if not await self._write(key, _Left("", face_id, nonce)):
            return True  # the store is not taking writes: nothing a crash could strand
        live.nonce = nonce
        try:
            ts = await self.streams.start(key, shown_as, _safe_end(text))
        except SlackError:
            return True  # it may be up: the next post finds it; nothing more this turn
        if not ts:
            return False
        left = _Left(ts, face_id, nonce)
        live.ts, live.stream, live.shown = ts, True, _safe_end(text)
        await self._write(key, left)
        if await self.streams.shows(key, ts, shown_as):
            live.more.set()
            return True
        await self._take_down(key, left)
        live.ts, live.stream, live.shown = "", False, ""
        return False

    async def _stream_edits(self, key: ThreadKey, live: Live) -> None:
        """Show the text as it streams in: its first words open a message where nothing
        shows it yet; then the stream is appended to, or the placeholder edited, at most
        once every LIVE_EVERY seconds."""
        loop = asyncio.get_running_loop()
        while not live.done:
            await live.more.wait()
            live.more.clear()
            wait = max(live.last + LIVE_EVERY, self._edits_hold)
            if not live.ts and live.bare:
                wait = max(wait, live.first + OPEN_AFTER)
            await asyncio.sleep(max(0.0, wait - loop.time()))
            if live.done or live.text == live.shown or not (live.ts or live.bare):
                continue  # (a placeholder on its way shows the text once it is up)
            if not live.ts and not _safe_end(live.text):
                continue  # not one whole word yet
            live.editing = True
            try:
                if not live.ts:
                    live.bare = False  # opened once, whatever comes of it
                    await self._place(key, live, live.text)
                else:
                    await self._edit(key, live)
            except SlackError as exc:
                if exc.rate_limited:  # streaming is the first thing to give way
                    self._edits_hold = loop.time() + max(exc.retry_after or 0.0, LIVE_EVERY)
                elif live.stream and exc.answered:  # it ended (Slack's time limit): edit it
                    live.stream = False
            finally:
                live.editing = False
                live.last = loop.time()

    async def _edit(self, key: ThreadKey, live: Live) -> None:
        """Bring `live`'s message up to its text: the stream appended to, the placeholder
        edited (a stream that ended has its blocks replaced)."""
        if live.stream:
            text = _safe_end(live.text)
            if text.startswith(live.shown) and len(text) > len(live.shown):
                await self.streams.append(key, live.ts, text[len(live.shown):])
                live.shown = text
            return
        text = live.text
        shown = self._shown(text)
        params: dict[str, Any] = {"channel": key.channel, "ts": live.ts, "text": shown}
        if live.nonce.startswith(STREAM_NONCE):  # an ended stream: its text is blocks
            params["blocks"] = [section(shown)]
        await self.api.once("chat.update", **params)
        live.shown = text

    def _shown(self, text: str) -> str:
        """What a placeholder shows of a reply being written."""
        return truncate(to_mrkdwn(text.rstrip(), italics=True) + " …", self.limit)

    async def discard(self, key: ThreadKey, ts: str, *, stream: bool) -> None:
        """Take down a placeholder (or stream) a post was to replace but could not."""
        await self._take_down(key, _Left(ts, "", STREAM_NONCE if stream else ""))

    async def _take_down(self, key: ThreadKey, left: _Left) -> None:
        if left.stream:
            await self.streams.stop(key, left.ts)
        with contextlib.suppress(SlackError):
            await self.api.once("chat.delete", channel=key.channel, ts=left.ts)

    async def _find(self, key: ThreadKey, left: _Left) -> str | None:
        """The ts of the placeholder (or stream) `left` names, by its key; "" if it is not
        in the thread (or became a post), None if Slack would not say."""
        nonce = left.nonce
        if not nonce:
            return ""
        when = nonce.split(":")[1] if nonce.count(":") == 2 else ""
        since = float(when) if when.isdigit() else None
        try:
            if left.stream:
                return await self.streams.find(key, left.ts, since)
            found = await find_posts(self.api.once, key, nonce, since=since)
        except SlackError as exc:
            log.info("slack: could not look for a placeholder in %s (%s)", key, exc.code)
            return None
        return found.get(0, "")

    async def _remembered(self, key: ThreadKey, trusted: set[str] | frozenset[str] = frozenset()
                          ) -> tuple[_Left | None, bool]:
        """The placeholder memory holds for `key`'s thread, and whether that is settled
        (False: memory or Slack would not say).

        Unless it is one this process has up (`trusted` ts), it is looked for by its key:
        a crash may have cut its post's answer, or come after a reply replaced it (then
        it no longer carries its key, and is none of the placeholders' business).
        """
        name = _memory_key(key)
        pending = self._writes.get(name)
        if pending is not None:  # read what this process last wrote, not what it replaced
            await asyncio.wait([pending])
        try:
            value = await self.memory.get(name)
        except Exception:  # a placeholder is a courtesy; the store's trouble is said elsewhere
            return None, False
        kept = _Left.parse(value or "")
        if kept is None or (kept.ts and (kept.ts in trusted or not kept.nonce)):
            return kept, True
        ts = await self._find(key, kept)
        return _Left(ts or "", kept.face, kept.nonce), ts is not None

    def _write(self, key: ThreadKey, left: _Left | None) -> asyncio.Task[bool]:
        """Remember `left` (None: nothing) as `key`'s placeholder; True once stored.

        Writes for one thread land in the order they were asked for, and a read waits
        for the last of them.
        """
        name = _memory_key(key)
        before = self._writes.get(name)

        async def write() -> bool:
            if before is not None:
                await asyncio.wait([before])
            try:
                await self.memory.set(name, str(left) if left is not None else "")
            except Exception:
                return False
            return True

        task = asyncio.ensure_future(write())
        self._writes[name] = task
        self._background.add(task)

        def done(_: object) -> None:
            self._background.discard(task)
            if self._writes.get(name) is task:
                del self._writes[name]

        task.add_done_callback(done)
        return task


@dataclass(frozen=True, slots=True)
class _Left:
    """A placeholder as memory keeps it: its ts ("" until posted), its persona, its key."""

    ts: str
    face: str
    nonce: str = ""

    def __str__(self) -> str:
        return f"{self.ts or '-'} {self.face} {self.nonce}".rstrip()

    @property
    def stream(self) -> bool:
        """Is it a Slack stream rather than a placeholder post?"""
        return self.nonce.startswith(STREAM_NONCE)

    @classmethod
    def parse(cls, value: str) -> _Left | None:
        fields = value.split(" ")
        if len(fields) < 2 or not fields[0]:
            return None  # nothing remembered (or cleared)
        return cls("" if fields[0] == "-" else fields[0], fields[1],
                   fields[2] if len(fields) > 2 else "")


def _memory_key(key: ThreadKey) -> str:
    return f"live:{key}"


def message(key: ThreadKey, text: str, persona: Persona) -> dict[str, Any]:
    """chat.postMessage arguments for `text` in `key`'s thread under `persona`."""
    params: dict[str, Any] = {"channel": key.channel, "text": text, **face(persona)}
    if key.thread:
        params["thread_ts"] = key.thread
    return params


def face(persona: Persona) -> dict[str, Any]:
    """username / icon for a persona; the app's own face for the host's notices.

    An avatar given as emoji characters ("🐂") fits no icon field (`icon_emoji` takes
    `:name:`), so it shows before the name instead.
    """
    if persona == BOT_PERSONA or not persona.display_name:
        return {}
    name = f"{persona.emoji} {persona.display_name}" if persona.emoji else persona.display_name
    found: dict[str, Any] = {"username": name}
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


def _safe_end(text: str) -> str:
    """`text` up to its last whitespace: what a stream may show of it, so no word (nor a
    `<!here>` that `no_broadcasts` must see whole) is ever split between two appends."""
    cut = max(text.rfind(" "), text.rfind("\n"))
    return text[:cut + 1] if cut >= 0 else ""
