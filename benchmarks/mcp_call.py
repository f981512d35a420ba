"""What one MCP tool call costs through threadteam, and what 100 runs sharing a server hold.

    .venv/bin/python benchmarks/mcp_call.py [--calls N] [--runs N]

1. Latency of one call of a read-only tool of the tracker server (tests/fakes/mcp_tracker.py),
   over stdio and over streamable HTTP on localhost, p50 and p99 of N calls:
   - `bare`: the `mcp` SDK's own `Client.call_tool`, nothing of ours;
   - `host`: the path a run's call takes: the model's JSON arguments checked against the
     server's schema (`Tool.validate`), the runner's guard for a call cut off mid-question
     (one store read, SQLite), then `Tool.invoke` through the process's shared `McpHub`.
   The difference of the medians is what threadteam adds.
2. Memory of 100 runs (a host on SQLite, a model that answers at once: call the tool, then
   DONE) sharing one stdio server: the bot's RSS before and after, the server's RSS, and
   how many times the server was started (one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mcp import Client, StdioServerParameters

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test fakes it uses live in tests/

from tests.bot.helpers import summon, thread  # noqa: E402
from tests.fakes.mcp_stack import TRACKER, http_tracker  # noqa: E402
from tests.fakes.poster import RecordingPoster  # noqa: E402
from threadteam.bot.host import Host  # noqa: E402
from threadteam.bot.questions import ask_key  # noqa: E402
from threadteam.bot.stores.sqlite import SQLiteStore  # noqa: E402
from threadteam.teams.catalog import TeamCatalog  # noqa: E402
from threadteam.teams.mcp import McpHub  # noqa: E402
from threadteam.teams.mcp.bind import bind  # noqa: E402
from threadteam.teams.models import ModelPool  # noqa: E402
from threadteam.teams.models.base import (  # noqa: E402
    ModelRequest,
    ModelResponse,
    RetrySink,
    TextSink,
    ToolCall,
    Usage,
)
from threadteam.teams.spec import parse_team  # noqa: E402
from threadteam.teams.tools import ToolContext  # noqa: E402

ARGS = '{"query": "vpn"}'


def team_text(server: str) -> str:
    return (f"name: desk\nmodel: instant\nmcp_servers:\n  tracker: {server}\n"
            f"agents:\n  - name: clerk\n    system_message: Tidy.\n"
            f"    tools: [{{mcp: tracker, tools: [search_issues]}}]\n"
            f"termination: {{text_mention: DONE}}\n")


def stdio() -> str:
    return f"{{command: [{sys.executable}, {TRACKER}]}}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bare(server: StdioServerParameters | str, n: int) -> list[float]:
    out = []
    async with Client(server, cache=None) as client:
        await client.list_tools()
        for _ in range(20):
            await client.call_tool("search_issues", {"query": "vpn"})
        for _ in range(n):
            t = time.perf_counter()
            await client.call_tool("search_issues", {"query": "vpn"})
            out.append(time.perf_counter() - t)
    return out


async def through_host(server_yaml: str, n: int, store: SQLiteStore) -> list[float]:
    hub = McpHub()
    try:
        team = (await bind(parse_team(team_text(server_yaml)), hub)).team
        tool = team.by_name["clerk"].tool("search_issues")
        assert tool is not None
        context = ToolContext(run_id="bench", agent="clerk")
        for _ in range(20):
            await tool.invoke(tool.validate(ARGS), context)
        out = []
        for i in range(n):
            t = time.perf_counter()
            args = tool.validate(ARGS)
            await store.get_post(ask_key("bench", f"call_{i}", 1))  # the runner's guard
            await tool.invoke(args, context)
            out.append(time.perf_counter() - t)
        return out
    finally:
        await hub.aclose()


class ToolThenDone:
    """Calls the tracker's search once, then says DONE; answers at once."""

    name = "instant"

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None, *,
                       on_retry: RetrySink | None = None) -> ModelResponse:
        if request.messages and request.messages[-1].role == "tool":
            return ModelResponse(text="DONE", usage=Usage(1, 1), model=self.name)
        return ModelResponse(text="", tool_calls=(ToolCall(f"c{len(request.messages)}",
                                                           "search_issues", ARGS),),
                             usage=Usage(1, 1), model=self.name)


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children() -> list[int]:
    me, out = str(os.getpid()), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().split()[3] == me:
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


async def memory(runs: int, tmp: Path) -> None:
    teams = tmp / "teams"
    teams.mkdir()
    (teams / "desk.yaml").write_text(team_text(stdio()))
    store = SQLiteStore(str(tmp / "mem.sqlite3"))
    await store.start()
    poster = RecordingPoster()
    host = Host(store=store, catalog=TeamCatalog.load(teams, strict=True),
                models=ModelPool(env={}, overrides={"instant": ToolThenDone()}), poster=poster)
    await host.start()
    try:
        before = rss_kb()
        for i in range(runs):
            await host.handle(summon(thread(i), "desk find the VPN issues", user=f"U{i}"))
        await host.idle(300)
        after = rss_kb()
        done = sum(1 for p in poster.posts if p.text.startswith("Finished"))
        desk = host.catalog.get("desk")
        assert desk is not None
        starts = host.runner.mcp.starts(desk.mcp_servers["tracker"])
        servers = children()
        print(f"{runs} runs on one stdio server: {done} finished, server started "
              f"{starts} time(s); bot RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB "
              f"(+{(after - before) / 1024:.1f} MB, {(after - before) / runs:.0f} kB a run); "
              f"server RSS {sum(rss_kb(p) for p in servers) / 1024:.1f} MB "
              f"({len(servers)} child process)")
    finally:
        await host.aclose()
        await store.aclose()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--runs", type=int, default=100)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store = SQLiteStore(str(tmp / "lat.sqlite3"))
        await store.start()
        try:
            rows = [("stdio", await bare(StdioServerParameters(command=sys.executable,
                                                               args=[str(TRACKER)]), a.calls),
                     await through_host(stdio(), a.calls, store))]
            async with http_tracker(tmp / "http-calls.jsonl") as url:
                rows.append(("http", await bare(url, a.calls),
                             await through_host(f"{{url: '{url}'}}", a.calls, store)))
        finally:
            await store.aclose()
        print(f"one call of search_issues, {a.calls} calls each (ms):")
        for name, b, h in rows:
            added = statistics.median(h) - statistics.median(b)
            print(f"  {name:<5} bare p50 {pct(b, .5) * 1e3:6.2f}  p99 {pct(b, .99) * 1e3:6.2f}   "
                  f"host p50 {pct(h, .5) * 1e3:6.2f}  p99 {pct(h, .99) * 1e3:6.2f}   "
                  f"added p50 {added * 1e3:+.2f}")
        await memory(a.runs, tmp)


if __name__ == "__main__":
    asyncio.run(main())
