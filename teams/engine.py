"""The engine: what happens next is a pure function of the folded state.

    decide(state) -> Action          pure; no clock, no I/O
    perform(state, action, env)      does the one thing (a model call, a tool
                                     call) and returns the events to append

A driver (the host's runner, or `drive` below for tests and benchmarks) loops:
decide, perform, append the events, fold them in, until the run waits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from . import magentic
from .actions import (
    Action,
    AssessProgress,
    AwaitApproval,
    AwaitHuman,
    AwaitPlanReview,
    CallModel,
    Delegate,
    Expire,
    Finish,
    Idle,
    Record,
    RunTool,
    Select,
    SelectWithModel,
    WriteAnswer,
    WritePlan,
)
from .errors import ModelError
from .events import (
    AgentMessage,
    ApprovalDecided,
    ApprovalExpired,
    ClockChecked,
    Event,
    Handoff,
    RunFinished,
    RunPaused,
    SpeakerSelected,
    ToolCallRequested,
    ToolResult,
)
from .models.base import HANDOFF_PREFIX, Model, ModelResponse, RetrySink, TextSink, ToolCall
from .prompts import build_request, build_selector_request, offered, parse_selection, rounds_used
from .spec import Team
from .state import EXPIRED, RunState
from .tools import Tool, ToolContext

__all__ = [
    "Action", "AssessProgress", "AwaitApproval", "AwaitHuman", "AwaitPlanReview", "CallModel",
    "Delegate", "Env", "Expire", "Finish", "Idle", "ModelSource", "Record", "RunTool", "Select",
    "SelectWithModel", "ToolRunner", "WriteAnswer", "WritePlan", "call_events", "deadline",
    "decide", "drive", "invoke_tool", "perform", "reply_events", "time_passed",
]


# -- deciding -----------------------------------------------------------------------
def decide(state: RunState) -> Action:
    """The next action for this state. Pure."""
    if state.finished is not None:
        return Idle("finished")
    if state.paused is not None:  # a paused run waits for `retry`, or ends on `stop`
        return Finish(f"stopped by {state.stop_by}") if state.stop_by is not None \
            else Idle("paused")
    owed = _owed(state)
    if owed:
        return Record(owed)
    if state.stop_by is not None:
        return Finish(f"stopped by {state.stop_by}")
    if state.open_calls:
        # Calls already asked for are settled before the run may end: an approval prompt
        # a person can see must not turn into a button that does nothing.
        pending = state.pending_approvals()
        expired = tuple(c for c in pending if c.expires_at is not None
                        and state.clock >= c.expires_at)
        if expired:
            return Expire(expired)
        first = state.calls[state.open_calls[0]]
        if first.status == "awaiting_approval":
            return AwaitApproval(tuple(pending))
        return RunTool(first)
    if state.condition.fired:
        return Finish(state.condition.fired)
    team = state.team
    if team.budget_tokens is not None and state.budget_spent:  # before any model call, too
        return Finish(f"the token budget of {team.budget_tokens:,} is spent "
                      f"({state.tokens_used:,} tokens used)")
    if state.current is not None:
        if state.current in team.humans:
            return AwaitHuman(state.current)
        call = _CALLS.get(state.current)  # the agent holds the turn: its action, made once
        if call is None:
            call = _CALLS[state.current] = CallModel(state.current)
        return call
    if state.magentic is not None:  # the orchestrator decides who speaks, and when it is done
        return magentic.decide(state)
    agent, how = _next_by_rule(state)
    if agent is None:
        return SelectWithModel(_selector_candidates(state))
    if agent in team.humans:
        return Select(agent, how)
    return CallModel(agent, SpeakerSelected(agent=agent, how=how))


#: The action of an agent that holds the turn (an action is immutable), by agent name.
_CALLS: dict[str, CallModel] = {}


def deadline(state: RunState) -> float | None:
    """When the clock alone would move this run on if nothing else happened first: its
    `timeout:`, or the first pending approval request's expiry."""
    if state.finished is not None or state.paused is not None:
        return None
    times = (state.condition.deadline(state.started_at), state.approval_deadline())
    return min((t for t in times if t is not None), default=None)


