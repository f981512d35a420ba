"""A real Redis for tests, and a `store` fixture that runs a test against both stores.

Fixtures:
    redis_server_url  (session) URL of a Redis: $REDIS_URL, else one answering on
                      127.0.0.1:6379, else a throw-away `redis-server` started here.
    redis_url         the same URL, for one test.
    redis_prefix      a key prefix unique to one test; its keys are deleted afterwards.
    store_factory     async `open()` -> a started store on this test's backing
                      (same SQLite file / same Redis prefix every call); closes them all.
    store             a started store; parametrised over ["sqlite", "redis"].
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis

from threadteam.bot.stores import RedisStore, SQLiteStore, Store

StoreFactory = Callable[[], Awaitable[Store]]


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_redis_server(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "The Redis tests need a redis-server binary: install it "
            "(apt-get install redis-server, or brew install redis) or set REDIS_URL.",
            pytrace=False,
        )
    port = _free_port()
    log = directory / "redis.log"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory), "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while not _answers_ping("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            detail = log.read_text() if log.exists() else ""
            pytest.fail(f"redis-server on port {port} did not start:\n{detail}", pytrace=False)
        time.sleep(0.05)
    return process, port


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis server the tests may write to (under their own prefixes)."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    if _answers_ping("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    process, port = _start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The Redis URL for this test (share it only with `redis_prefix`)."""
    return redis_server_url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; only keys under it are deleted afterwards."""
    prefix = f"tt-test:{uuid.uuid4().hex}:"
    yield prefix
    # The server may be shared (REDIS_URL, a developer's own): never FLUSHDB it.
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


@pytest_asyncio.fixture(params=["sqlite", "redis"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """Opens started stores that all share this test's backing (file or prefix)."""
    opened: list[Store] = []
    if request.param == "sqlite":
        path = str(tmp_path / "state" / "threadteam.sqlite3")

        def make() -> Store:
            return SQLiteStore(path)
    else:
        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_prefix")

        def make() -> Store:
            return RedisStore(url, prefix)

    async def open_store() -> Store:
        store = make()
        await store.start()
        opened.append(store)
        return store

    yield open_store
    for store in reversed(opened):
        await store.aclose()


@pytest_asyncio.fixture
async def store(store_factory: StoreFactory) -> Store:
    """A started store; the test runs once with SQLite and once with Redis."""
    return await store_factory()
