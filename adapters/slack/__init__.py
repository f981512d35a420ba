"""Slack: teams in Slack threads, through slack_bolt (Socket Mode or HTTP events).

    adapter.py       SlackAdapter, SlackConfig: lifecycle (start(host) / aclose()) and wiring
    receive.py       the HTTP endpoint / Socket Mode connection, on a thread of its own
    intake.py        an event is answered once the host has stored it (else 503: re-sent)
    inbound.py       Slack payloads -> Inbound
    poster.py        the host's Poster: posts in order per thread, each exactly once
    posted.py        a post's key in its message metadata, and finding it again
    placeholders.py  "is thinking…" status, placeholder posts, streamed replies
    blocks.py        Block Kit: approval buttons
    text.py          Markdown -> mrkdwn, splitting long posts
    directory.py     the host's Directory: user groups (roles), names
    api.py           the one caller of the Web API, under the one retry policy
    cli.py           `threadteam run slack`
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadteam.bot.lazy import exports

#: Where Slack posts events, slash commands and interactivity in HTTP mode.
EVENTS_PATH = "/slack/events"

if TYPE_CHECKING:
    from .adapter import SlackAdapter, SlackConfig
    from .api import SlackApi, SlackError
    from .directory import SlackDirectory
    from .poster import SlackPoster
    from .text import split_text, to_mrkdwn

__all__ = [
    "EVENTS_PATH", "SlackAdapter", "SlackApi", "SlackConfig", "SlackDirectory", "SlackError",
    "SlackPoster", "split_text", "to_mrkdwn",
]

# The adapter and its client library load when first used (see `exports`).
__getattr__ = exports(__name__, {
    "SlackAdapter": ".adapter",
    "SlackConfig": ".adapter",
    "SlackApi": ".api",
    "SlackError": ".api",
    "SlackDirectory": ".directory",
    "SlackPoster": ".poster",
    "split_text": ".text",
    "to_mrkdwn": ".text",
})
