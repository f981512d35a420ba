"""Requests laid out for the providers' prompt caches, billed by the fakes under the real rules.

The fakes count tokens from each request and report cached ones the way OpenAI (shared
prefix of 1,024 tokens or more, in 128-token steps) and Anthropic (`cache_control`
breakpoints) do, so these tests see what a later turn really reads from the cache.
"""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.prompt_cache import AnthropicCache, OpenAICache
from threadteam.teams.engine import Env, drive
from threadteam.teams.events import AgentMessage, TaskStarted, from_json, to_json
from threadteam.teams.models import ModelPool, Usage
from threadteam.teams.models.openai import OpenAIModel, make_client
from threadteam.teams.prompts import build_request
from threadteam.teams.spec import parse_team
from threadteam.teams.state import RunState

from .conftest import TINY
from .helpers import ANTHROPIC_KEY, OPENAI_KEY

TASK = "Should a small bakery move its ordering to an app?"
# About 300 tokens a reply, each one different.
WORDS = ("flour", "ovens", "orders", "margins", "regulars", "delivery", "waste", "pilot")


def replies(n: int) -> list[str]:
    return [" ".join(f"{WORDS[(i + j) % len(WORDS)]}{i}" for j in range(150)) for i in range(n)]


def debate(model: str, messages: int, context: int | None = None) -> str:
    window = f"\n    context: {{messages: {context}}}" if context else ""
    return f"""
name: debate
strategy: round_robin
model: {model}
agents:
  - name: bull
    persona: {{display_name: Bull}}
    system_message: Argue the bull case for the topic. Be concrete.{window}
  - name: bear
    persona: {{display_name: Bear}}
    system_message: Argue the bear case for the topic. Be concrete.{window}
  - name: synthesis
    persona: {{display_name: Synthesis}}
    system_message: Read both sides. End with 'FINAL ANSWER:' and a balanced synthesis.{window}
termination: {{max_messages: {messages}}}
"""


async def run_debate(vendor: str, messages: int, context: int | None = None,
                     fake: FakeOpenAI | FakeAnthropic | None = None) -> list[AgentMessage]:
    """A debate of `messages` replies through the real client and a caching fake."""
    if fake is None:
        fake = (FakeOpenAI(prompt_cache=OpenAICache()) if vendor == "openai"
                else FakeAnthropic(prompt_cache=AnthropicCache()))
    async with fake:
        for text in replies(messages):
            fake.queue_text(text, usage=(0, 300))
        if vendor == "openai":
            env = {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fake.url}
            name = "openai:gpt-4o-mini"
        else:
            env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": fake.url}
            name = "anthropic:claude-sonnet-4-5"
        pool = ModelPool(env=env, retry_base=TINY)
        state = RunState(parse_team(debate(name, messages, context), "test"))
        state.apply(TaskStarted(team="debate", task=TASK, by="U1"))
        try:
            await drive(state, Env(models=pool))
        finally:
            await pool.aclose()
    assert state.messages == messages and state.paused is None, state.paused
    return [e for e in state.history if isinstance(e, AgentMessage)]


def by_agent(messages: list[AgentMessage]) -> dict[str, list[Usage]]:
    out: dict[str, list[Usage]] = {}
    for m in messages:
        out.setdefault(m.agent, []).append(m.usage)
    return out


def billed(messages: list[AgentMessage], cached_price: float, write_price: float = 1.0) -> float:
    return sum(u.input_tokens - u.cached_input_tokens - u.cache_write_tokens
               + cached_price * u.cached_input_tokens + write_price * u.cache_write_tokens
               for u in (m.usage for m in messages))


async def test_each_agents_next_request_reads_its_whole_previous_one_from_openais_cache():
    turns = by_agent(await run_debate("openai", 12))
    for usages in turns.values():
        for before, after in pairwise(usages):
            whole = before.input_tokens
            # The previous request is a byte-for-byte prefix: all of it that fills whole
            # 128-token steps past 1,024 is served from the cache.
            expected = whole - (whole - 1024) % 128 if whole >= 1024 else 0
            assert after.cached_input_tokens == expected
    assert sum(u.cached_input_tokens for us in turns.values() for u in us) > 0


