"""An in-memory Poster: the smallest chat platform, for host tests.

It records every post and edit in order, so tests assert what a person in the
thread would have seen: who posted what, in which thread, with which buttons.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from threadteam.bot.shapes import Outbound, ThreadKey
from threadteam.teams.persona import Persona


@dataclass
class Seen:
    """One post as it stands now (edits replace its text and drop its buttons)."""

    id: str
    key: ThreadKey
    name: str
    text: str
    buttons: bool
    notice: bool
    idempotency_key: str
    edited: bool = False
    unsure: bool = False  # the poster was told it may have posted this already


@dataclass
class RecordingPoster:
    posts: list[Seen] = field(default_factory=list)
    working_calls: list[tuple[ThreadKey, str]] = field(default_factory=list)
    streamed: list[tuple[ThreadKey, str, str]] = field(default_factory=list)  # (key, name, delta)
    fail_next: int = 0
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _times: dict[str, float] = field(default_factory=dict)

    async def post(self, out: Outbound) -> str:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("platform unavailable")
        seen = Seen(f"m{next(self._ids)}", out.key, out.persona.display_name, out.text,
                    out.approval is not None, out.notice, out.idempotency_key,
                    unsure=out.unsure)
        self.posts.append(seen)
        self._times[seen.id] = time.time()
        return seen.id

    def posted_at(self, message_id: str) -> float | None:
        """When the platform took the post (Slack's ts, a Discord snowflake's time)."""
        return self._times.get(message_id)

    async def edit(self, out: Outbound, message_id: str) -> None:
        for p in self.posts:
            if p.id == message_id:
                p.text, p.buttons, p.edited = out.text, False, True

    async def working(self, key: ThreadKey, persona: Persona) -> None:
        self.working_calls.append((key, persona.display_name))

    def stream(self, key: ThreadKey, persona: Persona):
        async def sink(delta: str) -> None:
            self.streamed.append((key, persona.display_name, delta))
        return sink

    def mention(self, user: str) -> str:
        return f"<@{user}>"

    # -- what tests look at ---------------------------------------------------------
    def in_thread(self, key: ThreadKey, *, notices: bool = False) -> list[tuple[str, str]]:
        """(display name, text) of the thread's posts, in order."""
        return [(p.name, p.text) for p in self.posts if p.key == key and (notices or not p.notice)]

    def notices(self, key: ThreadKey) -> list[str]:
        return [p.text for p in self.posts if p.key == key and p.notice]

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:
        """Wait until `predicate(self)` holds."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await asyncio.sleep(0.005)
