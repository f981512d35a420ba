"""Slack payloads -> `Inbound`, and the middleware that drops what is not a person's act.

Ids: a message is named `team:channel:ts` rather than by its envelope's
event_id, because Slack sends one message twice (as `app_mention` and as
`message`) under two event ids; naming the message makes either copy count once.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import Any

from threadteam.bot.commands import parse_command
from threadteam.bot.shapes import Inbound, InboundKind, ThreadKey

__all__ = [
    "ALWAYS_ACTION", "APPROVE_ACTION", "DENY_ACTION", "RecentIds", "button_inbound", "command_key",
    "is_from_bot", "message_inbound",
    "strip_mention", "unescape",
]

PLATFORM = "slack"
APPROVE_ACTION = "threadteam_approve"
DENY_ACTION = "threadteam_deny"
ALWAYS_ACTION = "threadteam_approve_always"  # "Approve for this run"
# A thread_broadcast is a person's reply also sent to the channel, a file_share one
# with a file attached: both are still what a person wrote.
_HUMAN_SUBTYPES = (None, "thread_broadcast", "file_share")


def unescape(text: str) -> str:
    """Slack's text as a person typed it: `&lt;` `&gt;` `&amp;` back to `<` `>` `&`."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def strip_mention(text: str, bot_user_id: str) -> str:
    """The text without a leading `<@BOT>` (the way people address the bot)."""
    return re.sub(rf"^\s*<@{re.escape(bot_user_id)}(?:\|[^>]*)?>[\s:,]*", "", text or "").strip()


def is_from_bot(event: dict[str, Any], bot_user_id: str) -> bool:
    """True for posts by any bot or app, including this one's persona posts."""
    return bool(event.get("bot_id") or event.get("subtype") == "bot_message"
                or event.get("bot_profile") or event.get("user") == bot_user_id)


def _team(body: dict[str, Any], event: dict[str, Any]) -> str:
    return _text(body, "team_id") or _text(event, "team")


def _text(payload: Any, field: str) -> str:
    """`payload[field]` if it is a string; "" for anything else (absent, a number, a list)."""
    value = payload.get(field) if isinstance(payload, dict) else None
    return value if isinstance(value, str) else ""


def message_inbound(body: dict[str, Any], bot_user_id: str) -> Inbound | None:
    """An `app_mention` or `message` event as a summon or a reply; None when it is neither.

    - a mention outside a thread (or a top-level DM) summons a team into its own thread;
    - a person's message inside a thread is a reply (the host ignores threads without a run);
    - a mention inside a thread is a reply when it is a thread command
      (`@threadteam approve`), else a summon: the host starts a run there, or, if the
      thread has one, hands the text to it as the person's message.
    The plain `message` copy of a mention is dropped: its `app_mention` twin carries it.
    """
    event = body.get("event")
    if not isinstance(event, dict) or event.get("subtype") not in _HUMAN_SUBTYPES \
            or is_from_bot(event, bot_user_id):
        return None
    user, ts, channel = _text(event, "user"), _text(event, "ts"), _text(event, "channel")
    if not (user and ts and channel):
        return None
    team = _team(body, event)
    raw = _text(event, "text")  # a number or a list where text belongs counts as no text
    text = unescape(strip_mention(raw, bot_user_id))
    thread_ts = _text(event, "thread_ts")
    in_thread = bool(thread_ts) and thread_ts != ts
    is_dm = event.get("channel_type") == "im"
    kind: InboundKind
    if event.get("type") == "app_mention":
        kind = "reply" if in_thread and parse_command(text) is not None else "summon"
    elif is_dm:
        kind = "reply" if in_thread else "summon"  # DMs have no app_mention: all is for us
    elif f"<@{bot_user_id}" in raw or not in_thread:
        return None  # the app_mention copy carries it, or it is channel chatter
    else:
        kind = "reply"
    if in_thread and not text:
        return None  # a bare mention inside a thread says nothing to the run
    key = ThreadKey(PLATFORM, team, channel, thread_ts if in_thread else ts)
    return Inbound(key=key, user=user, text=text, kind=kind, event_id=f"{team}:{channel}:{ts}")


def button_inbound(body: dict[str, Any]) -> Inbound | None:
    """A press of Approve / Approve for this run / Deny under an approval post."""
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        return None
    action = actions[0]
    verdict = {APPROVE_ACTION: "approve", DENY_ACTION: "deny", ALWAYS_ACTION: "approve_always"
               }.get(_text(action, "action_id"))
    container, message = body.get("container"), body.get("message")
    channel = _text(container, "channel_id") or _text(body.get("channel"), "id")
    message_ts = _text(container, "message_ts") or _text(message, "ts")
    thread = _text(message, "thread_ts") or _text(container, "thread_ts") or message_ts
    user = body.get("user")
    user_id = _text(user, "id")
    if not (verdict and channel and thread and user_id):
        return None
    team = _text(body.get("team"), "id") or _text(user, "team_id")
    name = _text(user, "name") or _text(user, "username")
    key = ThreadKey(PLATFORM, team, channel, thread)
    event_id = f"{team}:{channel}:{message_ts}:{_text(action, 'action_ts')}:{user_id}"
    return Inbound(key=key, user=user_id, text="", kind="button", event_id=event_id,
                   display_name=name, action=verdict, call_id=_text(action, "value") or None)


def command_key(command: dict[str, Any], thread_ts: str) -> ThreadKey:
    """The thread a slash-command summon lives in: under the root post we made for it."""
    return ThreadKey(PLATFORM, command.get("team_id", ""), command["channel_id"], thread_ts)


class RecentIds:
    """Ids seen in the last `ttl` seconds (bounded), to answer Slack's re-deliveries early.

    The host de-duplicates durably through the store; this only saves the work
    (and the store round trip) for a retry this process has already taken. Slack's
    last re-delivery comes five minutes after the first try: `ttl` outlasts it.
    """

    def __init__(self, ttl: float = 600.0, size: int = 50_000) -> None:
        self.ttl = ttl
        self.size = size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first(self, key: str) -> bool:
        """True the first time `key` is seen (within ttl); it is remembered either way."""
        if key in self:
            return False
        self.add(key)
        return True

    def add(self, key: str) -> None:
        """Remember `key` for `ttl` seconds."""
        self._expire()
        self._seen[key] = time.monotonic()

    def __contains__(self, key: object) -> bool:
        self._expire()
        return key in self._seen

    def _expire(self) -> None:
        now = time.monotonic()
        while self._seen and (len(self._seen) > self.size
                              or next(iter(self._seen.values())) < now - self.ttl):
            self._seen.popitem(last=False)
