"""A reply shown as the model writes it: Slack's chat.startStream / appendStream / stopStream.

Where the thread's status line ("is thinking…") shows an agent at work, its text
still needs a message of its own to be seen before it is complete. A stream is
that message: opened under the persona (`username` / `icon_emoji` / `icon_url`)
with the first words, appended to as more come, stopped when the reply lands in
it (`chat.update` then makes it the reply, with the reply's key in its metadata).

What Slack needs and does, and what is checked rather than assumed:

- a stream in a channel names the person it is for (`recipient_user_id` and
  `recipient_team_id`): the person who started the thread (its root's author);
  a thread started by the bot itself (`/team`) names no one, and streams nothing;
- a workspace may refuse streams (`chat.startStream` answers an error): that
  channel is not asked again, and its replies fill a placeholder post instead;
- a workspace may stream under the app's own name whatever `username` says: the
  first stream in each workspace is read back, and where it does not show the
  persona's name it is taken down and that workspace gets placeholders;
- a stream carries no metadata until it stops, so one whose answer was lost (or
  that a crash left) is found as the bot's message in the thread that is still
  a stream (`streaming_state`) and carries no post's key: every other message
  this bot puts in a thread carries one (see posted.py).

Every call is a courtesy made once (`SlackApi.once`): a stream never holds up a post.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from threadteam.bot.shapes import ThreadKey
from threadteam.teams.persona import Persona

from .api import SlackApi, SlackError
from .posted import EVENT_TYPE

__all__ = ["CHUNK", "STREAM_NONCE", "Streams"]

log = logging.getLogger("threadteam.slack")

STREAM_NONCE = "stream:"  # how a stream's key in the adapter's memory begins
CHUNK = 12_000  # characters of markdown_text Slack takes in one call
_KEPT = 10_000  # threads whose recipient is remembered
_MARGIN = 600.0  # seconds before a doubtful stream to read the thread from: clocks differ
_PAGES = 25


class Streams:
    """Opens, feeds and stops streams, and remembers where Slack will not have them."""

    def __init__(self, api: SlackApi) -> None:
        self.api = api
        self._refused: set[str] = set()  # channels where chat.startStream was refused
        self._faces: dict[str, bool] = {}  # workspace -> does a stream show the persona?
        self._recipients: OrderedDict[str, str] = OrderedDict()  # thread -> its root's author

    def may(self, key: ThreadKey, persona: Persona) -> bool:
        """Is a stream worth trying in `key`'s thread for `persona`?"""
        return (bool(key.thread) and key.channel not in self._refused
                and self._faces.get(key.workspace) is not False
                and self._recipients.get(str(key)) != "")

    async def recipient(self, key: ThreadKey) -> str:
        """The person a stream in `key`'s thread is for: who started it ("" if the bot did,
        or Slack would not say)."""
        name = str(key)
        if name in self._recipients:
            return self._recipients[name]
        try:
            answer = await self.api.once("conversations.replies", channel=key.channel,
                                         ts=key.thread, limit=1)
        except SlackError as exc:
            log.debug("slack: could not read the root of %s (%s)", key, exc.code)
            if exc.answered and not exc.rate_limited:  # refused (a scope, a channel): for good
                self._recipients[name] = ""
            return ""
        root = next((m for m in answer.get("messages") or ()
                     if isinstance(m, dict) and m.get("ts") == key.thread), None)
        user = root.get("user") if root is not None and not root.get("bot_id") else ""
        self._recipients[name] = user if isinstance(user, str) else ""
        while len(self._recipients) > _KEPT:
            self._recipients.popitem(last=False)
        return self._recipients[name]

    async def start(self, key: ThreadKey, face: dict[str, Any], text: str) -> str:
        """Open a stream showing `text` under `face`; its ts, or "" where Slack will not
        stream. Raises SlackError when Slack may have opened it without saying so."""
        user = await self.recipient(key)
        if not user:
            return ""
        try:
            answer = await self.api.once(
                "chat.startStream", channel=key.channel, thread_ts=key.thread,
                recipient_team_id=key.workspace, recipient_user_id=user,
                markdown_text=text[:CHUNK], **face)
        except SlackError as exc:
            if exc.unknown:
                raise
            if exc.answered and not exc.rate_limited:
                self._refused.add(key.channel)
                log.info("slack: no streams in %s (%s); replies fill a placeholder post there",
                         key.channel, exc.code)
            return ""
        ts = answer.get("ts") if isinstance(answer.get("ts"), str) else ""
        return ts or ""

    async def shows(self, key: ThreadKey, ts: str, face: dict[str, Any]) -> bool:
        """Does the stream `ts` show under `face`? Read back once per workspace; while Slack
        will not say, it is given the benefit of the doubt (and asked the next time)."""
        known = self._faces.get(key.workspace)
        if known is not None or not face.get("username"):
            return known is not False
        try:
            answer = await self.api.once("conversations.replies", channel=key.channel,
                                         ts=key.thread, oldest=ts, latest=ts, inclusive=True,
                                         limit=10)
        except SlackError:
            return True
        message = next((m for m in answer.get("messages") or ()
                        if isinstance(m, dict) and m.get("ts") == ts), None)
        if message is None:
            return True
        shown = message.get("username") == face["username"]
        self._faces[key.workspace] = shown
        if not shown:
            log.info("slack: streams in workspace %s show the app's name, not the agent's; "
                     "replies fill placeholder posts there", key.workspace)
        return shown

    async def append(self, key: ThreadKey, ts: str, text: str) -> None:
        """Add `text` to the stream `ts` (SlackError if Slack refuses, e.g. it has ended)."""
        for at in range(0, len(text), CHUNK):
            await self.api.once("chat.appendStream", channel=key.channel, ts=ts,
                                markdown_text=text[at:at + CHUNK])

    async def stop(self, key: ThreadKey, ts: str) -> None:
        """End the stream `ts`, if it still runs; it stays in the thread as it is."""
        try:
            await self.api.once("chat.stopStream", channel=key.channel, ts=ts)
        except SlackError as exc:
            log.debug("slack: stopping stream %s in %s: %s", ts, key, exc.code)

    async def find(self, key: ThreadKey, ts: str, since: float | None) -> str:
        """The stream this bot left in `key`'s thread (`ts` when known), if it is there and
        still no post's: its ts, else "". SlackError if Slack would not say."""
        params: dict[str, Any] = {"channel": key.channel, "ts": key.thread,
                                  "include_all_metadata": True, "limit": 200}
        if since is not None:
            params["oldest"] = f"{max(0.0, since - _MARGIN):.6f}"
        found, cursor = "", ""
        for _ in range(_PAGES):
            page: dict[str, Any] = {"cursor": cursor} if cursor else {}
            answer = await self.api.once("conversations.replies", **params, **page)
            for message in answer.get("messages") or ():
                if _left_stream(message) and (not ts or message.get("ts") == ts):
                    found = str(message["ts"])
            meta = answer.get("response_metadata") or {}
            cursor = (meta.get("next_cursor") or "") if isinstance(meta, dict) else ""
            if not cursor:
                break
        return found


def _left_stream(message: Any) -> bool:
    """A bot's streamed message that no post has claimed (it carries no post's key)."""
    if not isinstance(message, dict) or not message.get("bot_id") or not message.get("ts"):
        return False
    meta = message.get("metadata")
    claimed = isinstance(meta, dict) and meta.get("event_type") == EVENT_TYPE
    return "streaming_state" in message and not claimed
