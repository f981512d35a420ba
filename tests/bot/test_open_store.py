"""open_store: THREADTEAM_STORE URLs become the right store, bad ones a sentence."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import threadteam.bot.stores as stores
from threadteam.bot.errors import ConfigError, StoreError
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



@pytest.fixture
def socket_redis(tmp_path: Path) -> Iterator[Path]:
    """A real redis-server listening only on a unix socket; the socket's path."""
    socket_path = tmp_path / "redis.sock"
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("This test runs a real redis-server: apt-get install redis-server",
                    pytrace=False)
    process = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(socket_path), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(unix_socket_path=str(socket_path)) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        yield socket_path
    finally:
        process.terminate()
        process.wait(timeout=5)


async def test_a_redis_on_a_unix_socket(socket_redis: Path, tmp_path: Path) -> None:
    # THREADTEAM_STORE accepts unix://; the store must open it too.
    store = open_store(f"unix://{socket_redis}?db=0&prefix=sock:")
    assert isinstance(store, RedisStore) and store.prefix == "sock:"
    await store.start()
    try:
        assert await store.create_run("run-1", "slack:T1:C1:1.2", ["{}"])
        assert await store.load("run-1") == ["{}"]
    finally:
        await store.aclose()
    missing = open_store(f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(StoreError, match=re.escape(f"{tmp_path}/nothing.sock")):
        await missing.start()
    await missing.aclose()


@pytest.mark.parametrize(("query", "cluster"), [
    ("", None), ("?cluster=true", True), ("?cluster=false", False), ("?cluster=auto", None),
    ("?prefix=a:&cluster=yes", True)])
def test_a_redis_url_may_say_whether_it_is_a_cluster(query: str, cluster: bool | None) -> None:
    store = open_store(f"redis://127.0.0.1:7101/0{query}")
    assert isinstance(store, RedisStore)
    assert store.cluster is cluster


def test_a_bad_cluster_flag_is_one_line_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"cluster= must be true or false, got 'maybe'"):
        open_store("redis://:hunter2@127.0.0.1:7101/0?cluster=maybe")
