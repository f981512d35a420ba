"""Posts that carry their key, and finding them again: how a post is made exactly once.

Every message the poster sends carries Slack message metadata,
`{"event_type": "threadteam_post", "event_payload": {"key": <idempotency key>,
"part": <n>}}`, where `part` numbers the pieces of a post split for length. When
a post's outcome is unknown (the runner says it is `unsure` after a crash, or a
call timed out, lost its connection or met a 5xx after the request left), the
thread is read back with `include_all_metadata` and a message carrying the key
is adopted instead of posting again.

A thread is read with `conversations.replies` (oldest first, so only what was
posted since the doubtful attempt, less a margin for clocks, when that time is
known); a top-level post is looked for in `conversations.history` (newest first,
the latest pages).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from threadteam.bot.shapes import ThreadKey

__all__ = ["EVENT_TYPE", "find_posts", "metadata"]

EVENT_TYPE = "threadteam_post"
_MARGIN = 600.0  # seconds before a doubtful attempt to read from: clocks differ
_PAGE = 200  # messages a page (Slack's advice for conversations.*)
_PAGES = 25  # pages of a thread read at most: one of 5,000 messages is read to its end
_HISTORY_PAGES = 5  # pages of a channel read at most: its latest 1,000 messages

Send = Callable[..., Awaitable[Any]]


def metadata(key: str, part: int = 0) -> dict[str, Any]:
    """The message metadata that names a post (`key`) and which piece of it (`part`)."""
    return {"event_type": EVENT_TYPE, "event_payload": {"key": key, "part": part}}


async def find_posts(send: Send, where: ThreadKey, key: str, *,
                     since: float | None = None) -> dict[int, str]:
    """part -> ts of the messages in `where` that carry `key` (a bot's posts only).

    `send(method, **params)` makes the Web API calls (one attempt each, or under the
    retry policy: the caller's choice); `since` (epoch seconds) is when the post in
    doubt was sent, if known, so only what came after it is read.
    """
    params: dict[str, Any] = {"channel": where.channel, "include_all_metadata": True,
                              "limit": _PAGE}
    if since is not None:
        params["oldest"] = f"{max(0.0, since - _MARGIN):.6f}"
    method, pages = "conversations.history", _HISTORY_PAGES
    if where.thread:
        method, pages, params["ts"] = "conversations.replies", _PAGES, where.thread
    found: dict[int, str] = {}
    cursor = ""
    for _ in range(pages):
        answer = await send(method, **params, **({"cursor": cursor} if cursor else {}))
        for message in answer.get("messages") or ():
            part = _part(message, key)
            if part is not None:
                found.setdefault(part, str(message["ts"]))
        meta = answer.get("response_metadata") or {}
        cursor = (meta.get("next_cursor") or "") if isinstance(meta, dict) else ""
        if not cursor:
            break
    return found


def _part(message: Any, key: str) -> int | None:
    """Which part of post `key` `message` is, if it is one (posted by a bot, with our metadata)."""
    if not isinstance(message, dict) or not message.get("bot_id") or not message.get("ts"):
        return None
    meta = message.get("metadata")
    if not isinstance(meta, dict) or meta.get("event_type") != EVENT_TYPE:
        return None
    payload = meta.get("event_payload")
    if not isinstance(payload, dict) or payload.get("key") != key:
        return None
    part = payload.get("part", 0)
    return part if isinstance(part, int) and part >= 0 else None
