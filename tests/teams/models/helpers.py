"""Builders for model requests, shared by the model tests."""

from __future__ import annotations

from threadteam.teams.models import ChatMessage, ModelRequest, ToolCall, ToolSpec

# Shaped like a real key, so both exact and pattern redaction are exercised.
OPENAI_KEY = "sk-test-DoNotLeak0123456789abcdefXYZ"
ANTHROPIC_KEY = "sk-ant-" + "test-DoNotLeak0123456789abcdefXYZ"  # built: not a real key
# A host name that must never reach a thread: where an internal model server lives.
INTERNAL_HOST = "internal-llm.corp.example"

SEARCH = ToolSpec("search", "Search the web.", {
    "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})


def user(text: str, name: str | None = None) -> ChatMessage:
    return ChatMessage("user", text, name=name)


def me(text: str = "", *calls: ToolCall) -> ChatMessage:
    """This agent's own earlier turn."""
    return ChatMessage("assistant", text, tool_calls=calls)


def result(call_id: str, text: str, *, error: bool = False) -> ChatMessage:
    return ChatMessage("tool", text, tool_call_id=call_id, is_error=error)


def ask(*messages: ChatMessage, system: str = "You are terse.", **kw) -> ModelRequest:
    return ModelRequest(model="m", system=system, messages=messages or (user("hi", "alice"),),
                        agent=kw.pop("agent", "writer"), **kw)


class Collector:
    """An `on_text` sink that remembers every delta."""

    def __init__(self) -> None:
        self.deltas: list[str] = []

    async def __call__(self, text: str) -> None:
        self.deltas.append(text)

    @property
    def text(self) -> str:
        return "".join(self.deltas)
