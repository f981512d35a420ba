"""Microseconds of engine work per agent message, with a model that answers instantly.

    .venv/bin/python benchmarks/engine.py [--runs N]

Engine work is everything but the model: folding events, `decide`, building each
agent's request (its context window), and turning replies into events
(`reply_events`), driven by `teams.engine.drive`. The model is an in-process
canned one with zero latency, so the figures are the engine's own cost.

Prints the cost per message of a 3-agent round-robin debate of 12 messages
(averaged over many runs) and of single runs of 300, 1000 and 3000 messages;
the per-message cost must stay flat as history grows (each agent sees at most
its context window of 40 messages).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

from threadteam.teams.engine import Env, drive
from threadteam.teams.events import TaskStarted
from threadteam.teams.models.base import ModelRequest, ModelResponse, RetrySink, TextSink, Usage
from threadteam.teams.spec import Team, parse_team
from threadteam.teams.state import RunState

TASK = "Should a small bakery move its ordering to an app?"
LINES = (
    "Orders arrive at 6am by phone; an app would let us bake to demand and cut waste by a fifth.",
    "The app costs 49 a month plus 3% a sale; most customers are regulars who like to call.",
    "Weighing both: pilot the app for pre-orders only, keep the phone, review after a quarter.",
)


def debate(max_messages: int) -> Team:
    """The built-in debate's shape: bull, bear, synthesis in turn until the message limit."""
    return parse_team(f"""
name: debate
strategy: round_robin
agents:
  - name: bull
    persona: {{display_name: Bull, avatar: ":ox:"}}
    system_message: Argue the bull case for the topic. Be concrete.
  - name: bear
    persona: {{display_name: Bear, avatar: ":bear:"}}
    system_message: Argue the bear case for the topic. Be concrete.
  - name: synthesis
    persona: {{display_name: Synthesis, avatar: ":scales:"}}
    system_message: Read both sides. End with 'FINAL ANSWER:' and a balanced synthesis.
termination:
  any:
    - text_mention: FINAL ANSWER
    - max_messages: {max_messages}
""", "benchmark")


class CannedModel:
    """Answers every request at once with the next canned line."""

    name = "canned"

    def __init__(self) -> None:
        self.calls = 0
        self.responses = [ModelResponse(text=t, usage=Usage(40, 20), model="canned") for t in LINES]

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None, *,
                       on_retry: RetrySink | None = None) -> ModelResponse:
        self.calls += 1
        return self.responses[self.calls % 3]

    async def aclose(self) -> None:
        return None


class OneModel:
    """The `Env.models` seam with a single model behind it."""

    def __init__(self, model: CannedModel) -> None:
        self.model = model

    def resolve_name(self, *preferred: str | None) -> str:
        return "canned"

    def get(self, name: str) -> CannedModel:
        return self.model


async def run_once(team: Team, env: Env) -> int:
    """One whole run, from the summons to its termination; returns its agent messages."""
    state = RunState(team)
    state.apply(TaskStarted(team=team.name, task=TASK, by="U1"))
    await drive(state, env)
    assert state.finished is not None, "the run did not finish"
    return state.model_calls


async def per_message_us(team: Team, runs: int) -> tuple[float, int]:
    """Microseconds per agent message over `runs` runs, and the messages of one run."""
    env = Env(models=OneModel(CannedModel()))
    gc.collect()
    messages = 0
    start = time.perf_counter()
    for _ in range(runs):
        messages += await run_once(team, env)
    elapsed = time.perf_counter() - start
    return elapsed / messages * 1e6, messages // runs


async def figures(runs: int, repeats: int) -> dict[int, list[float]]:
    """{messages per run: [microseconds per message, one per repeat]}."""
    teams = {12: (debate(12), runs)} | {n: (debate(n), 1) for n in (300, 1000, 3000)}
    await per_message_us(teams[12][0], 50)  # warm up
    out: dict[int, list[float]] = {n: [] for n in teams}
    for _ in range(repeats):  # interleaved, so a slow patch of the machine hits every size
        for n, (team, count) in teams.items():
            us, messages = await per_message_us(team, count)
            assert messages == n, f"expected {n} messages per run, got {messages}"
            out[n].append(us)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs of the 12-message debate")
    parser.add_argument("--repeats", type=int, default=7, help="times each figure is measured")
    args = parser.parse_args()
    results = {n: statistics.median(v) for n, v in asyncio.run(figures(args.runs, args.repeats)).items()}
    base = results[12]
    print("engine work per agent message: 3-agent round-robin debate, zero-latency model "
          f"(median of {args.repeats})")
    for n, us in results.items():
        what = f"{args.runs} runs" if n == 12 else "single run"
        print(f"  {n:>5} messages ({what:>10}): {us:6.1f} us/message  "
              f"({us / base:4.2f}x the 12-message cost)")
    worst = max(results[n] / base for n in results if n != 12)
    print(f"flat as history grows: {'yes' if worst <= 1.5 else 'NO'} "
          f"(largest ratio {worst:.2f}x; target <= 1.5x)")


if __name__ == "__main__":
    main()
