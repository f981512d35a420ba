"""The run is a log: these are its entries.

Each event is a small frozen dataclass with a `kind` tag. `to_json` / `from_json`
are the one serialiser the stores use; a round trip is lossless. `at` is the
wall-clock time the runner stamped (seconds since the epoch); the engine never
reads a clock itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from math import isfinite
from typing import Any, ClassVar

import orjson

from .models.base import ToolCall, Usage

#: The usage of an event that cost nothing; one shared value (a Usage is immutable).
NO_USAGE = Usage()

__all__ = [
    "EVENT_TYPES", "NO_USAGE", "UNREADABLE", "AgentMessage", "ApprovalDecided", "ApprovalExpired", "ClockChecked",
    "Event",
    "Handoff", "HumanMessage", "Instructed", "PlanReviewed", "PlanWritten", "ProgressAssessed",
    "RunContinued", "RunFinished", "RunPaused", "RunResumed", "SpeakerSelected", "StopRequested",
    "TaskStarted", "ToolAlwaysApproved", "ToolCallRequested",
    "ToolResult", "from_dict", "from_json", "to_dict", "to_json", "try_from_json",
]


@dataclass(frozen=True, slots=True)
class Event:
    kind: ClassVar[str] = "event"
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class TaskStarted(Event):
    """Someone summoned `team` with `task`; `approvers` may decide approvals."""

    kind: ClassVar[str] = "task_started"
    team: str
    task: str
    by: str
    approvers: tuple[str, ...] = ()
    team_file: str = ""  # where a user's team came from, to say which --teams-dir it needs


@dataclass(frozen=True, slots=True)
class HumanMessage(Event):
    """A person wrote in the thread (their turn, or an interjection)."""

    kind: ClassVar[str] = "human_message"
    user: str
    text: str
    display_name: str = ""


@dataclass(frozen=True, slots=True)
class SpeakerSelected(Event):
    """The strategy chose who speaks next; `usage` is what a selector model's call cost."""

    kind: ClassVar[str] = "speaker_selected"
    agent: str
    how: str = ""  # "order", "model", "fallback", "mention", "handoff"
    usage: Usage = NO_USAGE


@dataclass(frozen=True, slots=True)
class AgentMessage(Event):
    """An agent's turn: its text, the tool calls it asked for, and what it cost."""

    kind: ClassVar[str] = "agent_message"
    agent: str
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = NO_USAGE
    model: str = ""
    #: How many people's messages the log held when the model's request was built (-1: not
    #: recorded): one written while the model worked lands before this message, unread.
    heard: int = -1


@dataclass(frozen=True, slots=True)
class ToolCallRequested(Event):
    """One tool call of an agent message, validated; may need a person's approval.

    `problem` is set when the engine refuses the call without running it (no such
    tool, invalid arguments, a second handoff); it becomes the call's result.
    """

    kind: ClassVar[str] = "tool_call_requested"
    agent: str
    call_id: str
    tool: str
    args: dict[str, Any]
    needs_approval: bool
    problem: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalDecided(Event):
    """A person approved or denied a pending tool call."""

    kind: ClassVar[str] = "approval_decided"
    call_id: str
    approved: bool
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalExpired(Event):
    """A pending call's approval request went unanswered past the team's `expires_after`."""

    kind: ClassVar[str] = "approval_expired"
    call_id: str


@dataclass(frozen=True, slots=True)
class ToolAlwaysApproved(Event):
    """A person approved `tool` for the rest of the run: later calls of it need no approval."""

    kind: ClassVar[str] = "tool_always_approved"
    tool: str
    by: str


@dataclass(frozen=True, slots=True)
class ToolResult(Event):
    """What a tool call returned (or why it failed / was refused)."""

    kind: ClassVar[str] = "tool_result"
    call_id: str
    output: str
    error: bool = False


@dataclass(frozen=True, slots=True)
class Handoff(Event):
    """An agent passed the turn to another participant (swarm)."""

    kind: ClassVar[str] = "handoff"
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class StopRequested(Event):
    """A person said `stop`."""

    kind: ClassVar[str] = "stop_requested"
    by: str


@dataclass(frozen=True, slots=True)
class RunPaused(Event):
    """The run cannot go on until someone says `retry` (a model or tool failure)."""

    kind: ClassVar[str] = "run_paused"
    reason: str
    agent: str = ""


@dataclass(frozen=True, slots=True)
class RunResumed(Event):
    """Someone said `retry` after a pause."""

    kind: ClassVar[str] = "run_resumed"
    by: str


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    """The termination condition fired (or a person stopped the run)."""

    kind: ClassVar[str] = "run_finished"
    reason: str


@dataclass(frozen=True, slots=True)
class RunContinued(Event):
    """Someone said `continue` after the run finished; termination conditions reset."""

    kind: ClassVar[str] = "run_continued"
    by: str
    instructions: str = ""


@dataclass(frozen=True, slots=True)
class ClockChecked(Event):
    """The runner looked at the clock while the run waited: a `timeout:` may have passed."""

    kind: ClassVar[str] = "clock_checked"


@dataclass(frozen=True, slots=True)
class PlanWritten(Event):
    """A magentic orchestrator's task ledger: the facts it works from and its plan.

    `revision` counts a run's plans from 1; `cause` is `start`, `review` (a person asked
    for changes) or `replan` (the team stalled), and `reason` says why it was rewritten.
    """

    kind: ClassVar[str] = "plan_written"
    revision: int
    facts: str
    plan: str
    cause: str = "start"
    reason: str = ""
    usage: Usage = NO_USAGE
    model: str = ""


