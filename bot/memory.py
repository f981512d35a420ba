"""`Memory` for adapters: a namespace of the store's small key-value table, or a dict."""

from __future__ import annotations

from .stores.base import Store

__all__ = ["LocalMemory", "StoreMemory"]


class StoreMemory:
    """An adapter's values in the run store, so they outlive a restart and are shared
    by every process on the store."""

    def __init__(self, store: Store, namespace: str) -> None:
        self._store, self._namespace = store, namespace

    async def get(self, key: str) -> str | None:
        """The value stored under `key`, if any."""
        return await self._store.kv_get(self._namespace, key)

    async def set(self, key: str, value: str) -> None:
        """Store `value` under `key`."""
        await self._store.kv_set(self._namespace, key, value)


class LocalMemory:
    """Values in this process only: for an adapter used without a host's store."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        """The value stored under `key`, if any."""
        return self._values.get(key)

    async def set(self, key: str, value: str) -> None:
        """Store `value` under `key`."""
        self._values[key] = value