async def test_each_agents_next_request_reads_its_whole_previous_one_from_anthropics_cache():
    fake = FakeAnthropic(prompt_cache=AnthropicCache())
    turns = by_agent(await run_debate("anthropic", 12, fake=fake))
    for usages in turns.values():
        for before, after in pairwise(usages):
            # The moving breakpoint cached all of the previous request; only what was said
            # since is written, and nothing after the last breakpoint is left uncached.
            # (A prefix under 1,024 tokens is not cached at all.)
            read = before.input_tokens if before.input_tokens >= 1024 else 0
            assert after.cached_input_tokens == read
            assert after.cache_write_tokens == (after.input_tokens - read
                                                if after.input_tokens >= 1024 else 0)
    body = fake.requests[-1].body
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    marks = [b for m in body["messages"] for b in m["content"] if "cache_control" in b]
    assert len(marks) + 1 <= 4, "Anthropic allows 4 breakpoints"


@pytest.mark.parametrize("vendor", ["openai", "anthropic"])
async def test_no_context_window_bills_more_than_the_full_history(vendor):
    prices = [(0.1, 1.0), (0.5, 1.0)] if vendor == "openai" else [(0.1, 1.25)]
    full = await run_debate(vendor, 30)
    for context in (3, 5, 12):
        windowed = await run_debate(vendor, 30, context)
        sent = sum(m.usage.input_tokens for m in windowed)
        assert sent < sum(m.usage.input_tokens for m in full), "the window sends less"
        for cached_price, write_price in prices:
            assert billed(windowed, cached_price, write_price) <= \
                billed(full, cached_price, write_price), (context, cached_price)


async def test_cached_tokens_are_kept_with_each_message_in_the_log():
    message = AgentMessage(agent="bull", text="Up.", usage=Usage(2048, 12, 1920, 64))
    assert from_json(to_json(message)).usage == message.usage
    old = to_json(AgentMessage(agent="bull", text="Up.", usage=Usage(10, 2))).replace(
        ',"cached_input_tokens":0,"cache_write_tokens":0', "")
    assert from_json(old).usage == Usage(10, 2), "logs written before caching still load"


async def test_openai_requests_carry_one_prompt_cache_key_per_run_and_agent(fake_openai):
    fake_openai.fallback_text = "Fine."
    client = make_client({"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fake_openai.url})
    model = OpenAIModel(client, "gpt-4o-mini", owns_client=True, prompt_cache_key=True)
    pool = ModelPool(env={}, overrides={"openai:gpt-4o-mini": model})
    keys = []
    for task in ("one", "two"):
        state = RunState(parse_team(debate("openai:gpt-4o-mini", 6), "test"))
        state.apply(TaskStarted(team="debate", task=task, by="U1"))
        await drive(state, Env(models=pool))
        keys.append([r.body["prompt_cache_key"] for r in fake_openai.requests[-6:]])
    await model.aclose()
    first, second = keys
    assert first[0] == first[3] and first[1] == first[4], "one key per agent across turns"
    assert len(set(first[:3])) == 3, "each agent its own key"
    assert not set(first) & set(second), "each run its own keys"
    # A digest of the run and the agent's name: the task's words never leave in it.
    assert re.fullmatch(r"[0-9a-f]{16}-bull", first[0])


async def test_a_compatible_server_gets_no_prompt_cache_key_unless_asked(gpt, fake_openai):
    fake_openai.queue_text("ok")
    state = RunState(parse_team(debate("openai:gpt-4o-mini", 6), "test"))
    state.apply(TaskStarted(team="debate", task=TASK, by="U1"))
    request = build_request(state, "bull", "openai:gpt-4o-mini")
    assert request.cache_key.endswith("-bull")
    await gpt.complete(request)
    assert "prompt_cache_key" not in fake_openai.requests[0].body
