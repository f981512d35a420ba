"""The rehearsal model: offline, deterministic, visibly labelled.

It lets a team's wiring (turns, personas, tools, termination, approvals) be
tried with no key. Every answer depends only on the request, and every text
it writes starts with "[rehearsal] ".
"""

from __future__ import annotations

import json
import re

from .base import (
    HANDOFF_PREFIX,
    ChatMessage,
    ModelRequest,
    ModelResponse,
    RetrySink,
    TextSink,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = ["LABEL", "RehearsalModel"]

LABEL = "[rehearsal] "
# A quoted ALL-CAPS phrase in a system prompt, e.g. 'FINAL ANSWER:' or "RESOLVED":
# teams that end when a marker appears must see one, or a rehearsal never ends.
MARKER = re.compile(r"""['"“]([A-Z][A-Z ]{2,}[A-Z]):?['"”]""")
EXCERPT = 60


class RehearsalModel:
    """Answers without a network: picks speakers, calls tools once, echoes, concludes."""

    name = "rehearsal"

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None, *,
                       on_retry: RetrySink | None = None) -> ModelResponse:
        """Answer deterministically; the text goes to `on_text` in a few chunks.

        It never fails, so `on_retry` is never called.
        """
        calls: tuple[ToolCall, ...] = ()
        if request.purpose == "select":
            text = _select(request)
        else:
            text, calls = _reply(request)
        if on_text is not None:
            for piece in _chunks(text):
                await on_text(piece)
        seen = len(request.system) + sum(len(m.content) + len(m.name or "") for m in request.messages)
        usage = Usage(input_tokens=max(1, seen // 4),
                      output_tokens=max(1, (len(text) + sum(len(c.arguments) for c in calls)) // 4))
        return ModelResponse(text=text, tool_calls=calls, usage=usage, model=self.name)

    async def aclose(self) -> None:
        return None


def _select(request: ModelRequest) -> str:
    # Just the name, no label: a selector's answer is parsed, not shown.
    candidates = request.candidates
    if not candidates:
        return ""
    last = next((m.name for m in reversed(request.messages) if m.role == "user" and m.name), None)
    names = [c.name for c in candidates]
    start = names.index(last) + 1 if last in names else 0
    ordered = [candidates[(start + i) % len(candidates)] for i in range(len(candidates))]
    chosen = next((c for c in ordered if not c.human), ordered[0])
    return chosen.name


def _reply(request: ModelRequest) -> tuple[str, tuple[ToolCall, ...]]:
    agent = request.agent or "agent"
    messages = request.messages
    last = messages[-1] if messages else None
    if last is not None and last.role == "tool":
        called = _tool_name(messages, last.tool_call_id) or "the tool"
        outcome = "failed" if last.is_error else "returned"
        return f"{LABEL}{agent} notes that {called} {outcome} '{_excerpt(last.content)}'", ()
    already_called = any(m.role == "assistant" and m.tool_calls for m in messages)
    if request.tools and not already_called:
        tool = next((t for t in request.tools if not t.name.startswith(HANDOFF_PREFIX)),
                    request.tools[0])
        call = ToolCall(id=f"rehearsal_{len(messages)}", name=tool.name,
                        arguments=json.dumps(_arguments(tool)))
        return f"{LABEL}{agent} calls {tool.name}", (call,)
    text = f"{LABEL}{agent} on '{_excerpt(last.content if last else '')}'"
    if marker := MARKER.search(request.system):
        text += f"\n\n{marker.group(1)}: rehearsal conclusion."
    return text, ()


def _tool_name(messages: tuple[ChatMessage, ...], call_id: str | None) -> str | None:
    for m in reversed(messages):
        for call in m.tool_calls:
            if call.id == call_id:
                return call.name
    return None


def _arguments(tool: ToolSpec) -> dict:
    """Arguments that satisfy the tool's schema: required params and those without defaults."""
    schema = tool.parameters or {}
    required = set(schema.get("required", ()))
    return {name: _value(name, prop)
            for name, prop in (schema.get("properties") or {}).items()
            if name in required or "default" not in prop}


def _value(name: str, prop: dict) -> object:
    if prop.get("enum"):
        return prop["enum"][0]
    if "const" in prop:
        return prop["const"]
    options = prop.get("anyOf") or prop.get("oneOf")
    if options and "type" not in prop:
        usable = [o for o in options if o.get("type") != "null"] or options
        return _value(name, usable[0])
    kind = prop.get("type", "string")
    if isinstance(kind, list):  # e.g. ["string", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    return {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {},
            "null": None}.get(kind, f"rehearsal {name}")


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT else flat[:EXCERPT - 1] + "…"


def _chunks(text: str, pieces: int = 3) -> list[str]:
    if not text:
        return []
    size = -(-len(text) // pieces)
    return [text[i:i + size] for i in range(0, len(text), size)]
