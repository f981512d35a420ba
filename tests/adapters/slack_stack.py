"""The Slack stack for end-to-end tests: the fake Slack, the real adapter, a real Host.

The host runs on a SQLite store in tmp_path (or on the test Redis) with a ScriptedModel
(or a real provider client pointed at a fake server); the fake records every Web API
call, so tests assert what a person in the thread would see. The store is the real
one with outages on demand (`Stack.store.fail(...)`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest

from tests.fakes.slack import CHANNEL, FakeSlack, wait_until
from threadteam.adapters.slack import SlackAdapter, SlackConfig
from threadteam.bot.errors import StoreError
from threadteam.bot.host import Host
from threadteam.bot.inbox import Inbox
from threadteam.bot.memory import StoreMemory
from threadteam.bot.stores.redis import RedisStore
from threadteam.bot.stores.sqlite import SQLiteStore
from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.models import ModelPool
from threadteam.teams.models.scripted import ScriptedModel

INTERVIEW = """\
name: interview
description: An analyst asks you one question, then answers.
strategy: round_robin
agents:
  - name: analyst
    persona: {display_name: Analyst, avatar: "https://example.com/analyst.png"}
    system_message: Ask one question, then answer and say DONE.
  - name: you
    human: true
    persona: {display_name: You}
termination:
  any:
    - text_mention: {text: DONE, sources: [analyst]}
    - max_messages: 6
"""


class _Outage:
    """A store that fails on demand: `fail("append_external")` makes its next call raise
    StoreError, as an unreachable Redis or a locked SQLite file would."""

    failing: dict[str, int]
    slow: dict[str, asyncio.Event]  # method -> held until the event is set

    def fail(self, method: str, times: int = 1) -> None:
        self.failing[method] = self.failing.get(method, 0) + times

    def hold(self, method: str) -> asyncio.Event:
        """Make `method` wait (on either connection) until the returned event is set."""
        gate = self.slow[method] = asyncio.Event()
        return gate

    def _trip(self, method: str) -> None:
        if self.failing.get(method):
            self.failing[method] -= 1
            raise StoreError(f"{method}: the store is unreachable (an outage the test made)")

    async def first_sight(self, event_id: str, ttl: float = 86400.0) -> bool:
        self._trip("first_sight")
        return await super().first_sight(event_id, ttl)  # type: ignore[misc]

    async def create_run(self, run_id: str, thread: str, events: list[str]) -> bool:
        self._trip("create_run")
        return await super().create_run(run_id, thread, events)  # type: ignore[misc]

    async def append_external(self, run_id: str, events: list[str], *,
                              key: str | None = None) -> int:
        self._trip("append_external")
        return await super().append_external(run_id, events, key=key)  # type: ignore[misc]

    async def append(self, run_id: str, expected: int, events: list[str]) -> int:
        self._trip("append")
        return await super().append(run_id, expected, events)  # type: ignore[misc]

    async def put_post(self, key: str, message_id: str) -> None:
        self._trip("put_post")
        await super().put_post(key, message_id)  # type: ignore[misc]

    async def kv_set(self, namespace: str, key: str, value: str) -> None:
        self._trip("kv_set")
        gate = self.slow.get("kv_set")
        if gate is not None:  # the gate belongs to the loop that made it: poll it from here
            while not gate.is_set():
                await asyncio.sleep(0.01)
        await super().kv_set(namespace, key, value)  # type: ignore[misc]


class OutageSQLite(_Outage, SQLiteStore):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.failing, self.slow = {}, {}


class OutageRedis(_Outage, RedisStore):
    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix)
        self.failing, self.slow = {}, {}


@dataclass
class Stack:
    """The fake Slack, the adapter and a real Host sharing one ScriptedModel."""

    fake: FakeSlack
    adapter: SlackAdapter
    host: Host
    model: ScriptedModel
    store: OutageSQLite | OutageRedis

    async def idle(self) -> None:
        """Everything settled: acks' work done, no run mid-turn, echoes delivered."""
        for _ in range(3):
            await self.adapter.settle()
            await self.host.idle()
            await self.fake.drain()

    def thread(self, ts: str, channel: str = CHANNEL) -> list[dict]:
        return self.fake.thread(channel, ts)

    async def finished(self, ts: str, channel: str = CHANNEL, within: float = 10.0) -> list[dict]:
        await wait_until(lambda: any(m["text"].startswith("Finished")
                                     for m in self.thread(ts, channel)),
                         within, "the run's Finished notice")
        return self.thread(ts, channel)

    async def run_events(self, ts: str, channel: str = CHANNEL) -> list[dict]:
        run_id = await self.host.store.run_for_thread(f"slack:T0FAKE:{channel}:{ts}")
        assert run_id, "no run in that thread"
        return [json.loads(e) for e in await self.host.store.load(run_id)]


@pytest.fixture
async def stack_factory(fake_slack: FakeSlack, tmp_path: Path,
                        request: pytest.FixtureRequest) -> AsyncIterator:
    built: list[Stack] = []

    async def build(mode: str = "http", *steps, model_env: dict[str, str] | None = None,
                    teams: Mapping[str, str] = MappingProxyType({}),
                    store: str = "sqlite") -> Stack:
        """`steps` script the model, or `model_env` configures a real provider's client;
        `teams` adds team files (name -> YAML) to the built-in ones and `interview`;
        `store` is "sqlite" (a file in tmp_path) or "redis" (the test Redis)."""
        teams_dir = tmp_path / "teams"
        teams_dir.mkdir(exist_ok=True)
        for name, text in {"interview": INTERVIEW, **teams}.items():
            (teams_dir / f"{name}.yaml").write_text(text)
        model = ScriptedModel(steps)
        runs: OutageSQLite | OutageRedis = (
            OutageSQLite(str(tmp_path / "runs.sqlite3")) if store == "sqlite" else
            OutageRedis(request.getfixturevalue("redis_url"),
                        request.getfixturevalue("redis_prefix")))
        await runs.start()

        async def open_own() -> OutageSQLite | OutageRedis:
            # The receiver's own connection to the same data, down when the store is.
            own = (OutageSQLite(str(tmp_path / "runs.sqlite3")) if store == "sqlite" else
                   OutageRedis(request.getfixturevalue("redis_url"),
                               request.getfixturevalue("redis_prefix")))
            own.failing = runs.failing
            own.slow = runs.slow
            await own.start()
            return own

        inbox = Inbox(runs, "slack", open_own)
        inbox.retry_after = 0.3
        config = SlackConfig.from_env(fake_slack.env(socket_mode=mode == "socket"))
        adapter = SlackAdapter(config, memory=StoreMemory(runs, "slack"), inbox=inbox)
        models = ModelPool(env=model_env) if model_env else \
            ModelPool(env={"THREADTEAM_MODEL": "scripted"}, overrides={"scripted": model})
        host = Host(store=runs, catalog=TeamCatalog.load(teams_dir, strict=True), models=models,
                    poster=adapter.poster, directory=adapter.directory)
        await host.start()
        await adapter.start(host, port=0, bind="127.0.0.1")
        if mode == "http":
            fake_slack.events_url = adapter.url
        else:
            await wait_until(lambda: fake_slack.sockets, what="the Socket Mode connection")
        stack = Stack(fake_slack, adapter, host, model, runs)
        built.append(stack)
        return stack

    yield build
    for s in built:
        await s.adapter.stop()
        await s.host.aclose()
        await s.adapter.aclose()
        await s.host.store.aclose()
        await s.host.models.aclose()
