"""Exactly once: a nonce for each of the bot's own posts, and finding a post that may
already be in the thread.

The bot's own posts (Create Message) carry `nonce` = a hash of the post's
idempotency key and part number, with `enforce_nonce`: for a repeat within a few
minutes Discord returns the message it already made instead of a second one.

Webhook posts take no nonce, and Discord stores no nonce for later reading
either. So where a post may already be there without its id having come back (a
crashed process, a lost answer), the thread's last `LOOK_BACK` messages are read
and a post is adopted when it has the same author (this webhook under the same
persona's name, or the bot itself) and the same text, part by part. Text is
matched rather than an invisible marker added: a marker would cost characters
of the 2,000, travel with every copy and quote of the post, and zero-width
characters are not reliably kept by Discord's clients. The price is that an
identical post by the same persona among the last 50 messages could be mistaken
for this one; a look-up after a lost answer therefore considers only messages
newer than the last post this process saw succeed in the thread.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["LOOK_BACK", "adoptable", "nonce_of"]

LOOK_BACK = 50  # messages read back from the newest when looking for a post
_NONCE_BYTES = 12  # 24 hex characters: Discord takes nonces of up to 25


def nonce_of(key: str, part: int = 0) -> str:
    """The nonce of part `part` of the post keyed `key`: stable across processes."""
    digest = hashlib.blake2b(f"{key}#{part}".encode("utf-8", "replace"),
                             digest_size=_NONCE_BYTES)
    return digest.hexdigest()


def adoptable(messages: list[dict[str, Any]], chunks: list[str], *, webhook: str | None,
              username: str, bot: str, after: int | None = None) -> list[str]:
    """Ids of the posted parts of `chunks`, oldest first ([] when its first part is not there).

    `messages` is Discord's raw page, newest first. A webhook post counts when it
    came through `webhook` with `username`; the bot's own (`webhook` None) when its
    author is `bot`. Only messages after `after` count, when given.
    """
    mine = [m for m in reversed(messages) if _by(m, webhook, username, bot)
            and (after is None or _id(m) > after)]
    starts = [i for i, m in enumerate(mine) if _same(m.get("content"), chunks[0])]
    if not starts:
        return []
    start = starts[-1]  # the newest: an earlier twin is an earlier post
    ids = [str(mine[start]["id"])]
    for message, chunk in zip(mine[start + 1:], chunks[1:], strict=False):
        if not _same(message.get("content"), chunk):
            break
        ids.append(str(message["id"]))
    return ids


def _by(message: dict[str, Any], webhook: str | None, username: str, bot: str) -> bool:
    author = message.get("author") or {}
    if webhook is None:
        return not message.get("webhook_id") and str(author.get("id")) == bot
    return str(message.get("webhook_id")) == webhook and author.get("username") == username


def _same(content: Any, chunk: str) -> bool:
    # Discord trims the ends of what it stores.
    return isinstance(content, str) and content.strip() == chunk.strip()


def _id(message: dict[str, Any]) -> int:
    try:
        return int(message["id"])
    except (KeyError, TypeError, ValueError):
        return 0
