"""Streamed answers are read from the raw response: server-sent events decoded by hand."""

from __future__ import annotations

import json

import pytest

from threadteam.teams.errors import ModelHTTPError
from threadteam.teams.models._streaming import server_sent_events

from .helpers import Collector, ask

BODY = (b'data: {"a": 1}\n\n'
        b": a comment line\n"
        b"event: content_block_delta\r\n"
        b'data: {"b": 2}\r\n\r\n'
        b"event: ping\n"
        b"data: first line\n"
        b"data:second line\n\n"
        b"data: [DONE]\n\n")
EVENTS = [(b"", b'{"a": 1}'), (b"content_block_delta", b'{"b": 2}'),
          (b"ping", b"first line\nsecond line"), (b"", b"[DONE]")]


async def decode(pieces: list[bytes]) -> list[tuple[bytes, bytes]]:
    async def chunks():
        for piece in pieces:
            yield piece
    return [pair async for pair in server_sent_events(chunks())]


@pytest.mark.parametrize("cut", range(1, len(BODY)))
async def test_events_come_out_whole_however_the_body_is_cut(cut):
    assert await decode([BODY[:cut], BODY[cut:]]) == EVENTS


async def test_a_body_arriving_a_byte_at_a_time_decodes_the_same():
    assert await decode([BODY[i:i + 1] for i in range(len(BODY))]) == EVENTS


async def test_a_long_event_in_many_small_chunks_is_one_event():
    text = json.dumps({"content": "x" * 200_000}).encode()
    body = b"data: " + text + b"\n\n"
    assert await decode([body[i:i + 7] for i in range(0, len(body), 7)]) == [(b"", text)]


async def test_a_last_event_without_its_blank_line_still_counts():
    assert await decode([b'data: {"a": 1}\n']) == [(b"", b'{"a": 1}')]


async def test_a_chunk_that_is_not_json_is_a_broken_answer_not_a_traceback(gpt, fake_openai):
    fake_openai.queue_raw('data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n',
                          "data: {not json\n\n")
    seen = Collector()
    with pytest.raises(ModelHTTPError) as caught:
        await gpt.complete(ask(), seen)
    assert seen.text == "Hel"
    assert "broke off its answer" in str(caught.value)


async def test_an_openai_compatible_server_sending_null_choices_with_usage_is_understood(
        gpt, fake_openai):
    fake_openai.queue_raw(
        'data: {"model": "llama3", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n',
        'data: {"model": "llama3", "choices": null, "usage": {"prompt_tokens": 7, '
        '"completion_tokens": 1, "prompt_tokens_details": null}}\n\n',
        "data: [DONE]\n\n")
    answer = await gpt.complete(ask())
    assert (answer.text, answer.model) == ("Hi", "openai:llama3")
    assert (answer.usage.input_tokens, answer.usage.cached_input_tokens) == (7, 0)


async def test_an_anthropic_event_that_is_not_json_is_a_broken_answer(claude, fake_anthropic):
    fake_anthropic.queue_raw(
        'event: message_start\ndata: {"type": "message_start", "message": {"model": "c", '
        '"usage": {"input_tokens": 5, "output_tokens": 1}}}\n\n',
        "event: content_block_delta\ndata: {not json\n\n")
    with pytest.raises(ModelHTTPError) as caught:
        await claude.complete(ask())
    assert "broke off its answer" in str(caught.value)
