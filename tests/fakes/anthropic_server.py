"""A local fake of Anthropic Messages, speaking the real wire format (SSE events included).

Same queue API as the OpenAI fake (see `tests/fakes/openai_server.py`):

    fake_anthropic.queue_text("Hello", usage=(25, 4))
    fake_anthropic.queue_tool_call("search", {"q": "cats"}, chunks=4)   # input_json_delta x4
    fake_anthropic.queue_error(529)                                     # overloaded_error
    client = anthropic.AsyncAnthropic(base_url=fake_anthropic.url, api_key="sk-ant-test")

A stream is message_start, then per block content_block_start / _delta... /
_stop, a ping, message_delta (stop_reason, output usage) and message_stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from aiohttp import web

from .openai_server import FakeServer, HTTPFailure, Reply, StreamFailure, split
from .prompt_cache import AnthropicCache

_ANTHROPIC_ERRORS = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 529: "overloaded_error",
}


@dataclass
class FakeAnthropic(FakeServer):
    """Fake `POST /v1/messages`; `url` is the base URL the client takes (no /v1)."""

    path = "/v1/messages"
    url_suffix = ""
    #: Set (`FakeAnthropic(prompt_cache=AnthropicCache())`) to count input tokens from each
    #: request and bill cache writes and reads by its `cache_control` breakpoints.
    prompt_cache: AnthropicCache | None = None

    def refusal(self, body: dict) -> str | None:
        return None if self.prompt_cache is None else self.prompt_cache.refusal(body)

    def error_body(self, failure: HTTPFailure, request: web.Request) -> dict[str, Any]:
        message = failure.message
        if message is None and failure.status == 401:
            # Worst case on purpose: echo the key, so tests prove it never leaks.
            key = request.headers.get("x-api-key") or request.headers.get("authorization", "")
            message = f"invalid x-api-key: {key.removeprefix('Bearer ')}"
        return {"type": "error", "request_id": "req_fake",
                "error": {"type": _ANTHROPIC_ERRORS.get(failure.status, "api_error"),
                          "message": message or f"Error {failure.status}"}}

    def complete_body(self, reply: Reply, body: dict) -> dict[str, Any]:
        content: list[dict] = [{"type": "text", "text": reply.text}] if reply.text else []
        content += [{"type": "tool_use", "id": f"toolu_fake_{i}", "name": n, "input": _loads(a)}
                    for i, (n, a) in enumerate(reply.tool_calls)]
        usage: dict[str, Any] = {"input_tokens": reply.usage[0], "output_tokens": reply.usage[1]}
        if self.prompt_cache is not None:
            fresh, written, read = self.prompt_cache.bill(body)
            usage.update(input_tokens=fresh, cache_creation_input_tokens=written,
                         cache_read_input_tokens=read)
        return {**_message(body, reply.usage), "content": content,
                "stop_reason": "tool_use" if reply.tool_calls else "end_turn", "usage": usage}

    def events(self, step: Reply | StreamFailure, body: dict) -> list[str]:
        usage = getattr(step, "usage", (10, 5))
        message = _message(body, usage)
        if self.prompt_cache is not None and isinstance(step, Reply):
            fresh, written, read = self.prompt_cache.bill(body)
            message["usage"].update(input_tokens=fresh, cache_creation_input_tokens=written,
                                    cache_read_input_tokens=read)
        out = [_event("message_start", {"type": "message_start",
                                        "message": {**message, "content": []}})]
        index = 0
        if step.text:
            out.append(_event("content_block_start", {"type": "content_block_start", "index": 0,
                                                      "content_block": {"type": "text", "text": ""}}))
            out.append(_event("ping", {"type": "ping"}))
            out += [_delta(0, {"type": "text_delta", "text": piece})
                    for piece in split(step.text, getattr(step, "chunks", 2))]
            if isinstance(step, StreamFailure):
                return [*out, _event("error", {"type": "error", "error": {
                    "type": "overloaded_error", "message": step.message}})]
            out.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
            index = 1
        elif isinstance(step, StreamFailure):
            return [*out, _event("error", {"type": "error", "error": {
                "type": "overloaded_error", "message": step.message}})]
        for i, (name, args) in enumerate(step.tool_calls, start=index):
            out.append(_event("content_block_start", {
                "type": "content_block_start", "index": i,
                "content_block": {"type": "tool_use", "id": f"toolu_fake_{i}", "name": name,
                                  "input": {}}}))
            out.append(_delta(i, {"type": "input_json_delta", "partial_json": ""}))
            out += [_delta(i, {"type": "input_json_delta", "partial_json": piece})
                    for piece in split(args, step.chunks)]
            out.append(_event("content_block_stop", {"type": "content_block_stop", "index": i}))
        out.append(_event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use" if step.tool_calls else "end_turn",
                      "stop_sequence": None},
            "usage": {"output_tokens": usage[1]}}))
        return [*out, _event("message_stop", {"type": "message_stop"})]


def _message(body: dict, usage: tuple[int, int]) -> dict[str, Any]:
    return {"id": "msg_fake", "type": "message", "role": "assistant",
            "model": body.get("model", "claude-fake"), "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def _loads(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return {}


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _delta(index: int, delta: dict) -> str:
    return _event("content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": delta})


@pytest_asyncio.fixture
async def fake_anthropic():
    """A running FakeAnthropic for one test."""
    async with FakeAnthropic() as fake:
        yield fake
