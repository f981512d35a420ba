"""What a run can need next: the actions `engine.decide` returns and `engine.perform` does.

An action that `waits` needs a person (or the clock) before anything can happen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .events import Event, SpeakerSelected
    from .state import CallState

__all__ = [
    "Action", "AssessProgress", "AwaitApproval", "AwaitHuman", "AwaitPlanReview", "CallModel",
    "Delegate", "Expire", "Finish", "Idle", "Record", "RunTool", "Select", "SelectWithModel",
    "WriteAnswer", "WritePlan",
]


@dataclass(frozen=True)
class Action:
    """What the run needs next."""

    #: True when nothing can happen until a person acts (or the clock moves).
    waits: ClassVar[bool] = False


@dataclass(frozen=True)
class Idle(Action):
    reason: str  # "finished" | "paused"

    waits: ClassVar[bool] = True


@dataclass(frozen=True)
class AwaitHuman(Action):
    participant: str

    waits: ClassVar[bool] = True


@dataclass(frozen=True)
class AwaitApproval(Action):
    calls: tuple[CallState, ...]

    waits: ClassVar[bool] = True


@dataclass(frozen=True)
class Finish(Action):
    reason: str


@dataclass(frozen=True)
class Select(Action):
    """A speaker chosen without a model (order, mention, handoff); only records it."""

    agent: str
    how: str


@dataclass(frozen=True)
class SelectWithModel(Action):
    candidates: tuple[str, ...]


@dataclass(frozen=True)
class CallModel(Action):
    agent: str
    select: SpeakerSelected | None = None  # recorded with the reply when chosen by order


@dataclass(frozen=True)
class RunTool(Action):
    call: CallState


@dataclass(frozen=True)
class Expire(Action):
    """Approval requests nobody answered before the team's `expires_after`."""

    calls: tuple[CallState, ...]


@dataclass(frozen=True)
class Record(Action):
    """Events the log owes: the rest of a batch a crash cut short (no model, no tool)."""

    events: tuple[Event, ...]


# -- a magentic orchestrator's actions --------------------------------------------------------
@dataclass(frozen=True)
class WritePlan(Action):
    """Write the task ledger: `start`, `review` (a person's changes) or `replan` (`reason`)."""

    cause: str
    reason: str = ""


@dataclass(frozen=True)
class AwaitPlanReview(Action):
    """Plan `revision` waits for a person's `approve` or changes (plan_review: true)."""

    revision: int

    waits: ClassVar[bool] = True


@dataclass(frozen=True)
class AssessProgress(Action):
    """Ask for this round's progress ledger (again, once, after an unusable answer)."""

    retry: bool = False


@dataclass(frozen=True)
class Delegate(Action):
    """Hand the turn to `agent` with the ledger's instruction or question (no model call)."""

    agent: str
    text: str


@dataclass(frozen=True)
class WriteAnswer(Action):
    """The ledger says the task is done: write the final answer."""
