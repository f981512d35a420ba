"""OpenAIModel through the real `openai` client against the local fake server."""

from __future__ import annotations

import time

import pytest

from threadteam.teams.errors import MissingCredentials, ModelAuthError, ModelHTTPError
from threadteam.teams.models import ModelPool, ToolCall
from threadteam.teams.models.openai import speaker_name

from .helpers import OPENAI_KEY, SEARCH, Collector, ask, me, result, user


async def test_text_streams_to_on_text_as_it_arrives(gpt, fake_openai):
    fake_openai.queue_text("Hello there, how are you today?", chunks=4)
    sink = Collector()

    answer = await gpt.complete(ask(), sink)

    assert answer.text == "Hello there, how are you today?"
    assert len(sink.deltas) == 4
    assert sink.text == answer.text


async def test_usage_comes_from_the_final_chunk(gpt, fake_openai):
    fake_openai.queue_text("ok", usage=(123, 45))

    answer = await gpt.complete(ask())

    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (123, 45)
    assert fake_openai.requests[0].body["stream_options"] == {"include_usage": True}
    assert fake_openai.requests[0].body["stream"] is True


async def test_tool_call_split_over_chunks_is_assembled(gpt, fake_openai):
    fake_openai.queue_tool_call("search", '{"q": "cats and dogs", "limit": 3}', chunks=5)

    answer = await gpt.complete(ask(tools=(SEARCH,)))

    assert answer.tool_calls == (
        ToolCall(id="call_fake_0", name="search", arguments='{"q": "cats and dogs", "limit": 3}'),)


async def test_several_tool_calls_keep_their_own_arguments(gpt, fake_openai):
    from tests.fakes.openai_server import Reply
    fake_openai.queue(Reply(text="Looking.", tool_calls=(("a", '{"x": 1}'), ("b", '{"y": 2}'))))

    answer = await gpt.complete(ask())

    assert answer.text == "Looking."
    assert [(c.name, c.arguments) for c in answer.tool_calls] == [("a", '{"x": 1}'),
                                                                  ("b", '{"y": 2}')]


async def test_malformed_tool_arguments_pass_through_verbatim(gpt, fake_openai):
    fake_openai.queue_tool_call("search", '{"q": "unterminated', chunks=3)

    answer = await gpt.complete(ask(tools=(SEARCH,)))

    assert answer.tool_calls[0].arguments == '{"q": "unterminated'


async def test_429_is_retried_after_the_servers_retry_after(gpt, fake_openai):
    fake_openai.queue_error(429, retry_after=0.3)
    fake_openai.queue_text("made it")

    started = time.monotonic()
    answer = await gpt.complete(ask())

    assert answer.text == "made it"
    assert len(fake_openai.requests) == 2
    assert time.monotonic() - started >= 0.3


async def test_500s_are_retried_then_reported(gpt, fake_openai):
    for _ in range(4):
        fake_openai.queue_error(500, message="The server had an error")

    with pytest.raises(ModelHTTPError) as caught:
        await gpt.complete(ask())

    assert len(fake_openai.requests) == 4
    assert caught.value.status == 500
    assert caught.value.retryable
    assert "500" in str(caught.value)


async def test_a_bad_request_is_not_retried(gpt, fake_openai, caplog):
    fake_openai.queue_error(400, message="Invalid schema for function 'search'")

    with pytest.raises(ModelHTTPError) as caught:
        await gpt.complete(ask())

    assert len(fake_openai.requests) == 1
    assert not caught.value.retryable
    # The provider's words are for the operator's log, not for the thread.
    assert "Invalid schema" not in str(caught.value)
    assert "Invalid schema" in caplog.text


async def test_a_refused_key_is_an_auth_error_naming_the_variable(gpt, fake_openai):
    fake_openai.queue_error(401)  # the fake echoes the key it got in its message

    with pytest.raises(ModelAuthError) as caught:
        await gpt.complete(ask())

    assert len(fake_openai.requests) == 1
    assert "OPENAI_API_KEY" in str(caught.value)
    assert OPENAI_KEY not in str(caught.value)
    assert isinstance(caught.value.__cause__, Exception)  # raised `from` the vendor error


