"""Magentic orchestration: an orchestrator plans, delegates, checks progress and replans.

The loop, over the run's log like every strategy:

    PlanWritten (task ledger: facts + plan) -> [AwaitPlanReview until a person approves]
    -> ProgressAssessed (progress ledger, strict JSON) each round:
         satisfied                 -> the orchestrator's final answer; the run finishes
         stalls reach max_stalls   -> PlanWritten (replan) or, after max_resets, give up
         otherwise                 -> (the same ledger, `hands_on`) the next speaker speaks

A person who names a member (`@writer`) gets them next, ahead of the ledger, which is
asked afresh after they speak. An unusable ledger is asked for once more with what was
wrong; a second one counts as a stall. Stalls count up on no progress or a loop and
down (not below 0) on progress. `Orchestration` is the part of the fold this loop keeps;
`decide` and the performers are pure over it, like the rest of the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .actions import (
    Action,
    AssessProgress,
    AwaitPlanReview,
    CallModel,
    Delegate,
    Finish,
    WriteAnswer,
    WritePlan,
)
from .errors import ModelError
from .events import (
    AgentMessage,
    Event,
    Instructed,
    PlanReviewed,
    PlanWritten,
    ProgressAssessed,
    RunPaused,
    SpeakerSelected,
)
from .ledger import (
    ORCHESTRATOR_CONTEXT,
    answer_request,
    parse_plan,
    parse_progress,
    plan_request,
    progress_request,
)
from .models.base import ChatMessage, ModelRequest, ModelResponse
from .spec import ORCHESTRATOR, Orchestrator

if TYPE_CHECKING:
    from .engine import Env
    from .state import RunState, View

__all__ = ["ANSWERED", "PERFORMERS", "Orchestration", "decide", "stall_reason"]

#: Why a magentic run ends when its orchestrator has answered.
ANSWERED = "the orchestrator gave the final answer"

# Asked for every round or every run: one value each (an action is immutable).
_ASSESS, _ASSESS_AGAIN = AssessProgress(), AssessProgress(retry=True)
_FIRST_PLAN, _REVIEWED_PLAN = WritePlan("start"), WritePlan("review")


@dataclass
class Orchestration:
    """What the fold keeps of a magentic run: its plans, the ledger to act on, the counts."""

    spec: Orchestrator
    view: View  # what the orchestrator reads: every message since its latest plan
    plans: dict[int, PlanWritten] = field(default_factory=dict)  # by revision
    revision: int = 0
    approved: bool = False  # the current plan may be carried out
    changes: PlanReviewed | None = None  # a person's changes, not yet in a plan
    ledger: ProgressAssessed | None = None  # the latest ledger, not yet acted on
    retry: ProgressAssessed | None = None  # a first unusable answer: asked once more
    stalls: int = 0
    resets: int = 0
    answered: bool = False
    speaker: str | None = None  # whom the orchestrator last handed the turn to
    asked: tuple[tuple[str, int], ChatMessage] | None = None  # the progress question (ledger.py)
    cache_key: str = ""  # the orchestrator's requests' prompt-cache key (ledger.py)

    @classmethod
    def of(cls, spec: Orchestrator, make_view: Callable[[int], View]) -> Orchestration:
        return cls(spec, make_view(ORCHESTRATOR_CONTEXT))

    @property
    def awaiting_review(self) -> bool:
        """A plan is written and waits for a person's `approve` or changes."""
        return self.revision > 0 and not self.approved and self.changes is None

    # -- the fold -------------------------------------------------------------------------------
    def on_plan(self, e: PlanWritten) -> None:
        self.plans[e.revision] = e
        self.revision = e.revision
        self.approved = not self.spec.plan_review
        self.changes = self.ledger = self.retry = None
        if e.cause == "replan":
            self.resets += 1
            self.stalls = 0

    def on_progress(self, e: ProgressAssessed) -> tuple[str, str] | None:
        """Fold a ledger in; (who speaks next, what they are told) when it hands the turn on
        (the state's fold gives them the turn)."""
        problem = e.problem
        if problem and self.retry is None:  # the round's first unusable one: asked again
            self.retry = e
            return None
        self.retry = None
        self.stalls = self.stalls_with(e.ledger, problem)
        handed = e.instruction
        if handed is not None:  # acted on already
            self.ledger, self.speaker = None, handed[0]
        else:
            self.ledger = e
        return handed

    def stalls_with(self, led: dict[str, Any], problem: str) -> int:
        """The stall count after a final ledger with these answers (or this problem)."""
        if problem or not led["is_progress_being_made"]["answer"] or led["is_in_loop"]["answer"]:
            return self.stalls + 1
        return max(0, self.stalls - 1)

    def hands_on(self, led: dict[str, Any], problem: str, stalls: int) -> bool:
        """Whether a round's final ledger hands the turn on (the usual round): it is usable,
        the task is not done and the team has not stalled out."""
        return not problem and stalls < self.spec.max_stalls and \
            not led["is_request_satisfied"]["answer"]

    def on_instructed(self, e: Instructed) -> None:
        self.ledger, self.speaker = None, e.agent

    def on_mentioned(self, agent: str) -> None:
        """A person named who speaks next: the orchestrator checks progress afresh after."""
        self.ledger = self.retry = None
        self.speaker = agent

    def on_answer(self) -> None:
        if self.ledger is not None and answer(self.ledger, "is_request_satisfied"):
            self.answered = True
        self.ledger = None

    def on_review(self, e: PlanReviewed) -> None:
        if e.revision != self.revision or not self.awaiting_review:
            return  # a late reply to an earlier plan, or a second reply to this one
        if e.approved:
            self.approved = True
        else:
            self.changes = e

    def on_continued(self) -> None:
        self.answered = False
        self.ledger = self.retry = None
        self.stalls = self.resets = 0


