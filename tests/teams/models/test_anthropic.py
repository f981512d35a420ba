"""AnthropicModel through the real `anthropic` client against the local fake server."""

from __future__ import annotations

import time

import pytest

from threadteam.teams.errors import MissingCredentials, ModelAuthError, ModelHTTPError
from threadteam.teams.models import ModelPool, ToolCall
from threadteam.teams.models.anthropic import NUDGE, OPENING

from .helpers import ANTHROPIC_KEY, SEARCH, Collector, ask, me, result, user


async def test_text_streams_to_on_text_with_usage(claude, fake_anthropic):
    fake_anthropic.queue_text("Hello from Claude, nice to meet you.", usage=(40, 9), chunks=4)
    sink = Collector()

    answer = await claude.complete(ask(), sink)

    assert answer.text == "Hello from Claude, nice to meet you."
    assert len(sink.deltas) == 4 and sink.text == answer.text
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (40, 9)


async def test_tool_input_json_deltas_are_assembled(claude, fake_anthropic):
    fake_anthropic.queue_tool_call("search", '{"q": "sea otters", "limit": 2}', text="Let me look.",
                                   chunks=5)
    sink = Collector()

    answer = await claude.complete(ask(tools=(SEARCH,)), sink)

    assert answer.text == "Let me look." == sink.text
    assert answer.tool_calls == (
        ToolCall(id="toolu_fake_1", name="search", arguments='{"q": "sea otters", "limit": 2}'),)


async def test_malformed_tool_input_passes_through_verbatim(claude, fake_anthropic):
    fake_anthropic.queue_tool_call("search", '{"q": "sea', chunks=2)

    answer = await claude.complete(ask(tools=(SEARCH,)))

    assert answer.tool_calls[0].arguments == '{"q": "sea'


async def test_overloaded_then_rate_limited_then_success(claude, fake_anthropic):
    fake_anthropic.queue_error(529)
    fake_anthropic.queue_error(429, retry_after=0.3)
    fake_anthropic.queue_text("finally")

    started = time.monotonic()
    answer = await claude.complete(ask())

    assert answer.text == "finally"
    assert len(fake_anthropic.requests) == 3
    assert time.monotonic() - started >= 0.3


async def test_500s_are_retried_then_reported(claude, fake_anthropic):
    for _ in range(4):
        fake_anthropic.queue_error(500)

    with pytest.raises(ModelHTTPError) as caught:
        await claude.complete(ask())

    assert len(fake_anthropic.requests) == 4
    assert caught.value.status == 500 and caught.value.retryable


async def test_a_refused_key_is_an_auth_error_naming_the_variable(claude, fake_anthropic):
    fake_anthropic.queue_error(401)  # the fake echoes the key it got in its message

    with pytest.raises(ModelAuthError) as caught:
        await claude.complete(ask())

    assert len(fake_anthropic.requests) == 1
    assert "ANTHROPIC_API_KEY" in str(caught.value)
    assert ANTHROPIC_KEY not in str(caught.value)


async def test_error_messages_never_contain_the_key(claude, fake_anthropic):
    fake_anthropic.queue_error(400, message=f"bad header value {ANTHROPIC_KEY}")

    with pytest.raises(ModelHTTPError) as caught:
        await claude.complete(ask())

    assert not caught.value.retryable
    assert "DoNotLeak" not in str(caught.value)


async def test_an_overload_event_before_any_text_is_retried(claude, fake_anthropic):
    fake_anthropic.queue_stream_error("")
    fake_anthropic.queue_text("second try")

    answer = await claude.complete(ask())

    assert answer.text == "second try"
    assert len(fake_anthropic.requests) == 2


async def test_an_overload_event_after_text_is_not_retried(claude, fake_anthropic):
    fake_anthropic.queue_stream_error("Half of it")
    sink = Collector()

    with pytest.raises(ModelHTTPError) as caught:
        await claude.complete(ask(), sink)

    assert sink.text == "Half of it"
    assert len(fake_anthropic.requests) == 1
    assert "overloaded" in str(caught.value)


async def test_missing_key_names_the_variable():
    with pytest.raises(MissingCredentials) as caught:
        ModelPool(env={"OPENAI_API_KEY": "sk-x"}).get("anthropic:claude-sonnet-4-5")
    assert caught.value.variable == "ANTHROPIC_API_KEY"


async def test_the_key_is_sent(claude, fake_anthropic):
    fake_anthropic.queue_text("ok")
    await claude.complete(ask())
    headers = fake_anthropic.requests[0].headers
    # anthropic 2.x sends the key as a bearer token; older clients used x-api-key.
    assert ANTHROPIC_KEY in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    assert "anthropic-version" in headers


async def test_messages_alternate_and_start_with_the_user(claude, fake_anthropic):
    fake_anthropic.queue_text("ok")
    call = ToolCall("toolu_1", "search", '{"q": "otters"}')

    await claude.complete(ask(
        me("Hello team, I am the researcher."),
        user("Find otters", "ana"),
        user("and beavers", "bo"),
        me("", call),
        result("toolu_1", "nothing found", error=True),
        user("try harder", "critic"),
        system="You are the researcher.", tools=(SEARCH,)))

    body = fake_anthropic.requests[0].body
    assert body["system"] == [{"type": "text", "text": "You are the researcher.",
                               "cache_control": {"type": "ephemeral"}}]
    assert body["max_tokens"] == 1024
    assert body["tools"] == [{"name": "search", "description": "Search the web.",
                              "input_schema": SEARCH.parameters}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": OPENING}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Hello team, I am the researcher."}]},
        # A cache breakpoint where this agent's previous request ended, and one at the end.
        {"role": "user", "content": [{"type": "text", "text": "ana: Find otters"},
                                     {"type": "text", "text": "bo: and beavers",
                                      "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "otters"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "nothing found",
             "is_error": True},
            {"type": "text", "text": "critic: try harder", "cache_control": {"type": "ephemeral"}}]},
    ]


async def test_a_conversation_ending_on_our_own_turn_gets_a_nudge(claude, fake_anthropic):
    fake_anthropic.queue_text("ok")

    await claude.complete(ask(user("go", "ana"), me("Working on it."), max_output_tokens=77,
                              temperature=0.1))

    body = fake_anthropic.requests[0].body
    assert body["messages"][-1] == {"role": "user", "content": [
        {"type": "text", "text": NUDGE, "cache_control": {"type": "ephemeral"}}]}
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == 77
    assert body["temperature"] == 0.1