@pytest.mark.parametrize("status", [400, 404, 429, 500])
async def test_error_messages_never_contain_the_key(gpt, fake_openai, status):
    for _ in range(4):
        fake_openai.queue_error(status, message=f"something about key {OPENAI_KEY} went wrong")

    with pytest.raises(ModelHTTPError) as caught:
        await gpt.complete(ask())

    assert OPENAI_KEY not in str(caught.value)
    assert "DoNotLeak" not in str(caught.value)


async def test_an_error_mid_stream_after_text_is_not_retried(gpt, fake_openai):
    fake_openai.queue_stream_error("Half an ans")
    fake_openai.queue_text("never requested")
    sink = Collector()

    with pytest.raises(ModelHTTPError) as caught:
        await gpt.complete(ask(), sink)

    assert sink.text == "Half an ans"  # the user saw it once, not twice
    assert len(fake_openai.requests) == 1
    assert caught.value.retryable  # the run may be retried by a person


async def test_a_server_that_is_down_is_a_retryable_error():
    pool = ModelPool(env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, retry_base=0.001)
    try:
        with pytest.raises(ModelHTTPError) as caught:
            await pool.get("openai:llama3").complete(ask())
    finally:
        await pool.aclose()
    assert caught.value.retryable
    assert caught.value.status is None
    assert "OPENAI_BASE_URL" in str(caught.value)  # the variable, not its value
    assert "127.0.0.1" not in str(caught.value)


async def test_missing_key_names_the_variable():
    with pytest.raises(MissingCredentials) as caught:
        ModelPool(env={}).get("openai:gpt-4o")
    assert caught.value.variable == "OPENAI_API_KEY"
    assert "OPENAI_API_KEY" in str(caught.value)


async def test_a_base_url_without_a_key_works(fake_openai):
    pool = ModelPool(env={"OPENAI_BASE_URL": fake_openai.url})
    fake_openai.queue_text("hi from llama")
    try:
        answer = await pool.get("openai:llama3.1").complete(ask())
    finally:
        await pool.aclose()
    assert answer.text == "hi from llama"
    assert fake_openai.requests[0].body["model"] == "llama3.1"
    assert fake_openai.requests[0].headers["authorization"].startswith("Bearer ")


async def test_the_key_is_sent_as_a_bearer_token(gpt, fake_openai):
    fake_openai.queue_text("ok")
    await gpt.complete(ask())
    assert fake_openai.requests[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"


async def test_messages_are_translated_to_chat_completions(gpt, fake_openai):
    fake_openai.queue_text("ok")
    call = ToolCall("call_1", "search", '{"q": "otters"}')

    await gpt.complete(ask(
        user("Find otters", "Ana María (PM)"),
        me("Searching.", call),
        result("call_1", "no results", error=True),
        user("try again", "critic"),
        system="You are the researcher.", tools=(SEARCH,), temperature=0.2,
        max_output_tokens=300))

    body = fake_openai.requests[0].body
    assert body["messages"] == [
        {"role": "system", "content": "You are the researcher."},
        {"role": "user", "name": "Ana_Mar_a_PM", "content": "Find otters"},
        {"role": "assistant", "content": "Searching.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "search", "arguments": '{"q": "otters"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Error: no results"},
        {"role": "user", "name": "critic", "content": "try again"},
    ]
    assert body["tools"] == [{"type": "function", "function": {
        "name": "search", "description": "Search the web.", "parameters": SEARCH.parameters}}]
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 300  # a custom base URL: compatible servers know max_tokens


def test_speaker_names_are_sanitised_for_openai():
    assert speaker_name("Ana María (PM)") == "Ana_Mar_a_PM"
    assert speaker_name("writer-2_b") == "writer-2_b"
    assert speaker_name("x" * 100) == "x" * 64
