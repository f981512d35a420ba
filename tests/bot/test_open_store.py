"""open_store: THREADTEAM_STORE URLs become the right store, bad ones a sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

import threadteam.bot.stores as stores
from threadteam.bot.errors import ConfigError
from threadteam.bot.stores import RedisStore, SQLiteStore, default_store_url, open_store


def test_public_surface() -> None:
    assert sorted(stores.__all__) == sorted([
        "RedisStore", "RunInfo", "SQLiteStore", "Store", "default_store_url", "open_store",
    ])


def test_sqlite_urls_absolute_and_relative(tmp_path: Path) -> None:
    absolute = open_store(f"sqlite:///{tmp_path}/tt.sqlite3")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == f"{tmp_path}/tt.sqlite3"
    relative = open_store("sqlite:///state/tt.sqlite3")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == "state/tt.sqlite3"


def test_redis_urls_and_prefix() -> None:
    assert isinstance(open_store("redis://localhost:6379/0"), RedisStore)
    assert isinstance(open_store("rediss://:pw@cache.example:6380/1"), RedisStore)
    shared = open_store("redis://localhost:6379/0?prefix=staging:")
    assert isinstance(shared, RedisStore)
    assert shared.prefix == "staging:"
    assert open_store("redis://localhost/0").prefix == "tt:"


@pytest.mark.parametrize("url", ["xyz", "", "sqlite://", "sqlite:///", "redis://", "postgres://h/db"])
def test_bad_urls_say_what_is_expected(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "THREADTEAM_STORE must be sqlite:///path or redis://host:port/db" in message
    assert repr(url) in message


def test_bad_url_error_hides_a_password() -> None:
    with pytest.raises(ConfigError) as caught:
        open_store("redi://user:hunter2@host:6379/0")
    assert "hunter2" not in str(caught.value)


async def test_default_store_url_opens_a_sqlite_file_in_the_state_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(stores.platformdirs, "user_state_dir", lambda app: str(tmp_path / app))
    url = default_store_url()
    assert url == f"sqlite:///{tmp_path}/threadteam/threadteam.sqlite3"
    store = open_store(url)
    await store.start()
    await store.aclose()
    assert (tmp_path / "threadteam" / "threadteam.sqlite3").exists()
