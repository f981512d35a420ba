"""Posting to Slack: the host's `Poster`, with order per thread and rate limits waited out.

Every Web API call goes through `SlackPoster.call`, the one place where
slack_sdk errors are translated: `ratelimited` (HTTP 429) is waited out for as
long as `Retry-After` says, as often as it takes (a post is never dropped);
connection failures and Slack 5xx are retried a few times with backoff; any other
refusal becomes a `PlatformError` naming the method and Slack's error code.

While an agent works, the thread says so: `assistant.threads.setStatus` where
Slack accepts it, otherwise a placeholder post under the
agent's persona that fills with the reply as the model streams it (edited at
most once a second; Slack's chat.update allows about 50 a minute) and becomes
the reply itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from threadteam.bot.errors import PlatformError
from threadteam.bot.memory import LocalMemory
from threadteam.bot.shapes import BOT_PERSONA, Memory, Outbound, ThreadKey
from threadteam.teams.persona import Persona

from ._format import LIMIT, split_text, to_mrkdwn
from ._inbound import APPROVE_ACTION, DENY_ACTION

__all__ = ["SlackPoster"]

_Turn = tuple["asyncio.Future[None] | None", "asyncio.Future[None]"]

log = logging.getLogger("threadteam.slack")

_TRANSIENT_TRIES = 5
PLACEHOLDER = "_thinking…_"
SEEN_REACTION = "eyes"  # on a person's reply once the run has taken it
LIVE_EVERY = 1.0  # seconds between edits of a reply being streamed into its placeholder


@dataclass(eq=False)
class _Live:
    """A turn's placeholder post: where the reply streams to, and then lands."""

    persona: Persona
    stale: _Live | None = None  # an earlier turn's placeholder nobody replied into
    ts: str = ""  # the placeholder's message, once posted
    text: str = ""  # what the model has streamed so far
    shown: str = ""  # what the placeholder shows now
    last: float = 0.0  # when it was last edited (loop time)
    done: bool = False  # the reply is being posted (or the turn passed): no more edits
    status: bool = False  # the thread's status line shows the work: nothing to stream into
    more: asyncio.Event = field(default_factory=asyncio.Event)
    edits: asyncio.Task[None] | None = None
    editing: bool = False


