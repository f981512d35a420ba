"""A host with a team whose agent uses the fake tracker MCP server (tests/fakes/mcp_tracker.py),
its model the real `openai` client against the fake OpenAI server.

    async with desk_host(tmp_path, fake_openai, server_yaml) as desk:
        await desk.summon("close the VPN issue")
        ...
        desk.calls()      # what the MCP server saw: [{"tool": ..., "args": ...}, ...]
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.bot.helpers import say, summon, thread, write_teams
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.poster import RecordingPoster
from threadteam.bot.host import Host
from threadteam.bot.shapes import Handled, ThreadKey
from threadteam.bot.stores.base import Store
from threadteam.bot.stores.sqlite import SQLiteStore
from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.models import ModelPool

TRACKER = Path(__file__).with_name("mcp_tracker.py")


def stdio_server(log: Path, *, timeout: str = "10s", extra: str = "") -> str:
    """The `tracker:` entry of `mcp_servers:` for a stdio tracker writing its calls to `log`."""
    return (f"tracker:\n  command: [{sys.executable}, {TRACKER}]\n"
            f"  env: {{TRACKER_LOG: {log}}}\n  timeout: {timeout}\n{extra}")


def desk_team(servers: str, tools: str = "[{mcp: tracker}]", approvers: str = "") -> str:
    """A one-agent team on OpenAI whose clerk uses `tools`, ending on DONE."""
    return (f"name: desk\nmodel: openai:gpt-4o-mini\n{approvers}\n"
            f"mcp_servers:\n{textwrap.indent(servers, '  ')}\n"
            f"agents:\n  - name: clerk\n    persona: {{display_name: Clerk}}\n"
            f"    system_message: Keep the tracker tidy.\n    tools: {tools}\n"
            f"termination: {{text_mention: DONE}}\n")


@dataclass
class Desk:
    host: Host
    poster: RecordingPoster
    fake: FakeOpenAI
    store: Store
    log: Path
    key: ThreadKey

    async def summon(self, task: str = "tidy the tracker", user: str = "alice") -> None:
        await self.host.handle(summon(self.key, f"desk {task}", user))

    async def say(self, text: str, user: str = "alice") -> Handled:
        return await self.host.handle(say(self.key, text, user))

    def calls(self, tool: str | None = None) -> list[dict]:
        if not self.log.exists():
            return []
        seen = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in seen if tool is None or c["tool"] == tool]

    def tool_results(self) -> list[str]:
        """What the model was told each tool returned, in order."""
        last = self.fake.bodies()[-1]["messages"] if self.fake.bodies() else []
        return [m["content"] for m in last if m["role"] == "tool"]

    async def until(self, predicate, timeout: float = 20.0) -> None:
        await self.poster.wait_for(lambda p: predicate(self), timeout)

    def approvals(self) -> list[str]:
        return [p.text for p in self.poster.posts if p.key == self.key and "Approval #" in p.text]


def model_pool(fake: FakeOpenAI) -> ModelPool:
    return ModelPool(env={"OPENAI_API_KEY": "sk-test-" + "0" * 16, "OPENAI_BASE_URL": fake.url},
                     retry_base=0.001)


@asynccontextmanager
async def desk_host(tmp_path: Path, fake: FakeOpenAI, team: str, *, store: Store | None = None,
                    log: Path | None = None) -> AsyncIterator[Desk]:
    """A started host (SQLite unless `store` is given) with the team file `team`."""
    own = store is None
    if store is None:
        store = SQLiteStore(str(tmp_path / "state" / "threadteam.sqlite3"))
        await store.start()
    pool = model_pool(fake)
    poster = RecordingPoster()
    catalog = TeamCatalog.load(write_teams(tmp_path / "teams", team), strict=True)
    host = Host(store=store, catalog=catalog, models=pool, poster=poster)
    await host.start()
    try:
        yield Desk(host, poster, fake, store, log or tmp_path / "calls.jsonl", thread())
    finally:
        await host.aclose()
        await pool.aclose()
        if own:
            await store.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def http_tracker(log: Path, port: int | None = None) -> AsyncIterator[str]:
    """The tracker served over streamable HTTP on localhost (on `port`, else a free one);
    yields its URL."""
    port = port or free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(TRACKER), "--http", str(port),
        env={**os.environ, "TRACKER_LOG": str(log)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(20):
            while True:  # the server is up once it accepts a connection
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        await proc.wait()