def answer(e: ProgressAssessed, key: str) -> Any:
    """One ledger question's answer (None for an unusable ledger)."""
    entry = e.ledger.get(key)
    return entry["answer"] if isinstance(entry, dict) else None


def stall_reason(e: ProgressAssessed) -> str:
    """Why this ledger counted as a stall, in words for the thread."""
    if e.problem:
        return f"the progress check gave no usable answer ({e.problem})"
    key = "is_in_loop" if answer(e, "is_in_loop") else "is_progress_being_made"
    why = e.ledger[key]["reason"].strip() or "no reason given"
    return f"{'going in circles' if key == 'is_in_loop' else 'no progress'}: {why}"


# -- deciding ---------------------------------------------------------------------------------
def decide(state: RunState) -> Action:
    """What a magentic run does when nobody holds the turn. Pure."""
    m = state.magentic
    assert m is not None
    if m.answered:
        return Finish(ANSWERED)
    if m.changes is not None:
        return _REVIEWED_PLAN
    if m.revision == 0:
        return _FIRST_PLAN
    if not m.approved:
        return AwaitPlanReview(m.revision)
    if state.mention_next:  # a person named a member (`@writer`): they speak, then a new check
        return CallModel(state.mention_next, SpeakerSelected(agent=state.mention_next,
                                                             how="mention"))
    if m.retry is not None:
        return _ASSESS_AGAIN
    led = m.ledger
    if led is None:
        return _ASSESS
    return _act_on(m, led, m.stalls)


def _act_on(m: Orchestration, led: ProgressAssessed, stalls: int) -> Action:
    """What a round's final ledger leads to, with the stall count it leaves."""
    if m.hands_on(led.ledger, led.problem, stalls):
        checked = led.ledger
        return Delegate(checked["next_speaker"]["answer"],
                        checked["instruction_or_question"]["answer"])
    if not led.problem and led.ledger["is_request_satisfied"]["answer"]:
        return WriteAnswer()
    spec = m.spec
    if stalls >= spec.max_stalls:
        why = stall_reason(led)
        if m.resets >= spec.max_resets:
            tries = (f"after {m.resets} new plan{'s' if m.resets != 1 else ''}" if m.resets
                     else "without replanning (max_resets is 0)")
            return Finish(f"the orchestrator gave up {tries}: {why}")
        return WritePlan("replan", why)
    return _ASSESS  # an unusable ledger, asked again: not yet a stall out


# -- doing ------------------------------------------------------------------------------------
async def _ask(state: RunState, env: Env, build: Callable[..., ModelRequest], *args: str,
               stream: bool = False) -> ModelResponse | RunPaused:
    """One call of the orchestrator's model (its request `build(state, model, *args)`), or
    the pause a failure becomes."""
    m = state.magentic
    name = env.models.resolve_name(m.spec.agent.model if m is not None else None,
                                   state.team.model)
    if env.on_turn is not None:
        await env.on_turn(ORCHESTRATOR)
    try:
        return await env.models.get(name).complete(
            build(state, name, *args), env.on_text(ORCHESTRATOR) if stream else None,
            on_retry=env.on_retry(ORCHESTRATOR))
    except ModelError as exc:
        return RunPaused(reason=str(exc), agent=ORCHESTRATOR, at=env.now())


async def _write_plan(state: RunState, action: WritePlan, env: Env) -> list[Event]:
    m = state.magentic
    assert m is not None
    response = await _ask(state, env, plan_request, action.cause, action.reason)
    if isinstance(response, RunPaused):
        return [response]
    facts, plan = parse_plan(response.text)
    return [PlanWritten(revision=m.revision + 1, facts=facts, plan=plan, cause=action.cause,
                        reason=action.reason, usage=response.usage, model=response.model,
                        at=env.now())]


async def _assess(state: RunState, action: AssessProgress, env: Env) -> list[Event]:
    response = await _ask(state, env, progress_request)
    if isinstance(response, RunPaused):
        return [response]
    ledger, problem = parse_progress(response.text, state.team)
    m = state.magentic
    assert m is not None
    # Handing the turn on needs no model: recorded with the ledger (`hands_on`), as `decide`
    # would act on it; not when this call spent the token budget (the run ends without a
    # word to anyone).
    budget = state.team.budget_tokens
    hands_on = (budget is None or state.tokens_used + response.usage.total < budget) and \
        m.hands_on(ledger, problem, m.stalls_with(ledger, problem))
    return [ProgressAssessed(ledger=ledger, problem=problem,
                             reply=response.text if problem else "", usage=response.usage,
                             model=response.model, hands_on=hands_on, at=env.now())]


async def _delegate(state: RunState, action: Delegate, env: Env) -> list[Event]:
    return [Instructed(agent=action.agent, text=action.text, at=env.now())]


async def _write_answer(state: RunState, action: WriteAnswer, env: Env) -> list[Event]:
    response = await _ask(state, env, answer_request, stream=True)
    if isinstance(response, RunPaused):
        return [response]
    return [AgentMessage(agent=ORCHESTRATOR, text=response.text, usage=response.usage,
                         model=response.model, at=env.now())]


#: How each of the orchestrator's actions is carried out (the engine adds them to its table).
PERFORMERS: dict[type[Action], Callable[[RunState, Any, Env], Awaitable[list[Event]]]] = {
    WritePlan: _write_plan,
    AssessProgress: _assess,
    Delegate: _delegate,
    WriteAnswer: _write_answer,
}
