"""A run's state: an incremental fold over its events.

`RunState.apply(event)` does O(1) work per event, so a long run never re-folds
its log. Everything `engine.decide` needs is here; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from .approvers import Approvers
from .events import (
    NO_USAGE,
    AgentMessage,
    ApprovalDecided,
    ApprovalExpired,
    ClockChecked,
    Event,
    Handoff,
    HumanMessage,
    Instructed,
    PlanReviewed,
    PlanWritten,
    ProgressAssessed,
    RunContinued,
    RunFinished,
    RunPaused,
    RunResumed,
    SpeakerSelected,
    StopRequested,
    TaskStarted,
    ToolAlwaysApproved,
    ToolCallRequested,
    ToolResult,
)
from .ledger import plan_message
from .magentic import Orchestration
from .models.base import HANDOFF_PREFIX, ChatMessage, Usage
from .prompts import SELECTOR_CONTEXT
from .spec import ORCHESTRATOR, Team
from .termination import Condition

__all__ = ["ALWAYS", "CUT_KEEPS", "EXPIRED", "HANDLERS", "CallState", "RunState", "View",
           "message_tokens"]

# "@bear", but not the "@bear" of "ops@bear.example".
_MENTION = re.compile(r"(?<![\w.])@([A-Za-z][\w-]*)")


#: A full context window keeps its newest 1/CUT_KEEPS when it is cut (see `View._cut`).
CUT_KEEPS = 10

#: What the model is told when nobody decided a call's approval in time.
EXPIRED = "The approval request expired without a decision; the tool did not run."
#: The reason recorded with the approvals that `approve always` gives pending calls.
ALWAYS = "approved for the rest of the run"


@dataclass(slots=True)
class CallState:
    """One requested tool call and what became of it.

    A call that needs approval is decided by its first authorised denial, or once
    `quorum` distinct people approved (`approved_by`); until then `decision` is None.
    """

    request: ToolCallRequested
    number: int
    decision: ApprovalDecided | None = None
    result: ToolResult | None = None
    approved_by: list[str] = field(default_factory=list)
    expires_at: float | None = None  # when an unanswered approval request expires
    expired: ApprovalExpired | None = None

    @property
    def status(self) -> str:
        """awaiting_approval, approved, denied, expired, ready (needs no approval) or done."""
        if self.expired is not None:
            return "expired"
        if self.decision is not None and not self.decision.approved:
            return "denied"
        if self.result is not None:
            return "done"
        if self.decision is not None:
            return "approved"
        return "awaiting_approval" if self.request.needs_approval else "ready"


@dataclass(slots=True)
class View:
    """The conversation window one agent reads, ready to send: newest last.

    It holds at most `limit` messages (and about `budget` tokens, when set). It trims
    in blocks, not one message at a time: the window only grows until the next message
    would overflow it, then all but its newest tenth drop out at once (see `_cut`).
    Between cuts every request is the previous one plus what was said since, so the
    providers' prompt caches serve the whole window; sliding by one message would
    change the prefix of every request and bill it all afresh. Messages that arrive
    while the agent's tool calls are still open (an interjection during an approval)
    are held back until the results are in, because a model expects a call's results
    straight after it.
    """

    limit: int
    budget: int | None = None  # tokens, estimated as in `message_tokens`
    messages: list[ChatMessage] = field(default_factory=list)
    owed_results: int = 0
    held: list[ChatMessage] = field(default_factory=list)
    size: int = 0  # estimated tokens in `messages` (kept only under a budget)
    #: Messages a cut keeps (default: a tenth of `limit`). A view read through a slice of
    #: its newest messages (the selector's) keeps that many and holds up to `limit`.
    keep: int | None = None

    def add(self, message: ChatMessage) -> None:
        """Someone else's words (or the agent's own, without tool calls)."""
        if self.owed_results:
            self.held.append(message)
        else:
            self._push(message)

    def add_own(self, message: ChatMessage) -> None:
        """The agent's own message; the results of its tool calls come next."""
        self._release()
        self._push(message)
        self.owed_results = len(message.tool_calls)

    def add_result(self, message: ChatMessage) -> None:
        """The result of one of the agent's tool calls."""
        self._push(message)
        if self.owed_results:
            self.owed_results -= 1
            if not self.owed_results:
                self._release()

    def restart(self) -> None:
        """Forget everything (a magentic replan starts the team afresh from the new plan)."""
        self.messages.clear()
        self.held.clear()
        self.owed_results = 0

    def _release(self) -> None:
        self.owed_results = 0
        held, self.held = self.held, []
        for m in held:
            self._push(m)

    def _push(self, message: ChatMessage) -> None:
        self.messages.append(message)
        if self.budget is not None:
            self.size += message_tokens(message)
            if self.size > self.budget:
                self._cut()
                return
        if len(self.messages) > self.limit:
            self._cut()

    def _cut(self) -> None:
        """Drop all but the newest tenth of the window (at least one message).

        Why a tenth: the request after a cut is written to the provider's cache afresh,
        while the full history would have been read from it at a tenth of the price.
        Keeping no more than a tenth of what is dropped makes that request cost no more
        than the full history's would, and every request until the next cut costs less.
        """
        messages = self.messages
        size = sum(map(message_tokens, messages)) if self.budget is not None else 0
        if len(messages) <= self.limit and (self.budget is None or size <= self.budget):
            self.size = size  # a stale count (after `restart`): nothing to cut
            return
        keep_count = self.keep if self.keep is not None else max(1, self.limit // CUT_KEEPS)
        if self.budget is None:  # counted in messages only
            start = max(0, len(messages) - keep_count)
            while start > 0 and messages[start].role == "tool":  # the call with its results
                start -= 1
            del messages[:start]
            return
        keep_tokens = self.budget // CUT_KEEPS
        start, kept = len(messages) - 1, message_tokens(messages[-1])
        while start > 0 and len(messages) - start < keep_count:
            more = message_tokens(messages[start - 1])
            if kept + more > keep_tokens:
                break
            start, kept = start - 1, kept + more
        while start > 0 and messages[start].role == "tool":  # keep the call with its results
            start -= 1
        del messages[:start]
        self.size = sum(map(message_tokens, messages))


def message_tokens(message: ChatMessage) -> int:
    """A cheap estimate of a message's tokens: four characters a token, plus framing."""
    size = len(message.content) // 4 + 4
    for call in message.tool_calls:
        size += (len(call.name) + len(call.arguments)) // 4 + 4
    return size


@dataclass
class RunState:
    """Everything known about a run after folding its events."""

    team: Team
    length: int = 0
    task: str = ""
    by: str = ""
    approvers: Approvers = field(default_factory=Approvers)
    started_at: float = 0.0
    history: list[Event] = field(default_factory=list)
    last_speaker: str | None = None
    current: str | None = None
    turn_rounds: int = 0
    calls: dict[str, CallState] = field(default_factory=dict)
    open_calls: list[str] = field(default_factory=list)
    handoff_target: str | None = None
    handoff_source: str | None = None
    mention_next: str | None = None
    stop_by: str | None = None
    finished: str | None = None
    paused: str | None = None
    usage: Usage = field(default_factory=Usage)
    messages: int = 0
    model_calls: int = 0
    # The latest agent message with tool calls, and how many of its calls the log has
    # recorded: a log cut short after the message still gets the rest (engine.Record).
    reply: AgentMessage | None = None
    reply_rounds: int = 0
    recorded: int = 0
    owed_handoff: Handoff | None = None  # a handoff call ran; its Handoff is not logged yet
    task_message: ChatMessage | None = None
    clock: float = 0.0  # the latest time any event was stamped with
    always_approved: dict[str, str] = field(default_factory=dict)  # tool -> who approved it
    # Names this run to a provider's prompt cache (a digest: no task text leaves the bot).
    cache_key: str = ""
    human_messages: int = 0
    unheard: int = 0  # people's messages the latest agent message was not written from
    views: dict[str, View] = field(init=False)
    # What a selector reads: every message, as spoken (None: no selector reads it).
    public: View | None = field(init=False)
    condition: Condition = field(init=False)
    magentic: Orchestration | None = field(init=False)  # strategy: magentic
    _hearers: list[tuple[str, View]] = field(init=False, repr=False)
    _call_numbers: int = 0

    def __post_init__(self) -> None:
        self.condition = self.team.termination()
        self.views = {a.name: View(a.context_messages, a.context_tokens)
                      for a in self.team.agents if not a.human}
        # The selector reads the newest SELECTOR_CONTEXT (its system prompt changes with the
        # candidates, so no cache to keep): trimmed to that many, a block at a time.
        self.public = View(2 * SELECTOR_CONTEXT, keep=SELECTOR_CONTEXT) \
            if self.team.strategy == "selector" else None
        orchestrator = self.team.orchestrator
        self.magentic = Orchestration.of(orchestrator, View) if orchestrator is not None else None
        # Every view a message reaches, by the agent who reads it ("": not an agent's own).
        self._hearers = [*self.views.items(),
                         *((("", self.public),) if self.public is not None else ()),
                         *((("", self.magentic.view),) if self.magentic is not None else ())]

    @classmethod
    def fold(cls, team: Team, events: list[Event]) -> RunState:
        """The state after `events` (a whole log or a prefix)."""
        state = cls(team)
        for e in events:
            state.apply(e)
        return state

    # -- the fold ---------------------------------------------------------------
    def apply(self, e: Event) -> None:
        """Fold one more event in."""
        self.length += 1
        if e.at > self.clock:
            self.clock = e.at
        HANDLERS[type(e)](self, e)
        if type(e) is HumanMessage and self.team.humans:
            # Conditions name the human participant, not a platform user id.
            e = HumanMessage(user=self.team.humans[0], text=e.text, at=e.at)
        self.condition.observe(e, self.started_at)

    def _to_everyone(self, message: ChatMessage, but: str | None = None) -> None:
        for name, view in self._hearers:
            if name == but:
                continue
            if view.owed_results or view.budget is not None:
                view.add(message)
                continue
            # `View.add` in its usual case, inline: every message reaches every view.
            messages = view.messages
            messages.append(message)
            if len(messages) > view.limit:
                view._cut()

    def _on_task_started(self, e: TaskStarted) -> None:
        self.task, self.by, self.started_at = e.task, e.by, e.at
        self.cache_key = hashlib.sha256(
            f"{e.team}\0{e.task}\0{e.by}\0{e.at!r}".encode()).hexdigest()[:16]
        self.approvers = Approvers.parse(e.approvers or (e.by,))
        self.task_message = ChatMessage("user", e.task, name="task")
        self.history.append(e)

    def _on_human_message(self, e: HumanMessage) -> None:
        self.history.append(e)
        self.human_messages += 1
        self.unheard += 1
        self.messages += 1
        self._to_everyone(ChatMessage("user", e.text, name=e.display_name or "user"))
        if self.current is not None and self.current in self.team.humans:
            self.last_speaker, self.current = self.current, None
        elif self.current is None and self.handoff_target in self.team.humans:
            # The turn was handed to the person and they answered before it was formally
            # theirs (the run ended on that handoff, or they were quick): this is their
            # turn, not a remark before it; the turn goes back to whoever handed it over.
            self.last_speaker, self.handoff_target = self.handoff_target, None
        for name in _MENTION.findall(e.text):
            agent = self._agent_named(name)
            if agent:
                self.mention_next = agent
                break

    def _on_speaker_selected(self, e: SpeakerSelected) -> None:
        self._known(e.agent)
        if e.usage is not NO_USAGE:  # a selector model chose: its tokens count too
            self._count(e.usage)
        self.current, self.turn_rounds = e.agent, 0
        if self.mention_next == e.agent:
            self.mention_next = None
            if self.magentic is not None:
                self.magentic.on_mentioned(e.agent)
        self.handoff_target = None

    def _known(self, agent: str) -> None:
        """An agent of the history must be one of the team's: a team file edited under a
        run (an agent renamed or removed) is found when the run is loaded, not mid-turn."""
        if agent not in self.team.by_name:
            raise ValueError(f"its history has agent {agent!r}, which the team no longer has")

    def _on_agent_message(self, e: AgentMessage) -> None:
        self._known(e.agent)
        self.history.append(e)
        # A reply that raced the model call lands before this message but was not read.
        self.unheard = self.human_messages - e.heard if e.heard >= 0 else 0
        self.messages += 1
        self.model_calls += 1
        self.usage = self.usage + e.usage
        own = self.views.get(e.agent)
        if own is not None:
            own.add_own(ChatMessage("assistant", e.text, tool_calls=e.tool_calls))
        if e.text:
            self._to_everyone(ChatMessage("user", e.text, name=e.agent), but=e.agent)
        if e.agent == ORCHESTRATOR and self.magentic is not None:
            self.magentic.on_answer()
        if e.tool_calls:
            self.reply, self.reply_rounds, self.recorded = e, self.turn_rounds, 0
            self.turn_rounds += 1
        else:
            self.reply = None
            self.last_speaker, self.current = e.agent, None

    def _on_tool_call_requested(self, e: ToolCallRequested) -> None:
        self._known(e.agent)
        reply = self.reply
        if reply is not None and self.recorded < len(reply.tool_calls) \
                and reply.tool_calls[self.recorded].id == e.call_id:
            self.recorded += 1
        self._call_numbers += 1
        expires_after = self.team.approval.expires_after
        expires_at = e.at + expires_after if e.needs_approval and expires_after else None
        self.calls[e.call_id] = CallState(e, self._call_numbers, expires_at=expires_at)
        self.open_calls.append(e.call_id)

    def _on_approval_decided(self, e: ApprovalDecided) -> None:
        call = self.calls.get(e.call_id)
        if call is None or call.decision is not None or call.expired is not None:
            return
        if call.expires_at is not None and e.at >= call.expires_at:
            return  # too late: the request expires instead (the host says so)
        if not e.approved:
            call.decision = e
        elif e.by not in call.approved_by:
            call.approved_by.append(e.by)
            if len(call.approved_by) >= self.team.approval.quorum:
                call.decision = e

    def _on_approval_expired(self, e: ApprovalExpired) -> None:
        call = self.calls.get(e.call_id)
        if call is not None and call.decision is None and call.expired is None:
            call.expired = e

    def _on_tool_always_approved(self, e: ToolAlwaysApproved) -> None:
        # One person's standing approval cannot stand in for a quorum of several.
        if self.team.approval.quorum == 1:
            self.always_approved.setdefault(e.tool, e.by)

    def _on_tool_result(self, e: ToolResult) -> None:
        call = self.calls.get(e.call_id)
        if call:
            call.result = e
            if e.call_id in self.open_calls:
                self.open_calls.remove(e.call_id)
            req = call.request
            view = self.views.get(req.agent)
            if view is not None:
                view.add_result(ChatMessage("tool", e.output, tool_call_id=e.call_id,
                                            is_error=e.error))
            target = self.handoff_of(req)
            if target is not None and not e.error:
                self.owed_handoff = Handoff(source=req.agent, target=target)
        self.history.append(e)

    def _on_handoff(self, e: Handoff) -> None:
        self.owed_handoff = None
        self.handoff_target, self.handoff_source = e.target, e.source
        if self.current == e.source:
            self.last_speaker, self.current = e.source, None

    def _on_stop_requested(self, e: StopRequested) -> None:
        self.stop_by = e.by

    def _on_run_paused(self, e: RunPaused) -> None:
        self.paused = e.reason

    def _on_run_resumed(self, e: RunResumed) -> None:
        self.paused = None

    def _on_run_finished(self, e: RunFinished) -> None:
        self.finished = e.reason

    def _on_run_continued(self, e: RunContinued) -> None:
        self.finished = self.stop_by = self.paused = None
        self.condition.reset()
        self.started_at = e.at
        if e.instructions:
            self.history.append(e)
            self.messages += 1
            self._to_everyone(ChatMessage("user", e.instructions, name="user"))
        if self.magentic is not None:
            self.magentic.on_continued()

    # -- a magentic orchestrator's events ---------------------------------------------------
    def _on_plan_written(self, e: PlanWritten) -> None:
        assert self.magentic is not None, "a plan in a run of a team without an orchestrator"
        self._count(e.usage)
        self.model_calls += 1
        if e.cause == "replan":  # everyone starts afresh from the new plan
            for view in self.views.values():
                view.restart()
            self.magentic.view.restart()
        self.magentic.on_plan(e)
        self.history.append(e)
        self._to_everyone(ChatMessage("user", plan_message(e), name=ORCHESTRATOR))

    def _on_progress_assessed(self, e: ProgressAssessed) -> None:
        assert self.magentic is not None, "a ledger in a run of a team without an orchestrator"
        self._count(e.usage)
        self.model_calls += 1
        handed = self.magentic.on_progress(e)
        if handed is not None:
            self.history.append(e)
            self._instruct(*handed)

    def _on_instructed(self, e: Instructed) -> None:
        assert self.magentic is not None, "an instruction in a run without an orchestrator"
        self.magentic.on_instructed(e)
        self.history.append(e)
        self._instruct(e.agent, e.text)

    def _instruct(self, agent: str, text: str) -> None:
        """The orchestrator's instruction, heard by everyone; `agent` speaks next."""
        self._to_everyone(ChatMessage("user", text, name=ORCHESTRATOR))
        self.current, self.turn_rounds = agent, 0
        self.handoff_target = None

    def _on_plan_reviewed(self, e: PlanReviewed) -> None:
        if self.magentic is None:
            return
        waiting = self.magentic.awaiting_review
        self.magentic.on_review(e)
        if waiting and e.changes:
            self.history.append(e)
            self._to_everyone(ChatMessage("user", e.changes, name=e.display_name or "user"))

    def _count(self, usage: Usage) -> None:
        self.usage = self.usage + usage

    # -- questions the engine and the host ask ------------------------------------
    def handoff_of(self, request: ToolCallRequested) -> str | None:
        """The participant a call hands the turn to, if it is a handoff the agent may make."""
        if request.problem or not request.tool.startswith(HANDOFF_PREFIX):
            return None
        target = request.tool[len(HANDOFF_PREFIX):]
        agent = self.team.by_name.get(request.agent)
        return target if agent is not None and target in agent.handoffs else None

    def _agent_named(self, name: str) -> str | None:
        low = name.lower()
        for a in self.team.agents:
            if not a.human and low in (a.name.lower(), a.persona.display_name.lower()):
                return a.name
        return None

    @property
    def status(self) -> str:
        """One word: running, awaiting_human, awaiting_approval, paused or finished."""
        if self.finished is not None:
            return "finished"
        if self.paused is not None:
            return "paused"
        if self.pending_approvals():
            return "awaiting_approval"
        if self.current is not None and self.current in self.team.humans:
            return "awaiting_human"
        if self.magentic is not None and self.magentic.awaiting_review \
                and self.current is None and self.condition.fired is None:
            return "awaiting_human"  # a person approves the plan or says what to change
        return "running"

    def pending_approvals(self) -> list[CallState]:
        """Calls that wait for a person's decision, in the order they were asked."""
        calls = self.calls
        return [calls[c] for c in self.open_calls if calls[c].request.needs_approval
                and calls[c].decision is None and calls[c].expired is None]

    def approval_deadline(self) -> float | None:
        """When the first pending approval request expires (None: none will)."""
        return min((c.expires_at for c in self.pending_approvals() if c.expires_at is not None),
                   default=None)

    def may_approve(self, user: str, roles: Collection[str] = ()) -> bool:
        """Whether this person, holding roles that answer to `roles`, may decide approvals."""
        if user == self.by and not self.team.approval.summoner_may_approve:
            return False  # four eyes: whoever asked for the run does not approve its actions
        return self.approvers.admits(user, roles)

    def may_approve_always(self, user: str, roles: Collection[str] = ()) -> bool:
        """Whether this person may approve a tool for the rest of the run (not under a quorum)."""
        return self.team.approval.quorum == 1 and self.may_approve(user, roles)

    def may_steer(self, user: str, roles: Collection[str] = ()) -> bool:
        """Whether this person may `continue` or `retry` the run: the summoner or an approver."""
        return user == self.by or self.approvers.admits(user, roles)

    def may_stop(self, user: str, roles: Collection[str] = ()) -> bool:
        """Whether this person may `stop` the run: who may steer it, and the team's stoppers."""
        return self.may_steer(user, roles) or self.team.stoppers.admits(user, roles)

    def approve_always(self, tool: str, by: str, at: float = 0.0) -> list[Event]:
        """The events of `by` approving `tool` for the rest of the run: their approval of
        each of its pending calls, then the standing approval."""
        return [*(ApprovalDecided(call_id=c.request.call_id, approved=True, by=by, reason=ALWAYS,
                                  at=at)
                  for c in self.pending_approvals()
                  if c.request.tool == tool and by not in c.approved_by),
                ToolAlwaysApproved(tool=tool, by=by, at=at)]

    @property
    def tokens_used(self) -> int:
        """Every token the run's model calls used, across every `continue`."""
        return self.usage.total

    def budget_left(self) -> int | None:
        """Tokens left of the team's `budget:` (None: no budget)."""
        budget = self.team.budget_tokens
        return None if budget is None else max(0, budget - self.tokens_used)

    @property
    def budget_spent(self) -> bool:
        """Whether the team's token budget is used up: no model is called again."""
        budget = self.team.budget_tokens
        return budget is not None and self.tokens_used >= budget


def _nothing(state: RunState, e: Event) -> None:
    """Events that change nothing the fold keeps (the termination condition still sees them)."""


#: How each kind of event changes the state; every Event type is listed (a test checks).
HANDLERS: dict[type[Event], Callable[[RunState, Any], None]] = {
    TaskStarted: RunState._on_task_started,
    HumanMessage: RunState._on_human_message,
    SpeakerSelected: RunState._on_speaker_selected,
    AgentMessage: RunState._on_agent_message,
    ToolCallRequested: RunState._on_tool_call_requested,
    ApprovalDecided: RunState._on_approval_decided,
    ApprovalExpired: RunState._on_approval_expired,
    ToolAlwaysApproved: RunState._on_tool_always_approved,
    ToolResult: RunState._on_tool_result,
    Handoff: RunState._on_handoff,
    StopRequested: RunState._on_stop_requested,
    RunPaused: RunState._on_run_paused,
    RunResumed: RunState._on_run_resumed,
    RunFinished: RunState._on_run_finished,
    RunContinued: RunState._on_run_continued,
    ClockChecked: _nothing,
    PlanWritten: RunState._on_plan_written,
    ProgressAssessed: RunState._on_progress_assessed,
    Instructed: RunState._on_instructed,
    PlanReviewed: RunState._on_plan_reviewed,
}
