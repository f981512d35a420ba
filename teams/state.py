"""A run's state: an incremental fold over its events.

`RunState.apply(event)` does O(1) work per event, so a long run never re-folds
its log. Everything `engine.decide` needs is here; nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from .approvers import Approvers
from .events import (
    AgentMessage,
    ApprovalDecided,
    ClockChecked,
    Event,
    Handoff,
    HumanMessage,
    RunContinued,
    RunFinished,
    RunPaused,
    RunResumed,
    SpeakerSelected,
    StopRequested,
    TaskStarted,
    ToolCallRequested,
    ToolResult,
)
from .models.base import HANDOFF_PREFIX, ChatMessage, Usage
from .prompts import SELECTOR_CONTEXT
from .spec import Team
from .termination import Condition

__all__ = ["HANDLERS", "CallState", "RunState", "View"]

# "@bear", but not the "@bear" of "ops@bear.example".
_MENTION = re.compile(r"(?<![\w.])@([A-Za-z][\w-]*)")


@dataclass(slots=True)
class CallState:
    """One requested tool call and what became of it."""

    request: ToolCallRequested
    number: int
    decision: ApprovalDecided | None = None
    result: ToolResult | None = None


@dataclass(slots=True)
class View:
    """The recent conversation as one agent sees it, ready to send: newest last.

    Kept in the fold so building a request copies a slice instead of walking the
    log; it holds between `limit` and about twice `limit` messages. Messages that
    arrive while the agent's tool calls are still open (an interjection during an
    approval) are held back until the results are in, because a model expects a
    call's results straight after it.
    """

    limit: int
    messages: list[ChatMessage] = field(default_factory=list)
    owed_results: int = 0
    held: list[ChatMessage] = field(default_factory=list)

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

    def _release(self) -> None:
        self.owed_results = 0
        held, self.held = self.held, []
        for m in held:
            self._push(m)

    def _push(self, message: ChatMessage) -> None:
        self.messages.append(message)
        if len(self.messages) > 2 * self.limit + 16:
            del self.messages[:-self.limit]


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
    views: dict[str, View] = field(init=False)
    public: View = field(init=False)  # what a selector reads: every message, as spoken
    condition: Condition = field(init=False)
    _call_numbers: int = 0

    def __post_init__(self) -> None:
        self.condition = self.team.termination()
        self.views = {a.name: View(a.context_messages) for a in self.team.agents if not a.human}
        self.public = View(SELECTOR_CONTEXT)

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
        HANDLERS[type(e)](self, e)
        if type(e) is HumanMessage and self.team.humans:
            # Conditions name the human participant, not a platform user id.
            e = HumanMessage(user=self.team.humans[0], text=e.text, at=e.at)
        self.condition.observe(e, self.started_at)

    def _to_everyone(self, message: ChatMessage, but: str | None = None) -> None:
        for name, view in self.views.items():
            if name != but:
                view.add(message)
        self.public.add(message)

    def _on_task_started(self, e: TaskStarted) -> None:
        self.task, self.by, self.started_at = e.task, e.by, e.at
        self.approvers = Approvers.parse(e.approvers or (e.by,))
        self.task_message = ChatMessage("user", e.task, name="task")
        self.history.append(e)

    def _on_human_message(self, e: HumanMessage) -> None:
        self.history.append(e)
        self.messages += 1
        self._to_everyone(ChatMessage("user", e.text, name=e.display_name or "user"))
        if self.current is not None and self.current in self.team.humans:
            self.last_speaker, self.current = self.current, None
        for name in _MENTION.findall(e.text):
            agent = self._agent_named(name)
            if agent:
                self.mention_next = agent
                break

    def _on_speaker_selected(self, e: SpeakerSelected) -> None:
        self.current, self.turn_rounds = e.agent, 0
        if self.mention_next == e.agent:
            self.mention_next = None
        self.handoff_target = None

    def _on_agent_message(self, e: AgentMessage) -> None:
        self.history.append(e)
        self.messages += 1
        self.model_calls += 1
        self.usage = Usage(self.usage.input_tokens + e.usage.input_tokens,
                           self.usage.output_tokens + e.usage.output_tokens)
        own = self.views.get(e.agent)
        if own is not None:
            own.add_own(ChatMessage("assistant", e.text, tool_calls=e.tool_calls))
        if e.text:
            self._to_everyone(ChatMessage("user", e.text, name=e.agent), but=e.agent)
        if e.tool_calls:
            self.reply, self.reply_rounds, self.recorded = e, self.turn_rounds, 0
            self.turn_rounds += 1
        else:
            self.reply = None
            self.last_speaker, self.current = e.agent, None

    def _on_tool_call_requested(self, e: ToolCallRequested) -> None:
        reply = self.reply
        if reply is not None and self.recorded < len(reply.tool_calls) \
                and reply.tool_calls[self.recorded].id == e.call_id:
            self.recorded += 1
        self._call_numbers += 1
        self.calls[e.call_id] = CallState(e, self._call_numbers)
        self.open_calls.append(e.call_id)

    def _on_approval_decided(self, e: ApprovalDecided) -> None:
        call = self.calls.get(e.call_id)
        if call and call.decision is None:
            call.decision = e

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
        return "running"

    def pending_approvals(self) -> list[CallState]:
        """Calls that wait for a person's decision, in the order they were asked."""
        return [self.calls[c] for c in self.open_calls
                if self.calls[c].request.needs_approval and self.calls[c].decision is None]

    def may_approve(self, user: str, roles: Collection[str] = ()) -> bool:
        """Whether this person, holding roles that answer to `roles`, may decide approvals."""
        return self.approvers.admits(user, roles)


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
    ToolResult: RunState._on_tool_result,
    Handoff: RunState._on_handoff,
    StopRequested: RunState._on_stop_requested,
    RunPaused: RunState._on_run_paused,
    RunResumed: RunState._on_run_resumed,
    RunFinished: RunState._on_run_finished,
    RunContinued: RunState._on_run_continued,
    ClockChecked: _nothing,
}
