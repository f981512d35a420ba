"""OpenAI Chat Completions, and any OpenAI-compatible server, behind the `Model` seam.

`OPENAI_BASE_URL` points the same code at Ollama, vLLM or LM Studio; those
servers ignore the key, so a placeholder stands in when none is set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import openai

from ..errors import MissingCredentials, ModelHTTPError
from ._retry import Failure, RetryPolicy, retry_after_seconds
from ._streaming import StreamingModel, Turn
from .base import ChatMessage, ModelRequest, ModelResponse, ToolCall, Usage

__all__ = ["OpenAIModel", "make_client", "speaker_name", "to_openai_messages"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Compatible servers accept any key, but the client refuses to start without one.
PLACEHOLDER_KEY = "threadteam-no-key"
# The client's default; every model call sets its own from the pool's RetryPolicy. The
# read timeout is the longest silence between streamed chunks, not the whole answer.
TIMEOUT = openai.Timeout(30.0, connect=10.0)


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
                 policy: RetryPolicy | None = None, owns_client: bool = False) -> None:
        super().__init__(client, model, policy=policy, owns_client=owns_client)
        self._custom = str(client.base_url).rstrip("/") != DEFAULT_BASE_URL

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
        if request.max_output_tokens:
            # OpenAI's reasoning models refuse `max_tokens`; most compatible servers
            # only know `max_tokens`.
            key = "max_tokens" if self._custom else "max_completion_tokens"
            params[key] = request.max_output_tokens
        return params

    async def _open(self, params: dict) -> Any:
        return await self._client.chat.completions.create(**params)

    async def _consume(self, stream: Any, turn: Turn) -> ModelResponse:
        answer = _Answer()
        async for chunk in stream:
            answer.served = chunk.model or answer.served
            if chunk.usage is not None:
                answer.usage = Usage(chunk.usage.prompt_tokens or 0,
                                     chunk.usage.completion_tokens or 0)
            for choice in chunk.choices or ():  # vLLM sends `choices: null` with usage
                delta = choice.delta
                if delta is None:
                    continue
                if delta.content:
                    answer.text.append(delta.content)
                    await turn.text(delta.content)
                for part in delta.tool_calls or ():
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

    def add_tool_delta(self, part: object) -> None:
        """Merge one tool-call fragment; fragments of one call share an `index`."""
        index = getattr(part, "index", None)
        call_id = getattr(part, "id", None)
        if index is None:  # some compatible servers omit it: a new id starts a new call
            index = len(self.calls) if call_id or not self.calls else max(self.calls)
        slot = self.calls.setdefault(index, {"id": "", "name": "", "args": []})
        if call_id:
            slot["id"] = call_id
        function = getattr(part, "function", None)
        if function is not None:
            if function.name:
                slot["name"] = function.name
            if function.arguments:
                slot["args"].append(function.arguments)

    def tool_calls(self) -> tuple[ToolCall, ...]:
        # Arguments stay verbatim, even if malformed: the engine validates them and tells
        # the model. Only "no arguments at all" becomes "{}".
        return tuple(
            ToolCall(id=slot["id"] or f"call_{index}", name=slot["name"],
                     arguments="".join(slot["args"]) or "{}")
            for index, slot in sorted(self.calls.items()))


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
