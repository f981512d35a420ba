"""The scripted debate in threadteam's engine and in AutoGen's RoundRobinGroupChat, side by side.

    .venv/bin/pip install -e '.[bench]'      # autogen-agentchat, autogen-core
    .venv/bin/python benchmarks/vs_autogen.py [--runs N]

Both teams are three agents (bull, bear, synthesis) taking turns on one task
until 12 agent messages, each answered at once by a trivial canned model client,
so what is timed is each framework's own work per agent message. Both run in one
process, alternating, and the best of several rounds of each is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
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


async def compare(runs: int, rounds: int) -> tuple[list[float], list[float]]:
    ag_team = autogen_team()
    await autogen_us(ag_team, 3)  # warm up both
    await threadteam_us(20)
    ours, theirs = [], []
    for _ in range(rounds):
        theirs.append(await autogen_us(ag_team, runs))
        ours.append(await threadteam_us(runs * 10))
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="AutoGen runs per round (threadteam: 10x)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ours, theirs = asyncio.run(compare(args.runs, args.rounds))
    a, t = min(ours), min(theirs)
    print(f"{MESSAGES}-message scripted debate, 3 agents in round robin, canned zero-latency model")
    print(f"  AutoGen RoundRobinGroupChat: {t:8.1f} us/message  (median {statistics.median(theirs):.1f})")
    print(f"  threadteam engine:           {a:8.1f} us/message  (median {statistics.median(ours):.1f})")
    print(f"  ratio: {t / a:.1f}x less engine time per message in threadteam (target >= 20x)")


if __name__ == "__main__":
    main()
