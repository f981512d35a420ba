"""The SQLite store holds webhook tokens and everything people wrote: owner-only on disk."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import threadteam.bot.stores as stores
from threadteam.bot.stores import SQLiteStore, default_store_url, open_store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def lax_umask() -> Iterator[None]:
    """A umask that hides nothing, as a careless service manager may set."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


async def test_file_wal_shm_and_new_directories_are_owner_only(
        tmp_path: Path, lax_umask: None) -> None:
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "state" / "threadteam" / "threadteam.sqlite3"
    store = SQLiteStore(str(path))
    await store.start()
    try:
        assert await store.create_run("run-1", "slack:T1:C1:1.2", ['{"kind":"TaskStarted"}'])
        await store.kv_set("discord", "webhook:C1", "1234:a-webhook-token")
        files = {p.name: mode(p) for p in path.parent.iterdir()}
        assert files == {"threadteam.sqlite3": 0o600, "threadteam.sqlite3-wal": 0o600,
                         "threadteam.sqlite3-shm": 0o600}
    finally:
        await store.aclose()
    assert mode(tmp_path / "state") == 0o700
    assert mode(tmp_path / "state" / "threadteam") == 0o700
    assert mode(tmp_path) == 0o755  # not the store's to change


async def test_an_existing_readable_file_is_tightened(tmp_path: Path, lax_umask: None) -> None:
    path = tmp_path / "threadteam.sqlite3"
    sqlite3.connect(path).close()  # made by an older version
    os.chmod(path, 0o644)
    store = SQLiteStore(str(path))
    await store.start()
    try:
        await store.kv_set("discord", "webhook:C1", "1234:a-webhook-token")
        assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
            "threadteam.sqlite3": 0o600, "threadteam.sqlite3-wal": 0o600,
            "threadteam.sqlite3-shm": 0o600}
    finally:
        await store.aclose()


async def test_the_default_store_is_owner_only(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lax_umask: None) -> None:
    monkeypatch.setattr(stores.platformdirs, "user_state_dir", lambda app: str(tmp_path / app))
    store = open_store(default_store_url())
    await store.start()
    await store.aclose()
    assert mode(tmp_path / "threadteam") == 0o700
    assert mode(tmp_path / "threadteam" / "threadteam.sqlite3") == 0o600
