"""OpenAI Chat Completions, and any OpenAI-compatible server, behind the `Model` seam.

`OPENAI_BASE_URL` points the same code at Ollama, vLLM or LM Studio; those
servers ignore the key, so a placeholder stands in when none is set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import openai

from ..errors import MissingCredentials, ModelHTTPError
from ._retry import Failure, RetryPolicy, retry_after_seconds
from ._streaming import StreamingModel, Turn, server_sent_events
from .base import ChatMessage, ModelRequest, ModelResponse, ToolCall, Usage

__all__ = ["OpenAIModel", "make_client", "speaker_name", "to_openai_messages"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Compatible servers accept any key, but the client refuses to start without one.
PLACEHOLDER_KEY = "threadteam-no-key"
# The client's default; every model call sets its own from the pool's RetryPolicy. The
# read timeout is the longest silence between streamed chunks, not the whole answer.
TIMEOUT = openai.Timeout(30.0, connect=10.0)
# The longest `prompt_cache_key` sent (OpenAI documents none; 64 is what it accepts).
CACHE_KEY_LIMIT = 64
# How much of a chunk that is not JSON an error keeps for the log.
DETAIL_BYTES = 500


def make_client(env: Mapping[str, str]) -> openai.AsyncOpenAI:
    """One shared client for the configured endpoint; raises MissingCredentials if unusable."""
    base_url = env.get("OPENAI_BASE_URL") or None
    key = env.get("OPENAI_API_KEY") or None
    if not key and not base_url:
        raise MissingCredentials("OpenAI", "OPENAI_API_KEY")
    return openai.AsyncOpenAI(
        api_key=key or PLACEHOLDER_KEY,
        base_url=base_url or DEFAULT_BASE_URL,
        organization=env.get("OPENAI_ORG_ID") or None,
        project=env.get("OPENAI_PROJECT_ID") or None,
        max_retries=0,  # our retry loop (_retry.py) is the only one
        timeout=TIMEOUT,
        http_client=openai.DefaultAioHttpClient(timeout=TIMEOUT),
    )


class OpenAIModel(StreamingModel):
    """A Chat Completions model on a (usually shared) `AsyncOpenAI` client."""

    provider = "openai"
    brand = "OpenAI"
    timeout_type = openai.Timeout
    key_variable = "OPENAI_API_KEY"

    def __init__(self, client: openai.AsyncOpenAI, model: str, *,
                 policy: RetryPolicy | None = None, owns_client: bool = False,
                 prompt_cache_key: bool | None = None) -> None:
        super().__init__(client, model, policy=policy, owns_client=owns_client)
        self._custom = str(client.base_url).rstrip("/") != DEFAULT_BASE_URL
        # OpenAI routes requests with one key to one cache; a compatible server may not
        # know the field, so it is sent there only when asked for.
        self._cache_key = not self._custom if prompt_cache_key is None else prompt_cache_key

    @property
    def label(self) -> str:
        # Never the host: an internal server's name is not for a shared thread.
        return "the OpenAI-compatible server" if self._custom else "OpenAI"

    def _params(self, request: ModelRequest) -> dict:
        params: dict = {
            "model": self.model,
            "messages": to_openai_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = [
                {"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}}
                for t in request.tools]
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if self._cache_key and request.cache_key:
            params["prompt_cache_key"] = request.cache_key[:CACHE_KEY_LIMIT]
        if request.max_output_tokens:
            # OpenAI's reasoning models refuse `max_tokens`; most compatible servers
            # only know `max_tokens`.
            key = "max_tokens" if self._custom else "max_completion_tokens"
            params[key] = request.max_output_tokens
        return params

    def _open(self, params: dict) -> Any:
        # The raw response: the client still sends, authenticates and raises its status
        # errors, but the chunks are ours to decode (see `server_sent_events`).
        return self._client.chat.completions.with_streaming_response.create(**params)

    async def _consume(self, response: Any, turn: Turn) -> ModelResponse:
        answer = _Answer()
        async for _, data in server_sent_events(response.iter_bytes()):
            if data.startswith(b"[DONE]"):
                break
            chunk = _chunk(data, response)
            answer.served = chunk.get("model") or answer.served
            usage = chunk.get("usage")
            if usage:
                answer.usage = _usage(usage)
            for choice in chunk.get("choices") or ():  # vLLM sends `choices: null` with usage
                delta = choice.get("delta")
                if not delta:
                    continue
                content = delta.get("content")
                if content:
                    answer.text.append(content)
                    await turn.text(content)
                for part in delta.get("tool_calls") or ():
                    turn.began()
                    answer.add_tool_delta(part)
        return ModelResponse(text="".join(answer.text), tool_calls=answer.tool_calls(),
                             usage=answer.usage, model=f"openai:{answer.served or self.model}")

    def _translate(self, exc: Exception, turn: Turn) -> Failure | None:
        """Every openai exception becomes one of ours, here and nowhere else."""
        if isinstance(exc, openai.APIStatusError):
            return self._status_failure(exc, exc.status_code, exc.body,
                                        retry_after_seconds(exc.response.headers))
        if isinstance(exc, openai.APITimeoutError):
            return self._timeout_failure(exc, turn)
        if isinstance(exc, openai.APIConnectionError):
            return self._connection_failure(exc, turn)
        if isinstance(exc, openai.APIError):  # an error event in the middle of a stream
            return Failure(ModelHTTPError(f"{self.who} broke off its answer with an error: "
                                          "try again.", None, True),
                           detail=self._detail(exc, exc.body))
        if isinstance(exc, openai.OpenAIError):
            return self._client_failure(exc)
        return None

    def _not_found_hint(self) -> str:
        return ", and that OPENAI_BASE_URL ends in /v1" if self._custom else ""

    def _unreachable_hint(self) -> str:
        if self._custom:
            return "check that it is running and that OPENAI_BASE_URL points at it"
        return super()._unreachable_hint()


@dataclass
class _Answer:
    """A streamed answer being assembled from its chunks."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, dict] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    served: str = ""

    def add_tool_delta(self, part: dict) -> None:
        """Merge one tool-call fragment; fragments of one call share an `index`."""
        index = part.get("index")
        call_id = part.get("id")
        if index is None:  # some compatible servers omit it: a new id starts a new call
            index = len(self.calls) if call_id or not self.calls else max(self.calls)
        slot = self.calls.setdefault(index, {"id": "", "name": "", "args": []})
        if call_id:
            slot["id"] = call_id
        function = part.get("function")
        if function:
            if function.get("name"):
                slot["name"] = function["name"]
            if function.get("arguments"):
                slot["args"].append(function["arguments"])

    def tool_calls(self) -> tuple[ToolCall, ...]:
        # Arguments stay verbatim, even if malformed: the engine validates them and tells
        # the model. Only "no arguments at all" becomes "{}".
        return tuple(
            ToolCall(id=slot["id"] or f"call_{index}", name=slot["name"],
                     arguments="".join(slot["args"]) or "{}")
            for index, slot in sorted(self.calls.items()))