@dataclass(frozen=True, slots=True)
class ProgressAssessed(Event):
    """One progress ledger of a magentic orchestrator.

    `ledger` maps each question (is_request_satisfied, is_in_loop, is_progress_being_made,
    next_speaker, instruction_or_question) to its checked `{reason, answer}`. An answer that
    could not be used leaves `ledger` empty, says why in `problem` and keeps the `reply`.
    `hands_on`: the orchestrator gives the turn to the ledger's `next_speaker` with its
    `instruction_or_question` (the usual round; posted as the orchestrator's instruction).
    """

    kind: ClassVar[str] = "progress_assessed"
    ledger: dict[str, Any]
    problem: str = ""
    reply: str = ""
    usage: Usage = NO_USAGE
    model: str = ""
    hands_on: bool = False

    @property
    def instruction(self) -> tuple[str, str] | None:
        """(who speaks next, what they are told) when this ledger hands the turn on."""
        if not self.hands_on:
            return None
        return (self.ledger["next_speaker"]["answer"],
                self.ledger["instruction_or_question"]["answer"])


@dataclass(frozen=True, slots=True)
class Instructed(Event):
    """A magentic orchestrator hands the turn to `agent` (or the person) with `text`.

    Runs now say so in the ledger itself (`ProgressAssessed.hands_on`); this is written
    only for a recorded ledger that did not (a log from before), and folds the same way."""

    kind: ClassVar[str] = "instructed"
    agent: str
    text: str


@dataclass(frozen=True, slots=True)
class PlanReviewed(Event):
    """A person approved plan `revision`, or asked for `changes` to it (magentic plan_review)."""

    kind: ClassVar[str] = "plan_reviewed"
    revision: int
    by: str
    approved: bool
    changes: str = ""
    display_name: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        TaskStarted, HumanMessage, SpeakerSelected, AgentMessage, ToolCallRequested,
        ApprovalDecided, ApprovalExpired, ToolAlwaysApproved, ToolResult, Handoff,
        StopRequested, RunPaused, RunResumed, RunFinished, RunContinued, ClockChecked,
        PlanWritten, ProgressAssessed, Instructed, PlanReviewed,
    )
}

#: Events with a field of any JSON value (a model's tool arguments, a ledger), which may
#: hold a NaN or an infinity.
_ANY_VALUES: frozenset[type[Event]] = frozenset({ToolCallRequested, ProgressAssessed})


def to_dict(event: Event) -> dict[str, Any]:
    """The event as plain JSON-able data, tagged with its kind."""
    data = _plain(event)
    data["kind"] = event.kind
    return data


_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(cls: type) -> tuple[str, ...] | None:
    if cls not in _FIELD_NAMES:
        _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls)) if is_dataclass(cls) else None
    return _FIELD_NAMES[cls]


def _plain(value: Any) -> Any:
    # What `dataclasses.asdict` gives, without its deep copies of immutable values
    # (it is the hot path of every append).
    names = _field_names(type(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, tuple | list):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from `to_dict` output."""
    data = dict(data)
    cls = EVENT_TYPES[data.pop("kind")]
    if cls is AgentMessage:
        data["tool_calls"] = tuple(ToolCall(**c) for c in data.get("tool_calls", ()))
        data["usage"] = Usage(**data.get("usage", {}))
    elif cls is SpeakerSelected or cls is PlanWritten or cls is ProgressAssessed:
        data["usage"] = Usage(**data.get("usage", {}))
    elif cls is TaskStarted:
        data["approvers"] = tuple(data.get("approvers", ()))
    names = _field_names(cls) or ()
    return cls(**{k: v for k, v in data.items() if k in names})


def to_json(event: Event) -> str:
    """Serialise one event for a store (the same text as encoding `to_dict(event)`, up to
    how a float is spelled)."""
    # The hot path of every append: orjson walks the event's tuples and dicts itself and
    # asks `_encodable` only for the dataclasses inside (Usage, ToolCall), ~16x faster than
    # the stdlib encoder. What orjson refuses (an int beyond 64 bits, a lone surrogate, a
    # non-str key) or would change (a NaN or infinity it writes as null) goes to the stdlib
    # encoder, which writes it as it always did.
    names = _field_names(type(event)) or ()
    data = {name: getattr(event, name) for name in names}
    data["kind"] = event.kind
    if (type(event) in _ANY_VALUES and _has_nonfinite(data)) or not isfinite(event.at):
        return _ENCODER.encode(data)
    try:
        return orjson.dumps(data, default=_encodable,
                            option=orjson.OPT_PASSTHROUGH_DATACLASS).decode()
    except orjson.JSONEncodeError:
        return _ENCODER.encode(data)


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nonfinite(v) for v in value)
    return False


def _encodable(value: Any) -> Any:
    names = _field_names(type(value))
    if names is None:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return {name: getattr(value, name) for name in names}


# json.dumps with options would build a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_encodable)


def from_json(text: str) -> Event:
    """Parse one stored event."""
    # orjson reads ~4x faster than the stdlib. What it refuses (the NaN, infinity or lone
    # surrogate the stdlib encoder wrote) the stdlib reads; and an event that may hold
    # any JSON value is read again by the stdlib, as orjson would read an integer beyond
    # 64 bits as a float.
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = json.loads(text)
    else:
        if type(data) is dict and data.get("kind") in _ANY_VALUE_KINDS:
            data = json.loads(text)
    return from_dict(data)


#: What `from_json` raises for text that is no event this version knows: an unknown kind
#: or field (a newer threadteam wrote it, say), or not JSON at all.
UNREADABLE = (KeyError, TypeError, ValueError)


def try_from_json(text: str) -> Event | None:
    """`from_json`, or None for an event this version cannot read."""
    try:
        return from_json(text)
    except UNREADABLE:
        return None


_ANY_VALUE_KINDS = frozenset(cls.kind for cls in _ANY_VALUES)
