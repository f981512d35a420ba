"""Posting to Slack: the host's `Poster`, with order per thread.

Every post goes through `SlackApi.call` (rate limits waited out, transient
failures retried, then a `PlatformError` naming the method and Slack's error
code). Posts in one thread leave in the order they were asked for, however many
turns race. While an agent works, `placeholders` shows it, and the reply lands
in the agent's placeholder when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from threadteam.bot.memory import LocalMemory
from threadteam.bot.shapes import Memory, Outbound, ThreadKey
from threadteam.teams.persona import Persona

from .api import SlackApi, SlackError
from .blocks import approval_blocks, section
from .placeholders import Placeholders, message, truncate
from .text import LIMIT, split_text, to_mrkdwn

__all__ = ["SEEN_REACTION", "SlackPoster"]

_Turn = tuple["asyncio.Future[None] | None", "asyncio.Future[None]"]

SEEN_REACTION = "eyes"  # on a person's reply once the run has taken it


class SlackPoster:
    """Implements the host's Poster for Slack threads."""

    def __init__(self, api: SlackApi, *, memory: Memory | None = None,
                 limit: int = LIMIT) -> None:
        self.api = api
        self.limit = limit
        self.placeholders = Placeholders(api, memory=memory if memory is not None
                                         else LocalMemory(), limit=limit)
        self._tails: dict[str, asyncio.Future[None]] = {}  # thread -> its last queued call
        self._background: set[asyncio.Task[None]] = set()

    # -- the Poster protocol ------------------------------------------------------------
    async def post(self, out: Outbound) -> str:
        """Post `out` in its thread (split if long); the first part's ts, or the buttons' part.

        An agent's placeholder in the thread becomes the first part when the same
        persona speaks; anyone else's post takes the placeholder down first.
        """
        parts = split_text(_mrkdwn(out), self.limit) or [""]
        live = self.placeholders.finish(out.key)
        async with self._in_turn(out.key):
            into = await self.placeholders.claim(out, live)
            ids = []
            for i, part in enumerate(parts):
                buttons = out.approval is not None and i == len(parts) - 1
                if i == 0 and into:
                    params: dict[str, Any] = {"channel": out.key.channel, "ts": into, "text": part}
                    if buttons:
                        params["blocks"] = approval_blocks(part, out)
                    ids.append((await self.api.call("chat.update", **params))["ts"])
                    continue
                params = message(out.key, part, out.persona)
                if buttons:
                    params["blocks"] = approval_blocks(part, out)
                ids.append((await self.api.call("chat.postMessage", **params))["ts"])
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

    async def root(self, channel: str, text: str) -> str:
        """Post a top-level message as the app itself; its ts."""
        return (await self.api.call("chat.postMessage", channel=channel, text=text))["ts"]

    async def drain(self) -> None:
        """Wait for working indicators and reactions still on their way."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.placeholders.drain()

    async def stop_streaming(self) -> None:
        """Stop streaming into placeholders (shutdown: the turns are cut short)."""
        await self.placeholders.stop()

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
