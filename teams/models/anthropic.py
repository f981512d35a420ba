"""Anthropic Messages behind the `Model` seam: streaming, tool use, our retries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anthropic

from ..errors import MissingCredentials, ModelHTTPError
from ._retry import Failure, retry_after_seconds
from ._streaming import StreamingModel, Turn, server_sent_events
from .base import ChatMessage, ModelRequest, ModelResponse, ToolCall, Usage

__all__ = ["NUDGE", "OPENING", "AnthropicModel", "make_client", "to_anthropic_messages",
           "with_breakpoints"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 1024
# A prompt-cache breakpoint: the prefix up to and including the block is cached (5 min).
CACHED = {"type": "ephemeral"}
# How much of an event that is not JSON an error keeps for the log.
DETAIL_BYTES = 500
# The client's default; every model call sets its own from the pool's RetryPolicy. The
# read timeout is the longest silence between streamed chunks, not the whole answer.
TIMEOUT = anthropic.Timeout(30.0, connect=10.0)
# Anthropic wants strict user/assistant alternation starting with a user turn, and
# some models refuse to continue an assistant turn (prefill); these fill the gaps.
OPENING = "(The conversation starts.)"
NUDGE = "(Your turn.)"
# Error types that arrive inside a 200 stream and are worth another attempt.
RETRYABLE_KINDS = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})
# What each of those means, said after "Anthropic " (the provider's own message goes to the log).
BROKE_OFF = {
    "overloaded_error": "is overloaded and broke off its answer: try again in a minute.",
    "rate_limit_error": "is rate-limiting this key and broke off its answer: wait a minute and "
                        "try again.",
    "api_error": "had a server error and broke off its answer: try again.",
    "timeout_error": "took too long and broke off its answer: try again.",
    "": "broke off its answer with an error: the bot's log has the details.",
}
# The same, as the thread hears it before a retry ("Anthropic is overloaded; trying again").
RETRY_NOTES = {"overloaded_error": "is overloaded", "rate_limit_error": "is rate-limiting this key",
               "api_error": "had a server error", "timeout_error": "is slow to answer"}
# An error type decides over the status where they disagree (a proxy may rewrite statuses).
KIND_STATUS = {"authentication_error": 401, "permission_error": 403}


def make_client(env: Mapping[str, str]) -> anthropic.AsyncAnthropic:
    """One shared client; raises MissingCredentials without ANTHROPIC_API_KEY."""
    key = env.get("ANTHROPIC_API_KEY")
    if not key:
        raise MissingCredentials("Anthropic", "ANTHROPIC_API_KEY")
    # Passing base_url and api_key explicitly keeps the client from consulting
    # os.environ or profile files on disk: `env` is the only source.
    return anthropic.AsyncAnthropic(
        api_key=key,
        base_url=env.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL,
        max_retries=0,  # our retry loop (_retry.py) is the only one
        timeout=TIMEOUT,
        http_client=anthropic.DefaultAioHttpClient(timeout=TIMEOUT),
        # Our own spans already follow the GenAI conventions; the client's would duplicate
        # them and send our trace context to the provider in request headers.
        open_telemetry=False,
    )


class AnthropicModel(StreamingModel):
    """A Claude model on a (usually shared) `AsyncAnthropic` client."""

    provider = "anthropic"
    brand = "Anthropic"
    timeout_type = anthropic.Timeout
    key_variable = "ANTHROPIC_API_KEY"

    def _params(self, request: ModelRequest) -> dict:
        params: dict = {
            "model": self.model,
            "max_tokens": request.max_output_tokens or DEFAULT_MAX_TOKENS,
            "messages": with_breakpoints(to_anthropic_messages(request.messages)),
            "stream": True,
        }
        if request.system:
            params["system"] = [{"type": "text", "text": request.system, "cache_control": CACHED}]
        if request.tools:
            params["tools"] = [{"name": t.name, "description": t.description,
                                "input_schema": t.parameters or {"type": "object"}}
                               for t in request.tools]
        if request.temperature is not None:
            # anthropic 2.x dropped the `temperature` keyword; the API still takes it.
            params["extra_body"] = {"temperature": request.temperature}
        return params

    def _open(self, params: dict) -> Any:
        # The raw response: the client still sends, authenticates and raises its status
        # errors, but the events are ours to decode (see `server_sent_events`).
        return self._client.messages.with_streaming_response.create(**params)

    async def _consume(self, response: Any, turn: Turn) -> ModelResponse:
        answer = _Answer()
        async for event, data in server_sent_events(response.iter_bytes()):
            if not event or event == b"ping" or not data:
                continue  # what the client's own stream skips too
            await answer.add(_event(event, data, response), turn)
        return ModelResponse(text="".join(answer.text), tool_calls=answer.tool_calls(),
                             usage=answer.usage(), model=f"anthropic:{answer.served or self.model}")

    def _translate(self, exc: Exception, turn: Turn) -> Failure | None:
        """Every anthropic exception becomes one of ours, here and nowhere else."""
        if isinstance(exc, anthropic.APIStatusError):
            status, kind = exc.status_code, _error_type(exc.body)
            if status < 400:  # an `event: error` inside a stream that began with 200
                return Failure(ModelHTTPError(
                    f"Anthropic {BROKE_OFF.get(kind or '', BROKE_OFF[''])}",
                    None, retryable=kind in RETRYABLE_KINDS), detail=self._detail(exc, exc.body),
                    note=RETRY_NOTES.get(kind or "", ""))
            status = KIND_STATUS.get(kind or "", status)
            return self._status_failure(exc, status, exc.body,
                                        retry_after_seconds(exc.response.headers))
        if isinstance(exc, anthropic.APITimeoutError):
            return self._timeout_failure(exc, turn)
        if isinstance(exc, anthropic.APIConnectionError):
            return self._connection_failure(exc, turn)
        if isinstance(exc, anthropic.AnthropicError):
            return self._client_failure(exc)
        return None

    def _unreachable_hint(self) -> str:
        return "check the bot's network connection (and ANTHROPIC_BASE_URL, if set)"


@dataclass
class _Answer:
    """A streamed message being assembled from its events (plain JSON objects)."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, dict] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    served: str = ""

    async def add(self, event: dict, turn: Turn) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            dkind = delta.get("type")
            if dkind == "text_delta":
                text = delta.get("text")
                if text:
                    self.text.append(text)
                    await turn.text(text)
            elif dkind == "input_json_delta" and event.get("index") in self.calls:
                self.calls[event["index"]]["args"].append(delta.get("partial_json") or "")
        elif kind == "message_start":
            message = event.get("message") or {}
            self.served = message.get("model") or ""
            self._count(message.get("usage"))
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                turn.began()
                self.calls[event.get("index", len(self.calls))] = {
                    "id": block.get("id") or "", "name": block.get("name") or "", "args": [],
                    "input": block.get("input")}
            elif block.get("type") == "text" and block.get("text"):
                self.text.append(block["text"])
                await turn.text(block["text"])
        elif kind == "message_delta":
            self._count(event.get("usage"))

    def _count(self, usage: object) -> None:
        # message_delta's counts are cumulative: later values replace earlier ones.
        if isinstance(usage, dict):
            self.counts.update((k, v) for k, v in usage.items() if isinstance(v, int))

    def usage(self) -> Usage:
        """Anthropic counts uncached, cache-written and cache-read input apart; ours is the
        sum, with the cached part and the written part said separately."""
        c = self.counts
        read, written = c.get("cache_read_input_tokens", 0), c.get("cache_creation_input_tokens", 0)
        return Usage(c.get("input_tokens", 0) + read + written, c.get("output_tokens", 0),
                     cached_input_tokens=read, cache_write_tokens=written)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        # The JSON stays exactly as streamed, even if malformed: the engine validates it.
        return tuple(
            ToolCall(id=c["id"], name=c["name"],
                     arguments="".join(c["args"]) or json.dumps(c["input"] or {}))
            for _, c in sorted(self.calls.items()))