def time_passed(state: RunState, now: float) -> list[Event]:
    """What a waiting run records once the clock has passed its `deadline`: the clock
    reading, and, at its time limit, a denial for each approval still pending (the run
    may not end with a live button); [] while there is time left. Pure, like `decide`.
    Approval requests past their expiry expire on the next `decide`."""
    due = deadline(state)
    if due is None or now < due or not decide(state).waits:
        return []
    limit = state.condition.deadline(state.started_at)
    if limit is None or now < limit:
        return [ClockChecked(at=now)]
    denials: list[Event] = [ApprovalDecided(call_id=c.request.call_id, approved=False, by="",
                                            reason="the run's time limit was reached", at=now)
                            for c in state.pending_approvals()]
    return [ClockChecked(at=now), *denials]


def _owed(state: RunState) -> tuple[Event, ...]:
    """What a batch cut short after its first events still owes the log."""
    reply = state.reply
    if reply is not None and state.recorded < len(reply.tool_calls):
        return tuple(call_events(state.team, reply, state.reply_rounds, reply.at,
                                 state.always_approved)[state.recorded:])
    if state.owed_handoff is not None:
        return (state.owed_handoff,)
    return ()


def _next_by_rule(state: RunState) -> tuple[str | None, str]:
    team = state.team
    if state.mention_next:
        return state.mention_next, "mention"
    names = team.names
    if team.strategy == "swarm":
        if state.handoff_target:
            return state.handoff_target, "handoff"
        last = state.last_speaker
        if last in team.humans:  # the person answered: back to whoever asked them
            return state.handoff_source or names[0], "handoff"
        return (last if last in team.by_name else names[0]), "order"
    if team.strategy == "round_robin":
        return team.after.get(state.last_speaker or "", names[0]), "order"
    candidates = _selector_candidates(state)
    if len(candidates) == 1:
        return candidates[0], "order"
    return None, ""


def _selector_candidates(state: RunState) -> tuple[str, ...]:
    names = list(state.team.names)
    if not state.team.allow_repeated_speaker and state.last_speaker in names and len(names) > 1:
        names.remove(state.last_speaker)
    return tuple(names)


# -- doing ------------------------------------------------------------------------------
class ModelSource(Protocol):
    """Where models come from: a name resolved from preferences, then the model by name."""

    def resolve_name(self, *preferred: str | None) -> str: ...
    def get(self, name: str) -> Model: ...


#: Runs one approved (or approval-free) call: the tool, the request, what the host lends it.
ToolRunner = Callable[[Tool, ToolCallRequested, ToolContext], Awaitable[str]]


async def invoke_tool(tool: Tool, request: ToolCallRequested, context: ToolContext) -> str:
    """The plain tool runner: call the tool with the request's checked arguments."""
    return await tool.invoke(request.args, context)


@dataclass
class Env:
    """What `perform` needs from its driver.

    `models` and `run_tool` are seams a driver may wrap (tracing does); `on_turn`
    is told when an agent starts its turn, `on_text` gives where its text streams.
    """

    models: ModelSource
    now: Callable[[], float] = lambda: 0.0
    tool_context: Callable[[ToolCallRequested], ToolContext] = \
        field(default=lambda request: ToolContext(agent=request.agent))
    on_text: Callable[[str], TextSink | None] = field(default=lambda agent: None)
    on_turn: Callable[[str], Awaitable[None]] | None = None
    run_tool: ToolRunner = invoke_tool
    #: Where an agent's model says, before a retry, that it is slow ("" for the selector).
    on_retry: Callable[[str], RetrySink | None] = field(default=lambda agent: None)


async def perform(state: RunState, action: Action, env: Env) -> list[Event]:
    """Carry out one action; return the events to append ([] when the run waits)."""
    if action.waits:
        return []
    return await _PERFORMERS[type(action)](state, action, env)


