"""The one seam every model sits behind: `Model.complete(request) -> ModelResponse`.

Messages are vendor-neutral; each vendor module translates them to its wire
format. A team conversation is seen from one agent's side: its own earlier
turns are `assistant`, everyone else's are `user` turns carrying `name`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "HANDOFF_PREFIX", "Candidate", "ChatMessage", "Model", "ModelRequest", "ModelResponse",
    "RetrySink", "Role", "TextSink", "ToolCall", "ToolSpec", "Usage",
]

#: A swarm agent hands the turn on by calling a tool named this plus the target's name.
HANDOFF_PREFIX = "transfer_to_"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as a model sees it: name, description, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's request to call a tool; `arguments` is the raw JSON text it produced."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one model call consumed.

    `input_tokens` counts every input token; of those, `cached_input_tokens` were read
    from the provider's prompt cache (billed at a tenth or half the price) and
    `cache_write_tokens` were written to it (Anthropic bills them at 1.25x).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens,
                     self.output_tokens + other.output_tokens,
                     self.cached_input_tokens + other.cached_input_tokens,
                     self.cache_write_tokens + other.cache_write_tokens)


Role = Literal["user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the conversation as one agent sees it.

    - user: someone else's words (`name` = the speaker: an agent or a person)
    - assistant: this agent's own earlier turn (text and/or tool calls)
    - tool: the result of one of this agent's tool calls (`tool_call_id`)
    """

    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """A participant a selector may name as the next speaker."""

    name: str
    description: str
    human: bool = False


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Everything a model call needs; `purpose` is `reply` or `select` (pick next speaker), or
    a magentic orchestrator's `plan`, `progress` (ledger JSON) or `answer` (the final one)."""

    model: str
    system: str
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    purpose: Literal["reply", "select", "plan", "progress", "answer"] = "reply"
    agent: str = ""
    candidates: tuple[Candidate, ...] = ()
    max_output_tokens: int | None = None
    temperature: float | None = None
    #: Groups requests whose prefixes repeat (one run's one agent) for a provider's prompt
    #: cache; OpenAI routes requests with one `prompt_cache_key` to the same cache.
    cache_key: str = ""


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """What a model answered: text, tool calls, usage, and which model answered."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    model: str = ""


#: Receives the answer's text, piece by piece, as it streams.
TextSink = Callable[[str], Awaitable[None]]
#: Receives one sentence for the thread when an attempt failed or was too slow and the
#: model tries again, e.g. "OpenAI is slow to answer; trying again (2 of 4)…".
RetrySink = Callable[[str], Awaitable[None]]


@runtime_checkable
class Model(Protocol):
    """A chat model. `name` is the `provider:model` string it was resolved from."""

    name: str

    async def complete(
        self, request: ModelRequest, on_text: TextSink | None = None, *,
        on_retry: RetrySink | None = None,
    ) -> ModelResponse:
        """Answer one request; stream text deltas to `on_text` as they arrive, and tell
        `on_retry` before trying again after a failed or slow attempt."""
        ...

    async def aclose(self) -> None:
        """Release connections (shared clients are closed once)."""
        ...
