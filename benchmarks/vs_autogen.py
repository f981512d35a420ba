"""The debate in threadteam and in AutoGen's RoundRobinGroupChat, side by side: CPU per agent message.

    .venv/bin/pip install -e '.[bench]'      # autogen-agentchat, autogen-core
    .venv/bin/python benchmarks/vs_autogen.py [--runs N] [--profile]

Both teams are three agents (bull, bear, synthesis) taking turns on one task until 12
agent messages. Two comparisons, both against AutoGen running in memory with a trivial
canned model client (so what is timed is each framework's own work per agent message):

- engine: threadteam's engine with a canned model (folding, deciding, building requests);
- whole product: what `threadteam chat --team debate` does, in process: the host, the
  console poster printing every post (to /dev/null), the SQLite store (on disk, its
  writer thread's CPU included) and the rehearsal model.

Figures are CPU time (`time.process_time()`, every thread of the process) per agent
message; both run in one process, alternating, and the best of several rounds is kept.
The product's line is followed by the SQLite writer thread's share of it and the store
transactions it commits per agent message.
`--profile` prints where the whole product's time goes (cProfile, by own time).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
)
from autogen_core.tools import Tool, ToolSchema
from engine import LINES, TASK, CannedModel, OneModel, debate, run_once

from threadteam.adapters.console.markdown import PLAIN
from threadteam.adapters.console.poster import ConsolePoster
from threadteam.adapters.console.terminal import Terminal
from threadteam.bot.app import Runtime
from threadteam.bot.config import Settings
from threadteam.bot.shapes import Inbound, Outbound, ThreadKey
from threadteam.teams.engine import Env

MESSAGES = 12


class CannedClient(ChatCompletionClient):
    """AutoGen's model seam, answering every request at once with the next canned line."""

    def __init__(self) -> None:
        self.calls = 0
        self._usage = RequestUsage(prompt_tokens=40, completion_tokens=20)

    async def create(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = (),
                     tool_choice: Any = "auto", json_output: Any = None,
                     extra_create_args: Mapping[str, Any] = {},
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        self.calls += 1
        return CreateResult(finish_reason="stop", content=LINES[self.calls % 3], usage=self._usage,
                            cached=False)

    async def create_stream(self, messages: Sequence[LLMMessage], **kwargs: Any
                            ) -> AsyncGenerator[str | CreateResult, None]:
        yield await self.create(messages)

    async def close(self) -> None:
        return None

    def actual_usage(self) -> RequestUsage:
        return self._usage

    def total_usage(self) -> RequestUsage:
        return self._usage

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = ()
                     ) -> int:
        return 0

    def remaining_tokens(self, messages: Sequence[LLMMessage], *,
                         tools: Sequence[Tool | ToolSchema] = ()) -> int:
        return 100_000

    @property
    def capabilities(self) -> Any:
        return self.model_info

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(vision=False, function_calling=True, json_output=False,
                         family=ModelFamily.UNKNOWN, structured_output=False)


def autogen_team() -> RoundRobinGroupChat:
    client = CannedClient()
    agents = [
        AssistantAgent("bull", client, system_message="Argue the bull case for the topic. Be concrete."),
        AssistantAgent("bear", client, system_message="Argue the bear case for the topic. Be concrete."),
        AssistantAgent("synthesis", client, system_message=(
            "Read both sides. End with 'FINAL ANSWER:' and a balanced synthesis.")),
    ]
    # AutoGen counts the task as a message; 12 agent messages follow it.
    stop = TextMentionTermination("FINAL ANSWER") | MaxMessageTermination(MESSAGES + 1)
    return RoundRobinGroupChat(agents, termination_condition=stop)


async def autogen_us(team: RoundRobinGroupChat, runs: int) -> float:
    """Microseconds per agent message over `runs` runs of the debate."""
    messages = 0
    gc.collect()
    start = time.perf_counter()
    for _ in range(runs):
        result = await team.run(task=TASK)
        messages += sum(1 for m in result.messages if isinstance(m, TextMessage) and m.source != "user")
        await team.reset()
    elapsed = time.perf_counter() - start
    assert messages == runs * MESSAGES, f"AutoGen wrote {messages / runs:g} agent messages a run"
    return elapsed / messages * 1e6


async def threadteam_us(runs: int) -> float:
    team, env = debate(MESSAGES), Env(models=OneModel(CannedModel()))
    messages = 0
    gc.collect()
    start = time.perf_counter()
    for _ in range(runs):
        messages += await run_once(team, env)
    elapsed = time.perf_counter() - start
    assert messages == runs * MESSAGES, f"threadteam wrote {messages / runs:g} agent messages a run"
    return elapsed / messages * 1e6


def debate_yaml(messages: int) -> str:
    builtin = (Path(__file__).resolve().parents[1] / "teams" / "builtin" / "debate.yaml").read_text()
    head = builtin[:builtin.index("termination:")]
    return f"{head}termination:\n  max_messages: {messages}\n"


class CountingPoster(ConsolePoster):
    """The console's poster, counting the agents' messages it prints."""

    agent_posts = 0

    async def post(self, out: Outbound) -> str:
        if "agent" in out.meta:
            self.agent_posts += 1
        return await super().post(out)


