"""Posting to Slack: the host's `Poster`, with order per thread and rate limits waited out.

Every Web API call goes through `SlackPoster.call`, the one place where
slack_sdk errors are translated: `ratelimited` (HTTP 429) is waited out for as
long as `Retry-After` says, as often as it takes (a post is never dropped);
connection failures and Slack 5xx are retried a few times with backoff; any other
refusal becomes a `PlatformError` naming the method and Slack's error code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import PlatformError
from bot.shapes import BOT_PERSONA, Outbound, ThreadKey
from teams.persona import Persona

from ._format import LIMIT, split_text, to_mrkdwn
from ._inbound import APPROVE_ACTION, DENY_ACTION

__all__ = ["SlackPoster"]

_Turn = tuple["asyncio.Future[None] | None", "asyncio.Future[None]"]

log = logging.getLogger("threadteam.slack")

WORKING_REACTION = "hourglass_flowing_sand"
_TRANSIENT_TRIES = 5


class SlackPoster:
    """Implements the host's Poster for Slack threads."""

    def __init__(self, client: AsyncWebClient, *, limit: int = LIMIT) -> None:
        self.client = client
        self.limit = limit
        self._tails: dict[str, asyncio.Future[None]] = {}  # thread -> its last queued call
        self._no_status: set[str] = set()  # channels where assistant.threads.setStatus fails
        self._reacted: set[ThreadKey] = set()  # thread roots wearing our "working" reaction
        self._background: set[asyncio.Task[None]] = set()

    # -- the Poster protocol ------------------------------------------------------------
    async def post(self, out: Outbound) -> str:
        """Post `out` in its thread (split if long); the first part's ts, or the buttons' part."""
        parts = split_text(_mrkdwn(out), self.limit) or [""]
        async with self._in_turn(out.key):
            ids = []
            for i, part in enumerate(parts):
                buttons = out.approval is not None and i == len(parts) - 1
                params = self._message(out.key, part, out.persona)
                if buttons:
                    params["blocks"] = approval_blocks(part, out)
                ids.append((await self.call("chat.postMessage", **params))["ts"])
            await self._clear_working(out.key)
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
        task = asyncio.ensure_future(self._show_working(key, persona, turn))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: self._release(key, *turn))  # even if never run

    async def _show_working(self, key: ThreadKey, persona: Persona, turn: _Turn) -> None:
        """The thread's status line, else an hourglass reaction on the run's root message.

        `assistant.threads.setStatus` only works where Slack shows assistant threads;
        where it fails once, that channel gets the reaction instead, taken off when the
        next post lands. A courtesy: never retried, never waited on for long.
        """
        async with self._in_turn(key, turn):
            with contextlib.suppress(SlackApiError, aiohttp.ClientError, TimeoutError):
                async with asyncio.timeout(5.0):
                    if key.channel not in self._no_status:
                        params = {"channel_id": key.channel, "thread_ts": key.thread,
                                  "status": "is thinking…", **_face(persona)}
                        try:
                            await self.client.api_call("assistant.threads.setStatus",
                                                       json=params)
                            return
                        except SlackApiError as exc:
                            if _is_ratelimited(exc):
                                return
                            self._no_status.add(key.channel)
                    if key not in self._reacted:
                        self._reacted.add(key)
                        await self.client.api_call("reactions.add", json={
                            "channel": key.channel, "timestamp": key.thread,
                            "name": WORKING_REACTION})

    async def drain(self) -> None:
        """Wait for working indicators still on their way."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

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

    async def _clear_working(self, key: ThreadKey) -> None:
        if key in self._reacted:
            self._reacted.discard(key)
            with contextlib.suppress(SlackApiError, aiohttp.ClientError, TimeoutError):
                await self.client.api_call("reactions.remove", json={
                    "channel": key.channel, "timestamp": key.thread, "name": WORKING_REACTION})


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