def _chunk(data: bytes, response: Any) -> dict:
    """One streamed chunk; an error event (or a chunk that is no JSON object) raises the
    client's own `APIError`, as its stream would."""
    try:
        chunk = json.loads(data)
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict):
        raise openai.APIError("The stream sent a chunk that is not a JSON object.",
                              response.http_request, body=data[:DETAIL_BYTES].decode(errors="replace"))
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        raise openai.APIError(message if isinstance(message, str) and message
                              else "An error occurred during streaming",
                              response.http_request, body=error)
    return chunk


def _usage(usage: dict) -> Usage:
    """Chat Completions usage; cached prompt tokens are counted in `prompt_tokens` too."""
    details = usage.get("prompt_tokens_details") or {}
    return Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0,
                 cached_input_tokens=details.get("cached_tokens") or 0)


_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")


def speaker_name(name: str) -> str:
    """A speaker's name in the form OpenAI accepts for `name` (^[a-zA-Z0-9_-]+$, <= 64)."""
    return _NAME_UNSAFE.sub("_", name.strip()).strip("_")[:64]


def to_openai_messages(request: ModelRequest) -> list[dict]:
    """The conversation in Chat Completions form, system prompt first."""
    out: list[dict] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    out.extend(_one_message(m) for m in request.messages)
    return out


def _one_message(m: ChatMessage) -> dict:
    if m.role == "tool":
        # Chat Completions has no error flag on tool results; say it in the text.
        content = f"Error: {m.content}" if m.is_error else m.content
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": content}
    if m.role == "assistant":
        msg: dict = {"role": "assistant", "content": m.content or None}
        if m.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls]
        elif not m.content:
            msg["content"] = ""
        return msg
    msg = {"role": "user", "content": m.content}
    if m.name and (name := speaker_name(m.name)):
        msg["name"] = name
    return msg