class Product:
    """threadteam as `threadteam chat` runs it: host, console poster, SQLite, rehearsal."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.out = open(os.devnull, "w")
        self.poster = CountingPoster(Terminal(self.out, self.out, live=False), PLAIN, user="me",
                                     env={})
        self.runtime: Runtime | None = None

    async def start(self) -> None:
        # The built-in debate, run to 12 messages like AutoGen's (the rehearsal synthesis
        # says FINAL ANSWER at once, which would end it after 3).
        teams = Path(self.folder) / "teams"
        teams.mkdir()
        (teams / "debate.yaml").write_text(debate_yaml(MESSAGES))
        env = {"THREADTEAM_STORE": f"sqlite:///{Path(self.folder) / 'bench.sqlite3'}",
               "THREADTEAM_TEAMS_DIR": str(teams)}
        self.runtime = await Runtime.open(Settings.from_env(env))
        await self.runtime.start_host(self.poster, platform="console", shared=False)

    async def run(self) -> None:
        assert self.runtime is not None and self.runtime.host is not None
        host = self.runtime.host
        key = ThreadKey("console", "local", "terminal", uuid.uuid4().hex[:12])
        await host.handle(Inbound(key, "me", f"debate {TASK}", "summon", uuid.uuid4().hex,
                                  display_name="me"))
        await host.idle(limit=60)

    async def aclose(self) -> None:
        if self.runtime is not None:
            await self.runtime.aclose()
        self.out.close()


async def product_us(product: Product, runs: int, split: dict[str, list[float]] | None = None
                     ) -> float:
    """CPU microseconds per agent message over `runs` whole debates; `split` gets the SQLite
    writer thread's share of them and the store transactions per agent message."""
    assert product.runtime is not None
    writer = getattr(product.runtime.store, "_writer", None)
    clock = time.pthread_getcpuclockid(writer._thread.ident) if writer else None
    before = product.poster.agent_posts
    gc.collect()
    batches = writer.batches if writer else 0
    writer_start = time.clock_gettime(clock) if clock is not None else 0.0
    start = time.process_time()
    for _ in range(runs):
        await product.run()
    elapsed = time.process_time() - start
    messages = product.poster.agent_posts - before
    assert messages == runs * MESSAGES, f"threadteam posted {messages / runs:g} agent messages a run"
    if split is not None and clock is not None and writer is not None:
        split["writer"].append((time.clock_gettime(clock) - writer_start) / messages * 1e6)
        split["transactions"].append((writer.batches - batches) / messages)
    return elapsed / messages * 1e6


async def autogen_cpu_us(team: RoundRobinGroupChat, runs: int) -> float:
    """AutoGen's CPU microseconds per agent message (as `autogen_us`, on the CPU clock)."""
    messages = 0
    gc.collect()
    start = time.process_time()
    for _ in range(runs):
        result = await team.run(task=TASK)
        messages += sum(1 for m in result.messages if isinstance(m, TextMessage) and m.source != "user")
        await team.reset()
    elapsed = time.process_time() - start
    assert messages == runs * MESSAGES, f"AutoGen wrote {messages / runs:g} agent messages a run"
    return elapsed / messages * 1e6


async def compare(runs: int, rounds: int, profile: bool) -> dict[str, list[float]]:
    ag_team = autogen_team()
    out: dict[str, list[float]] = {"autogen": [], "engine": [], "autogen_cpu": [], "product": [],
                                   "writer": [], "transactions": []}
    with tempfile.TemporaryDirectory() as folder:
        product = Product(folder)
        await product.start()
        try:
            await autogen_us(ag_team, 3)  # warm up all three
            await threadteam_us(20)
            await product_us(product, 3)
            for _ in range(rounds):
                out["autogen"].append(await autogen_us(ag_team, runs))
                out["engine"].append(await threadteam_us(runs * 10))
                out["autogen_cpu"].append(await autogen_cpu_us(ag_team, runs))
                out["product"].append(await product_us(product, runs, out))
            if profile:
                profiler = cProfile.Profile(time.process_time)
                gc.collect()
                profiler.enable()
                for _ in range(runs):
                    await product.run()
                profiler.disable()
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats(os.environ.get("SORT", "tottime")).print_stats(int(os.environ.get("TOP", "25")))
                print(text.getvalue(), file=sys.stderr)
        finally:
            await product.aclose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="AutoGen runs per round (threadteam: 10x)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="print where the whole product's time goes (cProfile)")
    args = parser.parse_args()
    figures = asyncio.run(compare(args.runs, args.rounds, args.profile))
    best = {k: min(v) for k, v in figures.items() if v}
    med = {k: statistics.median(v) for k, v in figures.items() if v}
    print(f"{MESSAGES}-message scripted debate, 3 agents in round robin, canned zero-latency model")
    print(f"  AutoGen RoundRobinGroupChat: {best['autogen']:8.1f} us/message  (median {med['autogen']:.1f})")
    print(f"  threadteam engine:           {best['engine']:8.1f} us/message  (median {med['engine']:.1f})")
    print(f"  ratio: {best['autogen'] / best['engine']:.1f}x less engine time per message in "
          "threadteam (target >= 20x)")
    print("whole product, CPU per agent message (process_time, all threads)")
    print(f"  AutoGen in memory:                            {best['autogen_cpu']:8.1f} us  "
          f"(median {med['autogen_cpu']:.1f})")
    print(f"  threadteam chat (console, SQLite, rehearsal): {best['product']:8.1f} us  "
          f"(median {med['product']:.1f})")
    if figures["writer"]:
        print(f"    of which the SQLite writer thread:         {med['writer']:8.1f} us (median); "
              f"store transactions per agent message: {med['transactions']:.2f}")
    print(f"  ratio: {best['autogen_cpu'] / best['product']:.1f}x less CPU per message in "
          "threadteam (target >= 10x)")


if __name__ == "__main__":
    main()
