"""One lock per key (thread, channel) that lives only while someone holds or awaits it."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Hashable

__all__ = ["KeyedLocks"]


class KeyedLocks:
    """`locks[key]` is the same `asyncio.Lock` for as long as anyone uses it.

    A bot sees many threads over its life; keeping a lock per thread forever
    would grow without bound, so unused locks are left to the garbage collector.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    def __getitem__(self, key: Hashable) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock
