"""docker-compose.yml: its Redis requires the password from .env, and the bot's store URL
carries it. The compose file's own Redis command and health check are run here against
a real redis-server, and the bot's store connects with the URL compose gives it."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml

from threadteam.bot.config import Settings
from threadteam.bot.errors import PermanentStoreError
from threadteam.bot.stores import open_store

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?::\?([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation, as far as this file uses it: $$, ${VAR}, ${VAR:?error}."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, error = match.group(1), match.group(2)
        if error is not None and not env.get(name):
            raise ValueError(f"compose refuses to start: {error}")
        return env.get(name, "")
    return _VARIABLE.sub(one, value)


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def password() -> str:
    return secrets.token_hex(16)  # what .env.example tells people to use


@pytest.fixture
def compose_redis(tmp_path: Path, password: str) -> Iterator[int]:
    """redis-server started with the compose file's command (on a local port); its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("This test runs a real redis-server: apt-get install redis-server",
                    pytrace=False)
    command = [interpolate(arg, {"REDIS_PASSWORD": password})
               for arg in compose()["services"]["redis"]["command"]]
    assert command[0] == "redis-server"
    port = free_port()
    process = subprocess.Popen(
        [binary, *command[1:], "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(tmp_path), "--save", "", "--logfile", str(tmp_path / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, password=password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "redis.log").read_text()
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()


def test_env_example_documents_the_password_and_leaves_it_to_be_set() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    assert "REDIS_PASSWORD=" in lines  # present, and empty: no shared default password
    redis_service = compose()["services"]["redis"]
    assert "${REDIS_PASSWORD:?" in " ".join(redis_service["command"])
    with pytest.raises(ValueError, match="REDIS_PASSWORD"):
        [interpolate(arg, {"REDIS_PASSWORD": ""}) for arg in redis_service["command"]]
    assert "ports" not in redis_service  # reachable from the bot's network only


def test_compose_redis_refuses_strangers(compose_redis: int) -> None:
    with redis.Redis(port=compose_redis) as stranger, \
            pytest.raises(redis.AuthenticationError):
        stranger.set("tt:thread:x", "run")


def test_compose_health_check_passes_only_with_the_password(
        compose_redis: int, password: str, tmp_path: Path) -> None:
    # The check runs in the redis container: point its redis-cli at this server's port.
    shim = tmp_path / "bin" / "redis-cli"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {shutil.which("redis-cli")} -p {compose_redis} "$@"\n')
    shim.chmod(0o755)
    service = compose()["services"]["redis"]
    kind, check = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    container_env = {k: interpolate(v, {"REDIS_PASSWORD": password})
                     for k, v in service["environment"].items()}
    base = {"PATH": f"{shim.parent}:{os.environ['PATH']}"}
    assert subprocess.run(["sh", "-c", check], env={**base, **container_env},
                          timeout=10).returncode == 0
    assert subprocess.run(["sh", "-c", check], env=base, timeout=10).returncode != 0


async def test_the_bot_reaches_compose_redis_with_the_url_compose_gives_it(
        compose_redis: int, password: str) -> None:
    url = interpolate(compose()["services"]["bot"]["environment"]["THREADTEAM_STORE"],
                      {"REDIS_PASSWORD": password})
    assert urlsplit(url).password == password and urlsplit(url).hostname == "redis"
    url = url.replace("@redis:6379/", f"@127.0.0.1:{compose_redis}/")  # this host, not compose's
    store = open_store(Settings.from_env({"THREADTEAM_STORE": url}).store_url)
    await store.start()
    try:
        assert await store.create_run("run-1", "slack:T1:C1:1.2", ['{"kind":"TaskStarted"}'])
        assert await store.active_runs() == ["run-1"]
    finally:
        await store.aclose()


@pytest.mark.parametrize("userinfo", ["", ":not-the-password@"])
async def test_a_missing_or_wrong_password_is_permanent_and_not_shown(
        compose_redis: int, userinfo: str) -> None:
    store = open_store(f"redis://{userinfo}127.0.0.1:{compose_redis}/0")
    with pytest.raises(PermanentStoreError) as caught:
        await store.start()
    message = str(caught.value)
    assert "password" in message and f"127.0.0.1:{compose_redis}" in message
    assert "not-the-password" not in message
    await store.aclose()
