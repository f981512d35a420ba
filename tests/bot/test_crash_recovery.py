"""Kill the console host with SIGKILL mid-run, start it again: the run completes, no post twice,
no human message lost — on SQLite and on Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

TEAM = """
name: relay
description: Two agents and you take turns.
agents:
  - {name: alpha, persona: {display_name: Alpha}, system_message: Say something.}
  - {name: beta, persona: {display_name: Beta}, system_message: Say something else.}
  - {name: you, human: true}
termination:
  max_messages: 8
"""


class Console:
    """A `threadteam chat` subprocess whose output we read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, env: dict[str, str], *args: str) -> Console:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "threadteam.adapters.cli", "chat", *args, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        return cls(proc)

    async def until(self, predicate, timeout: float = 30.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.lines):
                    line = await self.proc.stdout.readline()
                    if not line:
                        raise AssertionError("console exited early:\n" + "\n".join(self.lines))
                    self.lines.append(line.decode().rstrip("\n"))
        except TimeoutError:
            raise AssertionError("console output so far:\n" + "\n".join(self.lines)) from None

    async def type(self, text: str) -> None:
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()


def _waiting(lines: list[str], n: int) -> bool:
    return sum("the team is waiting for your reply" in line for line in lines) >= n


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_sigkill_mid_turn_then_resume(backend, tmp_path: Path, fake_openai, request):
    teams = tmp_path / "teams"
    teams.mkdir()
    (teams / "relay.yaml").write_text(TEAM)
    if backend == "sqlite":
        store = f"sqlite:///{tmp_path / 'runs.sqlite3'}"
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        store = f"{url}?prefix={prefix}"
    for n in range(1, 13):
        fake_openai.queue_text(f"reply number {n}.", chunks=4)
    fake_openai.chunk_delay = 0.1  # each answer takes ~0.4 s: time to kill mid-call
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-" + uuid.uuid4().hex,
           "OPENAI_BASE_URL": fake_openai.url, "THREADTEAM_MODEL": "openai:gpt-4o-mini",
           "THREADTEAM_TEAMS_DIR": str(teams), "THREADTEAM_STORE": store,
           "THREADTEAM_LEASE_TTL": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    first = await Console.start(env, "--team", "relay", "Plan the offsite.")
    await first.until(lambda lines: _waiting(lines, 1))
    await first.type("human one: keep it cheap")
    async with asyncio.timeout(20):  # alpha's next model call is under way
        while len(fake_openai.requests) < 3:
            await asyncio.sleep(0.01)
    first.proc.send_signal(signal.SIGKILL)
    await first.proc.wait()

    second = await Console.start(env, "--resume")
    await second.until(lambda lines: _waiting(lines, 1))
    await second.type("human two: and near a station")
    await second.until(lambda lines: any(line.startswith("threadteam: Finished") for line in lines))
    second.proc.stdin.close()
    assert await asyncio.wait_for(second.proc.wait(), 20) == 0

    posts = [line for line in first.lines + second.lines if line.startswith(("Alpha:", "Beta:"))]
    assert len(posts) == 6, posts
    assert len(set(posts)) == len(posts), f"a post appeared twice: {posts}"
    assert [p.split(":")[0] for p in posts] == ["Alpha", "Beta"] * 3
    last_request = fake_openai.requests[-1].body["messages"]
    said = [m["content"] for m in last_request if m["role"] == "user"]
    assert "human one: keep it cheap" in said and "human two: and near a station" in said
