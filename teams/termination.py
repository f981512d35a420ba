"""Termination conditions: AutoGen's set, composable with `any` / `all`.

A condition watches the run's events since the last (re)start and latches a
reason once it fires. `reset()` clears it when a run is continued. Parsing from
a team file lives in `parse_termination`, which reports the path of a bad entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._duration import seconds
from .events import (
    AgentMessage,
    Event,
    Handoff,
    HumanMessage,
    StopRequested,
    ToolCallRequested,
    ToolResult,
)

__all__ = [
    "KINDS", "AllOf", "AnyOf", "Condition", "HandoffTo", "MaxMessages", "SourceMatch", "Stop",
    "TerminationSpecError", "TextMention", "Timeout", "TokenUsage", "ToolCalled", "has_timeout",
    "names_in", "parse_termination",
]


class Condition:
    """Watches events; `fired` holds the reason once it has fired."""

    fired: str | None = None

    def observe(self, event: Event, started_at: float) -> None:
        """Update on one event."""

    def reset(self) -> None:
        self.fired = None

    def deadline(self, started_at: float) -> float | None:
        """When the clock alone would make this fire (a `timeout:` not yet reached)."""
        return None

    def describe(self) -> str:
        return type(self).__name__


@dataclass
class TextMention(Condition):
    text: str
    sources: tuple[str, ...] = ()
    fired: str | None = None

    def observe(self, event: Event, started_at: float) -> None:
        if isinstance(event, AgentMessage):
            speaker, body = event.agent, event.text
        elif isinstance(event, HumanMessage) and self.sources:
            speaker, body = event.user, event.text
        else:
            return
        if (not self.sources or speaker in self.sources) and self.text in body:
            self.fired = f"{speaker} said {self.text!r}"

    def describe(self) -> str:
        return f"someone says {self.text!r}"


@dataclass
class MaxMessages(Condition):
    limit: int
    count: int = 0
    fired: str | None = None

    def observe(self, event: Event, started_at: float) -> None:
        if isinstance(event, AgentMessage | HumanMessage):
            self.count += 1
            if self.count >= self.limit:
                self.fired = f"{self.limit} messages reached"

    def reset(self) -> None:
        self.fired, self.count = None, 0

    def describe(self) -> str:
        return f"{self.limit} messages"


@dataclass
class TokenUsage(Condition):
    max_total: int | None = None
    max_input: int | None = None
    max_output: int | None = None
    used_in: int = 0
    used_out: int = 0
    fired: str | None = None

    def observe(self, event: Event, started_at: float) -> None:
        if not isinstance(event, AgentMessage):
            return
        self.used_in += event.usage.input_tokens
        self.used_out += event.usage.output_tokens
        total = self.used_in + self.used_out
        for limit, used, what in ((self.max_total, total, "total"),
                                  (self.max_input, self.used_in, "input"),
                                  (self.max_output, self.used_out, "output")):
            if limit is not None and used >= limit:
                self.fired = f"{what} token budget of {limit} used"

    def reset(self) -> None:
        self.fired, self.used_in, self.used_out = None, 0, 0


@dataclass
class Timeout(Condition):
    seconds: float
    fired: str | None = None

    def observe(self, event: Event, started_at: float) -> None:
        if event.at and started_at and event.at - started_at >= self.seconds:
            self.fired = f"time limit of {self.seconds:g} s reached"

    def deadline(self, started_at: float) -> float | None:
        return None if self.fired or not started_at else started_at + self.seconds


@dataclass
class SourceMatch(Condition):
    sources: tuple[str, ...]
    fired: str | None = None

    def observe(self, event: Event, started_at: float) -> None:
        if isinstance(event, AgentMessage) and event.agent in self.sources and not event.tool_calls:
            self.fired = f"{event.agent} replied"


@dataclass
class HandoffTo(Condition):
    target: str
    fired: str | None = None

    def observe(self, event: Event, started_at: float) -> None:
        if isinstance(event, Handoff) and event.target == self.target:
            self.fired = f"{event.source} handed off to {event.target}"


@dataclass
class Stop(Condition):
    fired: str | None = None

    def observe(self, event: Event, started_at: float) -> None:
        if isinstance(event, StopRequested):
            self.fired = f"stopped by {event.by}"


@dataclass
class ToolCalled(Condition):
    tools: tuple[str, ...]
    pending: dict[str, str] = field(default_factory=dict)
    fired: str | None = None

    def observe(self, event: Event, started_at: float) -> None:
        if isinstance(event, ToolCallRequested) and event.tool in self.tools:
            self.pending[event.call_id] = event.tool
        elif isinstance(event, ToolResult) and event.call_id in self.pending and not event.error:
            self.fired = f"{self.pending.pop(event.call_id)} ran"

    def reset(self) -> None:
        self.fired = None
        self.pending.clear()


@dataclass
class _Group(Condition):
    """`any` / `all`: children that reset together and share the earliest deadline."""

    children: list[Condition]
    fired: str | None = None

    def deadline(self, started_at: float) -> float | None:
        times = (c.deadline(started_at) for c in self.children if not c.fired)
        return min((t for t in times if t is not None), default=None)

    def reset(self) -> None:
        self.fired = None
        for c in self.children:
            c.reset()


@dataclass
class AnyOf(_Group):
    def observe(self, event: Event, started_at: float) -> None:
        for c in self.children:
            c.observe(event, started_at)
            if c.fired and not self.fired:
                self.fired = c.fired


@dataclass
class AllOf(_Group):
    def observe(self, event: Event, started_at: float) -> None:
        for c in self.children:
            if not c.fired:
                c.observe(event, started_at)
        if not self.fired and all(c.fired for c in self.children):
            self.fired = " and ".join(c.fired or "" for c in self.children)


def has_timeout(condition: Condition) -> bool:
    """Whether a `timeout:` sits anywhere in the condition tree."""
    if isinstance(condition, _Group):
        return any(has_timeout(c) for c in condition.children)
    return isinstance(condition, Timeout)


class TerminationSpecError(ValueError):
    """A bad termination entry; `path` locates it in the team file."""

    def __init__(self, path: tuple[str | int, ...], problem: str) -> None:
        self.path = path
        super().__init__(problem)


KINDS = ("text_mention", "max_messages", "token_usage", "timeout", "source_match",
         "handoff", "stop", "tool_call", "any", "all")


def parse_termination(data: Any, path: tuple[str | int, ...] = ("termination",)) -> Condition:
    """Build a condition tree from its team-file form; raise TerminationSpecError."""
    if isinstance(data, list):
        return AnyOf([parse_termination(d, (*path, i)) for i, d in enumerate(data)])
    if not isinstance(data, dict) or len(data) != 1:
        raise TerminationSpecError(path, "each termination condition is a mapping with one key, "
                                   f"one of: {', '.join(KINDS)}")
    ((kind, arg),) = data.items()
    at = (*path, kind)
    if kind in ("any", "all"):
        if not isinstance(arg, list) or not arg:
            raise TerminationSpecError(at, f"'{kind}' takes a non-empty list of conditions")
        children = [parse_termination(d, (*at, i)) for i, d in enumerate(arg)]
        return AnyOf(children) if kind == "any" else AllOf(children)
    try:
        leaf = _leaf(kind, arg)
    except (TypeError, ValueError) as exc:
        raise TerminationSpecError(at, str(exc)) from None
    except KeyError:
        raise TerminationSpecError(at, f"unknown termination condition {kind!r}; "
                                   f"use one of: {', '.join(KINDS)}") from None
    leaf.where = at  # type: ignore[attr-defined]  # for the team file's cross-checks
    return leaf


def _names(arg: Any) -> tuple[str, ...]:
    if isinstance(arg, str):
        return (arg,)
    if isinstance(arg, Sequence) and arg and all(isinstance(a, str) for a in arg):
        return tuple(arg)
    raise ValueError("expected a name or a list of names")


def _positive(arg: Any, what: str) -> int:
    if isinstance(arg, bool) or not isinstance(arg, int | float) or arg <= 0:
        raise ValueError(f"{what} must be a positive number, got {arg!r}")
    return int(arg)


def _leaf(kind: str, arg: Any) -> Condition:
    if kind == "text_mention":
        if isinstance(arg, dict):
            unknown = set(arg) - {"text", "sources"}
            if unknown or not isinstance(arg.get("text"), str):
                raise ValueError("text_mention takes a phrase, or {text: ..., sources: [...]}")
            return TextMention(arg["text"], _names(arg["sources"]) if "sources" in arg else ())
        if not isinstance(arg, str) or not arg:
            raise ValueError("text_mention takes the phrase to look for")
        return TextMention(arg)
    if kind == "max_messages":
        return MaxMessages(_positive(arg, "max_messages"))
    if kind == "token_usage":
        if isinstance(arg, dict):
            keys = {"max_total_tokens": "max_total", "max_prompt_tokens": "max_input",
                    "max_input_tokens": "max_input", "max_completion_tokens": "max_output",
                    "max_output_tokens": "max_output"}
            if not arg or set(arg) - set(keys):
                raise ValueError(f"token_usage takes a number or any of {', '.join(keys)}")
            limits: dict[str, Any] = {keys[k]: _positive(v, k) for k, v in arg.items()}
            return TokenUsage(**limits)
        return TokenUsage(max_total=_positive(arg, "token_usage"))
    if kind == "timeout":
        return Timeout(seconds(arg, "timeout"))
    if kind == "source_match":
        return SourceMatch(_names(arg))
    if kind == "handoff":
        if not isinstance(arg, str) or not arg:
            raise ValueError("handoff takes the name of the target, e.g. handoff: user")
        return HandoffTo(arg)
    if kind == "stop":
        if arg not in (True, None):
            raise ValueError("stop takes no value (write 'stop: true')")
        return Stop()
    if kind == "tool_call":
        return ToolCalled(_names(arg))
    raise KeyError(kind)




def names_in(cond: Condition) -> list[tuple[str, str, tuple[str | int, ...]]]:
    """(role, name, path in the team file) a condition refers to, for cross-checks."""
    if isinstance(cond, AnyOf | AllOf):
        return [n for c in cond.children for n in names_in(c)]
    where: tuple[str | int, ...] = getattr(cond, "where", ("termination",))
    if isinstance(cond, TextMention | SourceMatch):
        return [("source", s, where) for s in cond.sources]
    if isinstance(cond, HandoffTo):
        return [("handoff", cond.target, where)]
    if isinstance(cond, ToolCalled):
        return [("tool", t, where) for t in cond.tools]
    return []