class SlackPoster:
    """Implements the host's Poster for Slack threads."""

    def __init__(self, client: AsyncWebClient, *, memory: Memory | None = None,
                 limit: int = LIMIT) -> None:
        self.client = client
        #: Remembers placeholders across a restart, so a resumed turn reuses or removes them.
        self.memory: Memory = memory if memory is not None else LocalMemory()
        self.limit = limit
        self._tails: dict[str, asyncio.Future[None]] = {}  # thread -> its last queued call
        self._no_status: set[str] = set()  # channels where assistant.threads.setStatus fails
        self._live: dict[ThreadKey, _Live] = {}  # threads with an agent at work
        self._edits_hold = 0.0  # no streaming edits before this (loop time): rate limited
        self._background: set[asyncio.Task[None]] = set()
        self._streaming: set[asyncio.Task[None]] = set()  # edits into placeholders, per turn

    # -- the Poster protocol ------------------------------------------------------------
    async def post(self, out: Outbound) -> str:
        """Post `out` in its thread (split if long); the first part's ts, or the buttons' part.

        An agent's placeholder in the thread becomes the first part when the same
        persona speaks; anyone else's post takes the placeholder down first.
        """
        parts = split_text(_mrkdwn(out), self.limit) or [""]
        live = self._finish_live(out.key)
        async with self._in_turn(out.key):
            into = await self._placeholder_for(out, live)
            ids = []
            for i, part in enumerate(parts):
                buttons = out.approval is not None and i == len(parts) - 1
                if i == 0 and into:
                    params: dict[str, Any] = {"channel": out.key.channel, "ts": into, "text": part}
                    if buttons:
                        params["blocks"] = approval_blocks(part, out)
                    ids.append((await self.call("chat.update", **params))["ts"])
                    continue
                params = self._message(out.key, part, out.persona)
                if buttons:
                    params["blocks"] = approval_blocks(part, out)
                ids.append((await self.call("chat.postMessage", **params))["ts"])
        # An approval's buttons sit on its last part, and that is the message an edit must
        # reach to take them away; any other post is known by its first part.
        return ids[-1] if out.approval is not None else ids[0]

    async def edit(self, out: Outbound, message_id: str) -> None:
        """Replace a message's text in place; the blocks are rewritten so no buttons remain."""
        text = _truncate(_mrkdwn(out), self.limit)
        async with self._in_turn(out.key):
            await self.call("chat.update", channel=out.key.channel, ts=message_id, text=text,
                            blocks=[_section(text)])

    async def working(self, key: ThreadKey, persona: Persona) -> None:
        """Show that `persona` is working, without holding up the model call that follows.

        The indicator goes out in the background but in the thread's queue, so it
        can never land after the reply it announces.
        """
        if not key.thread:
            return
        turn = self._queue(key)  # taken now, so the reply that follows queues behind it
        stale = self._live.get(key)
        if stale is not None:  # its turn ended without a post (a tool call, say)
            _stop_streaming(stale)
        live = self._live[key] = _Live(persona, stale=stale)
        task = asyncio.ensure_future(self._show_working(key, live, turn))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: self._release(key, *turn))  # even if never run

    def stream(self, key: ThreadKey, persona: Persona) -> Callable[[str], Awaitable[None]] | None:
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

    async def _show_working(self, key: ThreadKey, live: _Live, turn: _Turn) -> None:
        """The thread's status line, else a placeholder post under the persona.

        Where `assistant.threads.setStatus` fails once, that channel gets placeholders.
        A courtesy: never retried, never waited on for long.
        """
        async with self._in_turn(key, turn):
            with contextlib.suppress(SlackApiError, aiohttp.ClientError, TimeoutError):
                async with asyncio.timeout(5.0):
                    if key.channel not in self._no_status:
                        params = {"channel_id": key.channel, "thread_ts": key.thread,
                                  "status": "is thinking…", **_face(live.persona)}
                        try:
                            await self.client.api_call("assistant.threads.setStatus",
                                                       json=params)
                            live.status = True
                            live.more.set()  # lets a streaming task see it has nothing to do
                            return
                        except SlackApiError as exc:
                            if _is_ratelimited(exc):
                                return
                            self._no_status.add(key.channel)
                    await self._place(key, live)

    async def _place(self, key: ThreadKey, live: _Live) -> None:
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
        reply = await self.client.api_call(
            "chat.postMessage", json=self._message(key, PLACEHOLDER, live.persona))
        live.ts = reply["ts"]
        live.more.set()  # text that streamed in meanwhile can show now
        await self._kv_set(f"live:{key}", f"{live.ts} {_face_id(live.persona)}")

    async def _stream_edits(self, key: ThreadKey, live: _Live) -> None:
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
                async with asyncio.timeout(5.0):
                    await self.client.api_call("chat.update", json={
                        "channel": key.channel, "ts": live.ts,
                        "text": _truncate(to_mrkdwn(text, italics=True) + " …", self.limit)})
                live.shown = text
            except SlackApiError as exc:
                if _is_ratelimited(exc):  # streaming is the first thing to give way
                    self._edits_hold = loop.time() + max(_retry_after(exc), LIVE_EVERY)
            except (aiohttp.ClientError, TimeoutError):
                pass
            finally:
                live.editing = False
                live.last = loop.time()

    def _finish_live(self, key: ThreadKey) -> _Live | None:
        """Stop streaming into the thread's placeholder; it is about to be replied into."""
        live = self._live.pop(key, None)
        if live is not None:
            _stop_streaming(live)
        return live

    async def _placeholder_for(self, out: Outbound, live: _Live | None) -> str:
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

    async def _take_down(self, key: ThreadKey, ts: str) -> None:
        with contextlib.suppress(SlackApiError, aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(5.0):
                await self.client.api_call("chat.delete", json={"channel": key.channel, "ts": ts})

    def acknowledge(self, key: ThreadKey, ts: str) -> None:
        """React 👀 to a person's message the run has taken (in the background)."""
        async def react() -> None:
            with contextlib.suppress(SlackApiError, aiohttp.ClientError, TimeoutError):
                async with asyncio.timeout(5.0):
                    await self.client.api_call("reactions.add", json={
                        "channel": key.channel, "timestamp": ts, "name": SEEN_REACTION})

        task = asyncio.ensure_future(react())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for working indicators still on their way."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def stop_streaming(self) -> None:
        """Stop streaming into placeholders (shutdown: the turns are cut short)."""
        for live in list(self._live.values()):
            _stop_streaming(live)
        if self._streaming:
            await asyncio.wait(list(self._streaming), timeout=5.0)

    def mention(self, user: str) -> str:
        """A Slack user mention."""
        return f"<@{user}>"

    # -- beyond the protocol -------------------------------------------------------------
    async def ephemeral(self, key: ThreadKey, user: str, text: str) -> None:
        """Show `text` to `user` alone, in the thread (refusals, errors)."""
        params: dict[str, Any] = {"channel": key.channel, "user": user,
                                  "text": _truncate(to_mrkdwn(text, italics=False), self.limit)}
        if key.thread:
            params["thread_ts"] = key.thread
        await self.call("chat.postEphemeral", **params)

    async def root(self, channel: str, text: str) -> str:
        """Post a top-level message as the app itself; its ts."""
        return (await self.call("chat.postMessage", channel=channel, text=text))["ts"]

    async def call(self, method: str, **params: Any) -> Any:
        """Call a Web API method; wait out rate limits, retry transient failures, else raise."""
        transient = 0
        while True:
            try:
                return await self.client.api_call(method, json=params)
            except SlackApiError as exc:
                if _is_ratelimited(exc):
                    delay = _retry_after(exc)
                    log.info("slack %s rate limited; retrying in %.1fs", method, delay)
                    await asyncio.sleep(delay)
                    continue
                error = exc.response.get("error", "unknown_error")
                if exc.response.status_code < 500 or transient >= _TRANSIENT_TRIES:
                    raise PlatformError(f"Slack refused {method} ({error})") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                if transient >= _TRANSIENT_TRIES:
                    raise PlatformError(f"Slack could not be reached for {method}: {exc}") from exc
            transient += 1
            await asyncio.sleep(min(0.25 * 2 ** transient, 8.0))

    # -- helpers -------------------------------------------------------------------------
    def _message(self, key: ThreadKey, text: str, persona: Persona) -> dict[str, Any]:
        params: dict[str, Any] = {"channel": key.channel, "text": text, **_face(persona)}
        if key.thread:
            params["thread_ts"] = key.thread
        return params

    # One queue per thread keeps its calls in the order they were asked for, however
    # many turns race; a call's place is taken synchronously when it is asked for (so a
    # background indicator cannot be overtaken), and an idle thread costs nothing.
    def _queue(self, key: ThreadKey) -> _Turn:
        name = str(key)
        before = self._tails.get(name)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[name] = mine
        return before, mine

    @contextlib.asynccontextmanager
    async def _in_turn(self, key: ThreadKey, turn: _Turn | None = None) -> AsyncIterator[None]:
        before, mine = turn or self._queue(key)
        try:
            if before is not None and not before.done():
                await asyncio.shield(before)
            yield
        finally:
            self._release(key, before, mine)

    def _release(self, key: ThreadKey, before: asyncio.Future[None] | None,
                 mine: asyncio.Future[None]) -> None:
        def done(_: object = None) -> None:
            if not mine.done():
                mine.set_result(None)
            if self._tails.get(str(key)) is mine:
                del self._tails[str(key)]

        # A call cancelled while waiting still lets the next one go only after its
        # predecessor, so order holds even then.
        if before is None or before.done():
            done()
        else:
            before.add_done_callback(done)

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


def _stop_streaming(live: _Live) -> None:
    live.done = True
    live.more.set()
    if live.edits is not None and not live.editing:
        live.edits.cancel()  # asleep between edits: nothing on the wire to wait for


def approval_blocks(text: str, out: Outbound) -> list[dict[str, Any]]:
    """The request text, Approve / Deny buttons naming the call, and how to answer by reply."""
    prompt = out.approval
    assert prompt is not None
    blocks: list[dict[str, Any]] = [_section(text), {
        "type": "actions",
        "block_id": f"approval:{prompt.call_id}"[:255],
        "elements": [
            _button("Approve", APPROVE_ACTION, prompt.call_id, "primary"),
            _button("Deny", DENY_ACTION, prompt.call_id, "danger"),
        ],
    }]
    if "`approve" not in text:  # the host's text usually says so already
        n = f" {prompt.number}" if prompt.number > 1 else ""
        blocks.append({"type": "context", "elements": [{
            "type": "mrkdwn",
            "text": f"Or reply `approve{n}` / `deny{n} <reason>` in this thread."}]})
    return blocks


def _button(label: str, action_id: str, value: str, style: str) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": label},
            "action_id": action_id, "value": value[:2000], "style": style}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text or " "}}


def _face(persona: Persona) -> dict[str, str]:
    """username / icon for a persona; the app's own face for the host's notices."""
    if persona == BOT_PERSONA or not persona.display_name:
        return {}
    face = {"username": persona.display_name}
    if persona.avatar_emoji:
        face["icon_emoji"] = persona.avatar_emoji
    elif persona.avatar_url:
        face["icon_url"] = persona.avatar_url
    return face


def _face_id(persona: Persona) -> str:
    """A persona as one token, to tell whether a placeholder still fits its speaker."""
    return f"{persona.display_name}|{persona.avatar}".replace(" ", "\u00a0")


def _mrkdwn(out: Outbound) -> str:
    # A model's words are Markdown; the host's own texts already use Slack's *bold*.
    return to_mrkdwn(out.text, italics="agent" in out.meta)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_ratelimited(exc: SlackApiError) -> bool:
    return exc.response.status_code == 429 or exc.response.get("error") == "ratelimited"


def _retry_after(exc: SlackApiError) -> float:
    headers = {k.lower(): v for k, v in (exc.response.headers or {}).items()}
    value = headers.get("retry-after", "1")
    if isinstance(value, list):
        value = value[0] if value else "1"
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0