async def _finish(state: RunState, action: Finish, env: Env) -> list[Event]:
    return [RunFinished(reason=action.reason, at=env.now())]


async def _select(state: RunState, action: Select, env: Env) -> list[Event]:
    return [SpeakerSelected(agent=action.agent, how=action.how, at=env.now())]


async def _expire(state: RunState, action: Expire, env: Env) -> list[Event]:
    at = env.now()
    return [ApprovalExpired(call_id=c.request.call_id, at=at) for c in action.calls]


async def _record(state: RunState, action: Record, env: Env) -> list[Event]:
    at = env.now()
    return [replace(e, at=at) for e in action.events]


async def _select_with_model(state: RunState, action: SelectWithModel, env: Env) -> list[Event]:
    at = env.now()
    name = env.models.resolve_name(state.team.selector_model, state.team.model)
    try:
        response = await env.models.get(name).complete(
            build_selector_request(state, action.candidates, name), on_retry=env.on_retry(""))
    except ModelError as exc:
        return [RunPaused(reason=f"choosing the next speaker failed: {exc}", at=at)]
    agent, how = parse_selection(response.text, action.candidates, state)
    return [SpeakerSelected(agent=agent, how=how, usage=response.usage, at=at)]


async def _call_model(state: RunState, action: CallModel, env: Env) -> list[Event]:
    at = env.now()
    selected = [SpeakerSelected(agent=action.agent, how=action.select.how, at=at)] \
        if action.select else []
    agent = state.team.by_name[action.agent]
    name = env.models.resolve_name(agent.model, state.team.model)
    if env.on_turn is not None:
        await env.on_turn(action.agent)
    try:
        model = env.models.get(name)
        response = await model.complete(build_request(state, action.agent, name),
                                        env.on_text(action.agent),
                                        on_retry=env.on_retry(action.agent))
    except ModelError as exc:
        return [*selected, RunPaused(reason=str(exc), agent=action.agent, at=env.now())]
    return [*selected, *reply_events(state, action.agent, response, env.now())]


def reply_events(state: RunState, agent_name: str, response: ModelResponse, at: float) -> list[Event]:
    """The events a model reply becomes: the message, then each of its tool calls checked.

    `state` is the state the request was built from (before the reply is folded in).
    """
    heard = state.human_messages
    if not response.tool_calls:
        return [AgentMessage(agent=agent_name, text=response.text, usage=response.usage,
                             model=response.model, heard=heard, at=at)]
    message = AgentMessage(agent=agent_name, text=response.text, usage=response.usage,
                           tool_calls=_unique_ids(state, response.tool_calls),
                           model=response.model, heard=heard, at=at)
    return [message, *call_events(state.team, message, rounds_used(state, agent_name), at,
                                  state.always_approved)]


def _unique_ids(state: RunState, calls: tuple[ToolCall, ...]) -> tuple[ToolCall, ...]:
    # Some OpenAI-compatible servers leave ids empty or reuse them; approvals and results
    # are matched by id, so a missing or repeated one gets a fresh one (kept in the log).
    seen: set[str] = set()
    out = []
    for j, call in enumerate(calls):
        if not call.id or call.id in seen or call.id in state.calls:
            n, fresh = 0, f"call_{state.model_calls}_{j}"
            while fresh in seen or fresh in state.calls:
                n += 1
                fresh = f"call_{state.model_calls}_{j}_{n}"
            call = ToolCall(fresh, call.name, call.arguments)
        seen.add(call.id)
        out.append(call)
    return tuple(out)


