"""Billed input tokens of the debate, threadteam against AutoGen, under the providers' caching rules.

    .venv/bin/pip install -e '.[dev,bench]'     # autogen-agentchat, autogen-ext[openai,anthropic]
    .venv/bin/python benchmarks/tokens.py [--lengths 12 40 60]

The built-in debate (bull, bear, synthesis in turn) runs to 12, 40 and 60 messages of
about 500 tokens each, through the real openai and anthropic clients against the local
fake servers, once in threadteam and once in AutoGen's RoundRobinGroupChat, both given
the same system prompts and served the same replies. Every request the fakes received is then billed by the rules of
tests/fakes/prompt_cache.py (four characters a token):

- OpenAI: a prefix of 1,024 tokens or more shared with an earlier request is cached, in
  128-token steps; cached tokens cost 10% (or 50%, on older models) of the price.
- Anthropic: prefixes at `cache_control` breakpoints are written at 1.25x and read at
  0.1x; everything else costs 1x. AutoGen sets no breakpoints.

Figures are input tokens, priced in units of one uncached token. threadteam also runs
under several context windows, each compared with its own full-history run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.anthropic_server import FakeAnthropic  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.fakes.prompt_cache import AnthropicCache, OpenAICache  # noqa: E402
from threadteam.teams.engine import Env, drive  # noqa: E402
from threadteam.teams.events import TaskStarted  # noqa: E402
from threadteam.teams.models import ModelPool  # noqa: E402
from threadteam.teams.prompts import system_prompt  # noqa: E402
from threadteam.teams.spec import parse_team  # noqa: E402
from threadteam.teams.state import RunState  # noqa: E402

TASK = "Should a small bakery move its ordering to an app?"
FAKE_KEY = "-".join(("sk", "bench", "not", "a", "key"))
OPENAI_MODEL, ANTHROPIC_MODEL = "gpt-4o-mini", "claude-sonnet-4-5"
SYSTEMS = {
    "bull": "Argue the bull case for the topic. Be concrete.",
    "bear": "Argue the bear case for the topic. Be concrete.",
    "synthesis": "Read both sides. End with 'FINAL ANSWER:' and a balanced synthesis.",
}
WORDS = ("flour", "ovens", "orders", "margins", "regulars", "delivery", "waste", "pilot",
         "weekend", "croissant", "subscription", "loyalty")
#: threadteam's context settings compared with its full history (None: the default, 40).
WINDOWS: dict[str, str | None] = {"messages: 10": "{messages: 10}", "messages: 20": "{messages: 20}",
                                  "default (40)": None, "tokens: 8000": "{tokens: 8000}"}
FULL = "{messages: 100000}"


def reply(i: int) -> str:
    """Message `i`: about 500 tokens (2,000 characters), different from every other."""
    words = []
    while sum(len(w) + 1 for w in words) < 2000:
        words.append(f"{WORDS[(i * 7 + len(words)) % len(WORDS)]}{i}")
    return " ".join(words)


def team_yaml(model: str, messages: int, context: str | None) -> str:
    window = f"\n    context: {context}" if context else ""
    agents = "".join(f"""
  - name: {name}
    persona: {{display_name: {name.title()}}}
    system_message: "{text}"{window}""" for name, text in SYSTEMS.items())
    return f"""
name: debate
strategy: round_robin
model: {model}
agents:{agents}
termination:
  any:
    - text_mention: FINAL ANSWER
    - max_messages: {messages}
