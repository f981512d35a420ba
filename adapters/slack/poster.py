"""Posting to Slack: the host's `Poster`, with order per thread, each post exactly once.

Every post goes through the one caller of the Web API (rate limits waited out,
transient failures retried, then a `PlatformError` naming the method and Slack's
error code) and carries its idempotency key in its message metadata; a post whose
outcome is unknown is looked for by that key before it is sent again (`posted`).
Posts in one thread leave in the order they were asked for, however many turns
race. While an agent works, `placeholders` shows it, and the reply lands in the
agent's placeholder when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

from threadteam.bot.memory import LocalMemory
from threadteam.bot.shapes import Memory, Outbound, ThreadKey
from threadteam.teams.persona import Persona

from .api import SlackApi, SlackError
from .blocks import approval_blocks, section
from .placeholders import Placeholders, message, truncate
from .posted import find_posts, metadata
from .text import LIMIT, split_text, to_mrkdwn

__all__ = ["SEEN_REACTION", "SlackPoster"]

_Turn = tuple["asyncio.Future[None] | None", "asyncio.Future[None]"]

log = logging.getLogger("threadteam.slack")

SEEN_REACTION = "eyes"  # on a person's reply once the run has taken it
_DOUBTS_KEPT = 10_000  # keys of failed posts remembered, to look for before a retry
_THREADS_KEPT = 10_000  # threads known (here) to be noted in memory as posted in
# Set while the host handles an event Slack sent again: whatever it posts then may have
# been posted by the earlier try (which stored nothing, or was cut short by a crash).
_DOUBTING: ContextVar[bool] = ContextVar("slack_doubting", default=False)


class SlackPoster:
    """Implements the host's Poster for Slack threads."""

    def __init__(self, api: SlackApi, *, memory: Memory | None = None,
                 limit: int = LIMIT) -> None:
        self.api = api
        self.limit = limit
        #: Where the adapter remembers placeholders and the threads it has posted in.
        self.memory: Memory = memory if memory is not None else LocalMemory()
        self.placeholders = Placeholders(api, memory=self.memory, limit=limit)
        self._tails: dict[str, asyncio.Future[None]] = {}  # thread -> its last queued call
        self._doubtful: OrderedDict[str, None] = OrderedDict()  # keys whose post failed
        self._marked: OrderedDict[str, None] = OrderedDict()  # threads noted as posted in
        self._background: set[asyncio.Task[None]] = set()

    # -- the Poster protocol ------------------------------------------------------------
    async def post(self, out: Outbound) -> str:
        """Post `out` in its thread (split if long); the first part's ts, or the buttons' part.

        Every part carries `out`'s key in its metadata. When an earlier try of this post
        may have reached Slack (`out.unsure`, or a try here that failed not knowing), the
        thread is read first and the parts found there are adopted, not posted again.
        An agent's placeholder in the thread becomes the first part when the same
        persona speaks; anyone else's post takes the placeholder down first.
        """
        parts = split_text(_mrkdwn(out), self.limit) or [""]
        live = self.placeholders.finish(out.key)
        key = out.idempotency_key
        try:
            async with self._in_turn(out.key):
                doubt = out.unsure or key in self._doubtful or _DOUBTING.get()
                found = await self._already(out) if doubt else {}
                into, stream = await self.placeholders.claim(out, live,
                                                             adopted=found.get(0, ""))
                if len(found) < len(parts):
                    await self._mark(out.key)
                ids = []
                for i, part in enumerate(parts):
                    if i in found:
                        ids.append(found[i])
                        continue
                    buttons = out.approval is not None and i == len(parts) - 1
                    if i == 0 and into and (
                            ts := await self._replace(into, out, part, buttons, stream)):
                        ids.append(ts)
                        continue
                    params = {**message(out.key, part, out.persona), "metadata": metadata(key, i)}
                    if buttons:
                        params["blocks"] = approval_blocks(part, out)
                    ids.append(await self._post_once(out.key, key, i, params))
                await self.placeholders.posted(out.key)
        except BaseException:
            # Failed, cancelled: some part may be up. The next try of this key looks first,
            # and the placeholders it claimed stay remembered (one may now be that part).
            self.placeholders.unsettled(out.key)
            self._doubtful[key] = None
            while len(self._doubtful) > _DOUBTS_KEPT:
                self._doubtful.popitem(last=False)
            raise
        self._doubtful.pop(key, None)
        # An approval's buttons sit on its last part, and that is the message an edit must
        # reach to take them away; any other post is known by its first part.
        return ids[-1] if out.approval is not None else ids[0]

    async def edit(self, out: Outbound, message_id: str) -> None:
        """Replace a message's text in place; the blocks are rewritten so no buttons remain."""
        text = truncate(_mrkdwn(out), self.limit)
        async with self._in_turn(out.key):
            await self.api.call("chat.update", channel=out.key.channel, ts=message_id, text=text,
                                blocks=[section(text)])

    async def working(self, key: ThreadKey, persona: Persona) -> None:
        """Show that `persona` is working, without holding up the model call that follows.

        The indicator goes out in the background but in the thread's queue, so it
        can never land after the reply it announces.
        """
        if not key.thread:
            return
        turn = self._queue(key)  # taken now, so the reply that follows queues behind it
        live = self.placeholders.begin(key, persona)

        async def show() -> None:
            async with self._in_turn(key, turn):
                await self.placeholders.show(key, live)

        task = asyncio.ensure_future(show())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: self._release(key, *turn))  # even if never run

    def stream(self, key: ThreadKey, persona: Persona) -> Callable[[str], Awaitable[None]] | None:
        """Where the model's text goes while `persona` answers: into its placeholder."""
        return self.placeholders.sink(key, persona)

    def mention(self, user: str) -> str:
        """A Slack user mention."""
        return f"<@{user}>"

    # -- beyond the protocol -------------------------------------------------------------
    @staticmethod
    @contextlib.contextmanager
    def doubting() -> Iterator[None]:
        """Within this block (and what it awaits), every post may already be up: the
        host is handling an event Slack sent again after an earlier try failed or died."""
        token = _DOUBTING.set(True)
        try:
            yield
        finally:
            _DOUBTING.reset(token)

    def acknowledge(self, key: ThreadKey, ts: str) -> None:
        """React 👀 to a person's message the run has taken (in the background)."""
        async def react() -> None:
            with contextlib.suppress(SlackError):
                await self.api.once("reactions.add", channel=key.channel, timestamp=ts,
                                    name=SEEN_REACTION)

        task = asyncio.ensure_future(react())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def ephemeral(self, key: ThreadKey, user: str, text: str) -> None:
        """Show `text` to `user` alone, in the thread (refusals, errors)."""
        params: dict[str, Any] = {"channel": key.channel, "user": user,
                                  "text": truncate(to_mrkdwn(text, italics=False), self.limit)}
        if key.thread:
            params["thread_ts"] = key.thread
        await self.api.call("chat.postEphemeral", **params)

    async def root(self, channel: str, text: str, key: str = "") -> str:
        """Post a top-level message as the app itself; its ts. With `key`, a try whose
        answer was lost is looked for in the channel rather than posted again."""
        params: dict[str, Any] = {"channel": channel, "text": text}
        if not key:
            return (await self.api.call("chat.postMessage", **params))["ts"]
        params["metadata"] = metadata(key)
        return await self._post_once(ThreadKey("slack", "", channel, ""), key, 0, params)

    async def drain(self) -> None:
        """Wait for working indicators and reactions still on their way."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.placeholders.drain()

    async def stop_streaming(self) -> None:
        """Stop streaming into placeholders (shutdown: the turns are cut short)."""
        await self.placeholders.stop()

    # -- exactly once ------------------------------------------------------------------------
    async def _already(self, out: Outbound) -> dict[int, str]:
        """The parts of `out` already in its thread, by their key (part -> ts).

        A thread this bot never posted in (by memory, which every process on the store
        shares) has none, and Slack is not asked: a run's first post is "unsure" until
        its driver has recorded it, and reading a thread is one of Slack's scarcer calls.
        """
        if not await self._posted_in(out.key):
            return {}
        try:
            return await find_posts(self.api.call, out.key, out.idempotency_key)
        except SlackError as exc:
            if exc.unknown or exc.rate_limited:
                raise  # Slack is not answering: no post before we know, and `retry` asks again
            # Refused (a missing scope, a channel the bot has not joined): there is no
            # knowing, and a post twice is better than a post lost.
            log.warning("slack: could not look for %s in %s (%s); posting it", out.idempotency_key,
                        out.key, exc.code)
            return {}

    async def _posted_in(self, key: ThreadKey) -> bool:
        """Has any post been tried in `key`'s thread (by any process on this memory)?"""
        if str(key) in self._marked:
            return True
        try:
            return bool(await self.memory.get(f"posted:{key}"))
        except Exception:  # no knowing: look in the thread
            return True

    async def _mark(self, key: ThreadKey) -> None:
        """Remember, before the first post in a thread is tried, that one was."""
        name = str(key)
        if name in self._marked:
            return
        try:
            await self.memory.set(f"posted:{key}", "1")
        except Exception as exc:  # the post goes out all the same; only a crash now would dupe
            log.warning("slack: could not note a post in %s (%s)", key, type(exc).__name__)
            return
        self._marked[name] = None
        while len(self._marked) > _THREADS_KEPT:
            self._marked.popitem(last=False)

    async def _replace(self, placeholder: str, out: Outbound, text: str, buttons: bool,
                       stream: bool = False) -> str:
        """Turn the placeholder into `out`'s first part (its key too); "" if it is gone.

        A stream's text is blocks, which Slack keeps unless they are replaced."""
        params: dict[str, Any] = {"channel": out.key.channel, "ts": placeholder, "text": text,
                                  "metadata": metadata(out.idempotency_key, 0)}
        if buttons:
            params["blocks"] = approval_blocks(text, out)
        elif stream:
            params["blocks"] = [section(text)]
        try:
            return str((await self.api.call("chat.update", **params))["ts"])
        except SlackError as exc:
            if exc.code == "message_not_found":  # someone deleted it: post instead
                return ""
            if stream and exc.answered and not exc.unknown and not exc.rate_limited:
                # A stream Slack will not turn into the reply: it goes, the reply is posted.
                await self.placeholders.discard(out.key, placeholder, stream=True)
                return ""
            raise

    async def _post_once(self, where: ThreadKey, key: str, part: int,
                         params: dict[str, Any]) -> str:
        """chat.postMessage; after a try whose outcome is unknown, the part is looked for
        in `where` before it is sent again."""
        async def find(since: float | None) -> dict[str, str] | None:
            ts = (await find_posts(self.api.attempt, where, key, since=since)).get(part)
            return {"ts": ts} if ts else None

        answer = await self.api.call_keyed("chat.postMessage", find, **params)
        return str(answer["ts"])

    # -- the thread's queue ----------------------------------------------------------------
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


def _mrkdwn(out: Outbound) -> str:
    # A model's words are Markdown; the host's own texts already use Slack's *bold*.
    return to_mrkdwn(out.text, italics="agent" in out.meta)