def to_anthropic_messages(messages: tuple[ChatMessage, ...] | list[ChatMessage]) -> list[dict]:
    """The conversation as alternating user/assistant turns of content blocks."""
    turns: list[dict] = []
    for m in messages:
        role, blocks = _blocks(m)
        if not blocks:
            continue  # the API rejects empty turns and empty text blocks
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":  # tool results must lead the turn that answers a tool call
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": OPENING}]})
    if turns[-1]["role"] == "assistant":
        turns.append({"role": "user", "content": [{"type": "text", "text": NUDGE}]})
    return turns


def with_breakpoints(turns: list[dict]) -> list[dict]:
    """`turns` with prompt-cache breakpoints: one on the last block (everything sent is
    cached for the next request), and one where this agent's previous request ended,
    just before its own latest turn, so that request's cache entry is found however many
    blocks others added since (a breakpoint looks back only 20 blocks). With the system
    block's, that is three of the four breakpoints Anthropic allows."""
    turns[-1]["content"][-1]["cache_control"] = CACHED
    for i in range(len(turns) - 2, 0, -1):
        if turns[i]["role"] == "assistant":
            turns[i - 1]["content"][-1]["cache_control"] = CACHED
            break
    return turns


def _blocks(m: ChatMessage) -> tuple[str, list[dict]]:
    if m.role == "tool":
        block: dict = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
        if m.content:
            block["content"] = m.content
        if m.is_error:
            block["is_error"] = True
        return "user", [block]
    blocks: list[dict] = []
    if m.role == "assistant":
        if m.content.strip():
            blocks.append({"type": "text", "text": m.content})
        blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c)}
                   for c in m.tool_calls]
        return "assistant", blocks
    if m.content.strip():
        # Messages carry no speaker name field, so the name goes into the text.
        text = f"{m.name}: {m.content}" if m.name else m.content
        blocks.append({"type": "text", "text": text})
    return "user", blocks


def _tool_input(call: ToolCall) -> dict:
    # A call whose JSON was malformed was already answered with an error result; the
    # API still needs an object here.
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _event(name: bytes, data: bytes, response: Any) -> dict:
    """One streamed event; an `error` event (or one that is no JSON object) raises the
    client's own `APIStatusError` with the response's status (200), as its stream would."""
    try:
        body: Any = json.loads(data)
    except ValueError:
        body = data[:DETAIL_BYTES].decode(errors="replace")
    if name == b"error" or not isinstance(body, dict):
        raise anthropic.APIStatusError(f"{body}", response=response.http_response, body=body)
    return body


def _error_type(body: object) -> str | None:
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("type"), str):
            return inner["type"]
    return None