"""


def queue(fake: FakeOpenAI | FakeAnthropic, messages: int) -> None:
    fake.steps.clear()
    for i in range(messages):
        fake.queue_text(reply(i), usage=(0, 500), chunks=8)


async def threadteam_bodies(vendor: str, messages: int, context: str | None) -> list[dict]:
    fake: FakeOpenAI | FakeAnthropic = FakeOpenAI() if vendor == "openai" else FakeAnthropic()
    async with fake:
        queue(fake, messages)
        if vendor == "openai":
            env = {"OPENAI_API_KEY": FAKE_KEY, "OPENAI_BASE_URL": fake.url}
            name = f"openai:{OPENAI_MODEL}"
        else:
            env = {"ANTHROPIC_API_KEY": FAKE_KEY, "ANTHROPIC_BASE_URL": fake.url}
            name = f"anthropic:{ANTHROPIC_MODEL}"
        pool = ModelPool(env=env)
        state = RunState(parse_team(team_yaml(name, messages, context), "benchmark"))
        state.apply(TaskStarted(team="debate", task=TASK, by="U1"))
        try:
            await drive(state, Env(models=pool))
        finally:
            await pool.aclose()
        assert state.messages == messages and state.paused is None, state.paused
        return fake.bodies()


async def autogen_bodies(vendor: str, messages: int) -> list[dict]:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
    from autogen_agentchat.teams import RoundRobinGroupChat
    from autogen_core.models import ModelFamily, ModelInfo

    fake: FakeOpenAI | FakeAnthropic = FakeOpenAI() if vendor == "openai" else FakeAnthropic()
    async with fake:
        queue(fake, messages)
        info = ModelInfo(vision=False, function_calling=True, json_output=False,
                         family=ModelFamily.UNKNOWN, structured_output=False)
        client: Any
        if vendor == "openai":
            from autogen_ext.models.openai import OpenAIChatCompletionClient
            client = OpenAIChatCompletionClient(model=OPENAI_MODEL, base_url=fake.url,
                                                api_key=FAKE_KEY, model_info=info)
        else:
            from autogen_ext.models.anthropic import AnthropicChatCompletionClient
            client = AnthropicChatCompletionClient(model=ANTHROPIC_MODEL, base_url=fake.url,
                                                   api_key=FAKE_KEY, model_info=info)
            client._client.messages = _TemperatureInBody(client._client.messages)
        # The same system prompts threadteam sends (its own words plus each agent's name and
        # team-mates), so the bills differ only by how requests are laid out and trimmed.
        team = parse_team(team_yaml("rehearsal", messages, None), "benchmark")
        agents = [AssistantAgent(a.name, client, system_message=system_prompt(team, a))
                  for a in team.agents]
        # AutoGen counts the task as a message.
        stop = TextMentionTermination("FINAL ANSWER") | MaxMessageTermination(messages + 1)
        result = await RoundRobinGroupChat(agents, termination_condition=stop).run(task=TASK)
        await client.close()
        assert len(result.messages) == messages + 1, len(result.messages)
        return fake.bodies()


class _TemperatureInBody:
    """AutoGen 0.7 always passes `temperature=`, a keyword anthropic 2.x no longer takes
    (the API still does): it travels in the body instead, as threadteam sends it."""

    def __init__(self, messages: Any) -> None:
        self._messages = messages

    def create(self, **params: Any) -> Any:
        extra = dict(params.pop("extra_body", None) or {})
        if "temperature" in params:
            extra["temperature"] = params.pop("temperature")
        return self._messages.create(**params, extra_body=extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._messages, name)


def openai_bill(bodies: list[dict], cached_price: float) -> float:
    cache, total = OpenAICache(), 0.0
    for body in bodies:
        prompt, cached = cache.bill(body)
        total += prompt - cached + cached_price * cached
    return total


def anthropic_bill(bodies: list[dict]) -> float:
    cache, total = AnthropicCache(), 0.0
    for body in bodies:
        fresh, written, read = cache.bill(body)
        total += fresh + 1.25 * written + 0.1 * read
    return total


def sent(bodies: list[dict], vendor: str) -> int:
    if vendor == "openai":
        return int(sum(OpenAICache().bill(b)[0] for b in bodies))
    return int(sum(sum(AnthropicCache().bill(b)) for b in bodies))


async def figures(lengths: list[int]) -> None:
    print(f"debate, 3 agents in round robin, replies of ~500 tokens; billed input in "
          f"uncached-token units ({'/'.join(map(str, lengths))} messages)")
    print("\n== threadteam (default window) against AutoGen RoundRobinGroupChat, same fake server")
    print(f"{'rule':<26}{'msgs':>5}{'threadteam':>13}{'AutoGen':>13}{'ratio':>8}   sent (tt / AutoGen)")
    for vendor in ("openai", "anthropic"):
        for n in lengths:
            ours = await threadteam_bodies(vendor, n, None)
            theirs = await autogen_bodies(vendor, n)
            rules = ([("OpenAI, cached at 10%", 0.1), ("OpenAI, cached at 50%", 0.5)]
                     if vendor == "openai" else [("Anthropic (1.25x / 0.1x)", None)])
            for label, price in rules:
                a = openai_bill(ours, price) if price is not None else anthropic_bill(ours)
                b = openai_bill(theirs, price) if price is not None else anthropic_bill(theirs)
                print(f"{label:<26}{n:>5}{a:>13,.0f}{b:>13,.0f}{a / b:>7.2f}x   "
                      f"{sent(ours, vendor):,} / {sent(theirs, vendor):,}")
    print("\n== threadteam context windows against its own full history (billed, ratio)")
    print(f"{'rule':<26}{'msgs':>5}" + "".join(f"{k:>16}" for k in WINDOWS))
    worst = 0.0
    for vendor in ("openai", "anthropic"):
        for n in lengths:
            full = await threadteam_bodies(vendor, n, FULL)
            windowed = {k: await threadteam_bodies(vendor, n, c) for k, c in WINDOWS.items()}
            rules = ([("OpenAI, cached at 10%", 0.1), ("OpenAI, cached at 50%", 0.5)]
                     if vendor == "openai" else [("Anthropic (1.25x / 0.1x)", None)])
            for label, price in rules:
                def bill(bodies: list[dict], price: float | None = price) -> float:
                    return openai_bill(bodies, price) if price is not None else anthropic_bill(bodies)
                base = bill(full)
                ratios = {k: bill(b) / base for k, b in windowed.items()}
                worst = max(worst, *ratios.values())
                print(f"{label:<26}{n:>5}" + "".join(f"{r:>15.2f}x" for r in ratios.values()))
    print(f"\nworst context window against full history: {worst:.2f}x (target <= 1.00x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[12, 40, 60])
    args = parser.parse_args()
    asyncio.run(figures(args.lengths))


if __name__ == "__main__":
    main()
