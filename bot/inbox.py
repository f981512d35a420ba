"""A platform's inbox: what a person did, made durable where it arrives, before the
platform hears it arrived.

Slack re-sends an event only if it was not answered with a 200 in time, so the 200
must wait until the event is safe. Waiting for the host to take it costs the host's
loop several store round trips, each queued behind every run ready to go on: under
load, seconds. The inbox needs one write, made on the receiver's own event loop
with a store connection of its own (`keep`); the host then takes the event on its
loop, and the entry is dropped once it has (`done`). What a process kept and did
not hand over before it died is handed over by the next one (`left`), in the order
it arrived; the host takes an event once, whoever hands it over twice.

Entries live in the store's key-value space under `inbox:<platform>`, keyed by the
platform's event id.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Awaitable, Callable

from .shapes import Inbound, ThreadKey
from .stores import open_store
from .stores.base import Store

__all__ = ["Inbox", "Kept"]


@dataclasses.dataclass(frozen=True, slots=True)
class Kept:
    """An inbound event in the inbox, and when it was kept (epoch seconds)."""

    inbound: Inbound
    at: float


class Inbox:
    """One platform's inbox: `keep` on the receiving loop; `done` and `left` on the host's."""

    def __init__(self, store: Store, platform: str,
                 open_own: Callable[[], Awaitable[Store]] | None = None) -> None:
        """`store`: the host's store (its loop); `open_own`: a started store on the same
        data for the receiving loop (None: `store` itself, for one loop)."""
        self._store, self._open_own = store, open_own
        self._own: Store | None = None
        self.namespace = f"inbox:{platform}"
        #: Seconds after which what is kept and not done is handed over again, and after
        #: which an event the host still cannot take is given up (logged as lost): longer
        #: than any store outage worth waiting out, short of retrying a poison event forever.
        self.retry_after = 5.0
        self.give_up_after = 3600.0

    @classmethod
    def at(cls, store: Store, platform: str, url: str) -> Inbox:
        """`platform`'s inbox on `store`, whose receiving loop opens its own connection to
        the store at `url` (the same data)."""
        async def open_own() -> Store:
            own = open_store(url)
            await own.start()
            return own

        return cls(store, platform, open_own)

    async def start(self) -> None:
        """On the receiving loop: open its own connection to the store."""
        if self._open_own is not None and self._own is None:
            self._own = await self._open_own()

    async def aclose(self) -> None:
        """On the receiving loop: close its connection."""
        own, self._own = self._own, None
        if own is not None:
            await own.aclose()

    async def keep(self, inbound: Inbound) -> None:
        """Store `inbound` (one write); raises the store's error if it could not."""
        store = self._own or self._store
        await store.kv_set(self.namespace, inbound.event_id, _encode(inbound, time.time()))

    async def done(self, event_id: str) -> None:
        """The host has the event: forget it."""
        await self._store.kv_delete(self.namespace, event_id)

    async def left(self, older_than: float = 0.0) -> list[Kept]:
        """What is kept and not done, oldest first; only entries kept more than
        `older_than` seconds ago (a live peer may still be handing the newer ones over)."""
        cutoff = time.time() - older_than
        kept = []
        for value in (await self._store.kv_items(self.namespace)).values():
            entry = _decode(value)
            if entry is not None and entry.at <= cutoff:
                kept.append(entry)
        return sorted(kept, key=lambda k: k.at)


def _encode(inbound: Inbound, at: float) -> str:
    fields = dataclasses.asdict(inbound)
    fields["key"] = str(inbound.key)
    return json.dumps({"at": at, "inbound": fields}, separators=(",", ":"))


def _decode(value: str) -> Kept | None:
    try:
        data = json.loads(value)
        fields = dict(data["inbound"])
        fields["key"] = ThreadKey.parse(fields["key"])
        fields["roles"] = tuple(fields.get("roles") or ())
        return Kept(Inbound(**fields), float(data["at"]))
    except (ValueError, KeyError, TypeError):  # written by another version: not ours to take
        return None