def call_events(team: Team, message: AgentMessage, rounds: int, at: float,
                approved: Collection[str] = ()) -> list[Event]:
    """One ToolCallRequested per call of `message`, checked against what the agent was offered;
    a tool in `approved` (approved for the rest of the run) needs no approval.

    A pure function of its arguments, so a log cut short after the message can be
    completed with exactly the events an uninterrupted run would have written.
    """
    agent = team.by_name[message.agent]
    offer = offered(team, agent, rounds)
    names = {spec.name for spec in offer}
    events: list[Event] = []
    handed_off = False
    for call in message.tool_calls:
        args: dict = {"_raw": call.arguments}
        needs_approval, problem = False, ""
        target = call.name[len(HANDOFF_PREFIX):] if call.name.startswith(HANDOFF_PREFIX) else None
        tool = agent.tool(call.name)
        if call.name not in names:
            if not offer and (agent.tools or agent.handoffs):
                problem = (f"No more tool calls this turn (the limit is {team.max_tool_rounds} "
                           f"rounds): answer in words now.")
            else:
                known = ", ".join(sorted(names)) or "none"
                problem = f"There is no tool named {call.name!r}. Available tools: {known}."
        elif target is not None and target in agent.handoffs:
            args = {}
            if handed_off:
                problem = "Already handed off; only the first handoff counts."
            handed_off = True
        elif tool is not None:
            try:
                args = tool.validate(call.arguments)
            except ValueError as exc:
                problem = str(exc)
            else:
                # A pinned tool (run_code under the local executor) asks every time.
                needs_approval = tool.approval == "always" and (
                    tool.name not in approved or tool.pinned)
        events.append(ToolCallRequested(agent=message.agent, call_id=call.id, tool=call.name,
                                        args=args, needs_approval=needs_approval,
                                        problem=problem, at=at))
    return events


async def _run_tool(state: RunState, action: RunTool, env: Env) -> list[Event]:
    call = action.call
    req = call.request
    if req.problem:
        return [ToolResult(call_id=req.call_id, output=req.problem, error=True, at=env.now())]
    if call.expired is not None:
        return [ToolResult(call_id=req.call_id, output=EXPIRED, error=True, at=env.now())]
    if call.decision is not None and not call.decision.approved:
        why = f": {call.decision.reason}" if call.decision.reason else ""
        who = f"A person ({call.decision.by})" if call.decision.by else "The run's time limit"
        return [ToolResult(call_id=req.call_id, error=True, at=env.now(),
                           output=f"{who} denied this call{why}. Do not retry it unchanged.")]
    target = state.handoff_of(req)
    if target is not None:
        at = env.now()
        return [ToolResult(call_id=req.call_id, output=f"Transferred to {target}.", at=at),
                Handoff(source=req.agent, target=target, at=at)]
    agent = state.team.by_name.get(req.agent)
    tool = agent.tool(req.tool) if agent is not None else None
    if tool is None:
        return [ToolResult(call_id=req.call_id, output=f"Tool {req.tool!r} is no longer available.",
                           error=True, at=env.now())]
    refused = tool.refusal(req.args)  # the team file may have narrowed it since the request
    if refused is not None:
        return [ToolResult(call_id=req.call_id, output=f"{refused}.", error=True, at=env.now())]
    try:
        output = await env.run_tool(tool, req, env.tool_context(req))
    except Exception as exc:  # a tool's failure goes back to the model, never crashes the run
        return [ToolResult(call_id=req.call_id, output=f"{type(exc).__name__}: {exc}", error=True,
                           at=env.now())]
    return [ToolResult(call_id=req.call_id, output=output, at=env.now())]


#: How each action that does not wait is carried out.
_PERFORMERS: dict[type[Action], Callable[[RunState, Any, Env], Awaitable[list[Event]]]] = {
    Finish: _finish,
    Select: _select,
    SelectWithModel: _select_with_model,
    CallModel: _call_model,
    RunTool: _run_tool,
    Expire: _expire,
    Record: _record,
    **magentic.PERFORMERS,
}


# -- a minimal driver -------------------------------------------------------------------
async def drive(state: RunState, env: Env, append: Callable[[list[Event]], Awaitable[None]] | None
                = None, max_steps: int = 100_000) -> Action:
    """Step a run until it waits; fold and hand each batch of events to `append`."""
    for _ in range(max_steps):
        action = decide(state)
        events = await perform(state, action, env)
        if not events:
            return action
        for e in events:
            state.apply(e)
        if append is not None:
            await append(events)
    raise RuntimeError("run did not settle")
