"""Discord: teams summoned with /team or a mention, personas through webhooks, approvals by button.

    adapter.py     DiscordAdapter: lifecycle (start(host) / aclose()) and gateway events
    inbound.py     Discord messages and interactions -> Inbound
    poster.py      the host's Poster: posts in order per thread, split, pinging no one
    posted.py      exactly once: nonces, and finding a post already in the thread
    text.py        Discord's text rules: splitting at 2,000, names, emoji avatars
    directory.py   the host's Directory: roles by id, where a member may post
    api.py         the one place REST calls are retried, under the one retry policy
    cli.py         `threadteam run discord`
    client.py      the discord.py client, its intents, its errors as sentences
    commands.py    the /team slash command
    views.py       Approve / Approve for this run / Deny buttons that outlive a restart
    _webhooks.py   one webhook per channel, its token in memory only
    _catch_up.py   after a (re)connect, what people wrote in open runs' threads meanwhile
    _locks.py      one lock per thread or channel
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadteam.bot.lazy import exports

if TYPE_CHECKING:
    from .adapter import DiscordAdapter
    from .api import DiscordApi, DiscordError
    from .directory import DiscordDirectory
    from .poster import DiscordPoster

__all__ = ["DiscordAdapter", "DiscordApi", "DiscordDirectory", "DiscordError", "DiscordPoster"]

# The adapter and its client library load when first used (see `exports`).
__getattr__ = exports(__name__, {
    "DiscordAdapter": ".adapter",
    "DiscordApi": ".api",
    "DiscordError": ".api",
    "DiscordDirectory": ".directory",
    "DiscordPoster": ".poster",
})
