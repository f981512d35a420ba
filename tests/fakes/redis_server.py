"""A real Redis (and a real Redis Cluster) for tests, and a `store` fixture that runs a
test against the stores.

Fixtures:
    redis_server_url  (session) URL of a Redis: $REDIS_URL, else one answering on
                      127.0.0.1:6379, else a throw-away `redis-server` started here.
    redis_url         the same URL, for one test.
    redis_prefix      a key prefix unique to one test; its keys are deleted afterwards.
    redis_cluster_url (session) URL of one node of a Redis Cluster: $REDIS_CLUSTER_URL,
                      else three throw-away `redis-server --cluster-enabled yes` joined
                      by `redis-cli --cluster create` (skipped, saying why, where the
                      installed Redis cannot make a cluster).
    cluster_prefix    a key prefix unique to one test on that cluster; deleted afterwards.
    store_factory     async `open()` -> a started store on this test's backing
                      (same SQLite file / same Redis prefix every call); closes them all.
                      Parametrised over ["sqlite", "redis"]; a module adds the cluster
                      with `pytestmark = ON_EVERY_STORE`.
    store             a started store on the same backing.
"""

from __future__ import annotations

import os
import re
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

#: Marks a module (or test) whose store tests also run on a three-node Redis Cluster.
ON_EVERY_STORE = pytest.mark.on_every_store


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "on_every_store: store tests run on SQLite, Redis and a Redis Cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The store fixtures' parameters, here rather than on the fixture so a module can
    # ask for the cluster too.
    if "store_factory" in metafunc.fixturenames:
        backends = ["sqlite", "redis"]
        if metafunc.definition.get_closest_marker("on_every_store"):
            backends.append("cluster")
        metafunc.parametrize("store_factory", backends, indirect=True)


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


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports free at once (held together, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def start_redis_server(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
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
    process, port = start_redis_server(tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def _cluster_tools() -> tuple[str, str]:
    """redis-server and redis-cli able to make a cluster, or a skip saying what is missing."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.fail("The Redis Cluster tests need redis-server and redis-cli: install them "
                    "(apt-get install redis-server) or set REDIS_CLUSTER_URL.", pytrace=False)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\d+)\.", version)
    if found is None or int(found.group(1)) < 7:
        # --cluster-port (a bus port of our choosing) came with Redis 7.
        pytest.skip(f"redis-server {version.strip()!r} is older than 7: no --cluster-port, "
                    "so no cluster on free ports here (set REDIS_CLUSTER_URL)")
    return binary, cli


def _cluster_ok(port: int) -> bool:
    """Whether the node on `port` says its cluster is up (every slot served)."""
    try:
        with redis.Redis(port=port, socket_connect_timeout=0.5, decode_responses=True) as node:
            info = node.execute_command("CLUSTER INFO")
    except redis.RedisError:
        return False
    if isinstance(info, dict):
        return bool(info.get("cluster_state") == "ok")
    return "cluster_state:ok" in str(info)


def start_redis_cluster(directory: Path, size: int = 3, *, join: bool = True,
                        extra: tuple[str, ...] = ()
                        ) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """`size` cluster-enabled redis-servers on free ports (bus ports too), joined into one
    cluster of primaries covering every slot unless `join` is False; (processes, ports).
    The caller stops the processes (`stop_servers`)."""
    binary, cli = _cluster_tools()
    ports = _free_ports(2 * size)
    ports, buses = ports[:size], ports[size:]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port, bus in zip(ports, buses, strict=True):
            node = directory / f"node-{port}"
            node.mkdir(parents=True, exist_ok=True)
            processes.append(subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-port", str(bus), "--cluster-config-file", str(node / "nodes.conf"),
                 "--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no",
                 "--dir", str(node), "--logfile", str(node / "redis.log"), *extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        _wait_for(lambda: all(_answers_ping("127.0.0.1", p) for p in ports), processes,
                  "the cluster's redis-servers did not start", directory)
        if join:
            made = subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=60)
            if made.returncode != 0:
                pytest.fail(f"redis-cli --cluster create failed:\n{made.stdout}{made.stderr}",
                            pytrace=False)
            _wait_for(lambda: all(_cluster_ok(p) for p in ports),
                      processes, "the cluster did not reach cluster_state:ok", directory)
    except BaseException:
        stop_servers(processes)
        raise
    return processes, ports


def _wait_for(check: Callable[[], bool], processes: list[subprocess.Popen[bytes]],
              what: str, directory: Path) -> None:
    deadline = time.monotonic() + 20
    while not check():
        if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
            logs = "".join(f.read_text()[-2000:] for f in directory.glob("*/redis.log"))
            pytest.fail(f"{what}:\n{logs}", pytrace=False)
        time.sleep(0.05)


def stop_servers(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop servers this module started (and only those)."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of one node of a three-node Redis Cluster the tests may write to."""
    if url := os.environ.get("REDIS_CLUSTER_URL"):
        yield url
        return
    processes, ports = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        stop_servers(processes)


def delete_cluster_keys(url: str, prefix: str) -> None:
    """Delete the keys under `prefix` on every primary of the cluster at `url`."""
    client = redis.RedisCluster.from_url(url)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000,
                                    target_nodes=redis.RedisCluster.PRIMARIES):
            client.delete(key)  # keys of several slots: one at a time
    finally:
        client.close()


@pytest.fixture
def cluster_prefix(redis_cluster_url: str) -> Iterator[str]:
    """A key prefix on the cluster no other test uses; its keys are deleted afterwards."""
    prefix = f"tt-test:{uuid.uuid4().hex}:"
    yield prefix
    delete_cluster_keys(redis_cluster_url, prefix)


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


@pytest_asyncio.fixture
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
        cluster = request.param == "cluster"
        url: str = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
        prefix: str = request.getfixturevalue("cluster_prefix" if cluster else "redis_prefix")

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
    """A started store; the test runs once with SQLite and once with Redis (and once on
    the cluster where the module asks for it)."""
    return await store_factory()
