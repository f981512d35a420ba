"""A few helpers that build teams and drive runs in-process, the way the host does."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from threadteam.teams.engine import Action, Env, decide, drive, perform
from threadteam.teams.events import (
    AgentMessage,
    ApprovalDecided,
    Event,
    HumanMessage,
    TaskStarted,
    ToolCallRequested,
    ToolResult,
)
from threadteam.teams.models.base import Model, ModelResponse, ToolCall, Usage
from threadteam.teams.models.scripted import ScriptedModel
from threadteam.teams.spec import Team, parse_team
from threadteam.teams.state import RunState
from threadteam.teams.tools import ToolContext


def agent(name: str, **fields: Any) -> dict[str, Any]:
    """One agent entry of a team file; a system message is made up unless given."""
    entry: dict[str, Any] = {"name": name}
    if not fields.get("human"):
        entry["system_message"] = f"You are {name}. Say what {name} thinks."
    entry.update(fields)
    return entry


def make_team(*agents: str | dict[str, Any], strategy: str = "round_robin",
              termination: Any = None, **top: Any) -> Team:
    """A team parsed from a real team file; bare names become plain agents."""
    data: dict[str, Any] = {"name": top.pop("name", "team"), "strategy": strategy,
                            "agents": [agent(a) if isinstance(a, str) else a for a in agents],
                            "termination": termination or {"max_messages": 50}}
    data.update(top)
    return parse_team(yaml.safe_dump(data, sort_keys=False), "team.yaml")


def says(text: str = "", *calls: tuple[str, str] | ToolCall, tokens: int = 10) -> ModelResponse:
    """A scripted reply: text plus tool calls given as (name, json) or ToolCall (for its id)."""
    tool_calls = tuple(c if isinstance(c, ToolCall) else ToolCall(f"call_{c[0]}", c[0], c[1])
                       for c in calls)
    return ModelResponse(text=text, tool_calls=tool_calls, usage=Usage(tokens, tokens),
                         model="scripted")


class Models:
    """The `Env.models` seam: every model name resolves to the same scripted model."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.asked: list[tuple[str | None, ...]] = []

    def resolve_name(self, *preferred: str | None) -> str:
        self.asked.append(preferred)
        return next((p for p in preferred if p), "scripted")

    def get(self, name: str) -> Model:
        return self.model


class Run:
    """A run of `team` driven to its next wait; `log` is everything the store would hold."""

    def __init__(self, team: Team, model: Model | Iterable[Any] = (), *, task: str = "Decide.",
                 by: str = "U1", approvers: tuple[str, ...] = (), at: float = 0.0,
                 context: ToolContext | None = None) -> None:
        self.model = model if hasattr(model, "complete") else ScriptedModel(model)  # type: ignore[arg-type]
        self.clock = at
        self.env = Env(models=Models(self.model), now=lambda: self.clock,
                       tool_context=lambda request: context or ToolContext(agent=request.agent))
        self.state = RunState(team)
        self.log: list[Event] = []
        self.add(TaskStarted(team=team.name, task=task, by=by, approvers=approvers, at=at))

    def add(self, *events: Event) -> None:
        """Append events a person caused (as the host does), folding them in."""
        for e in events:
            self.state.apply(e)
            self.log.append(e)

    async def go(self) -> Action:
        """Drive until the run waits; returns what it waits for."""
        async def append(events: list[Event]) -> None:
            self.log.extend(events)
        return await drive(self.state, self.env, append)

    async def step(self) -> list[Event]:
        """Exactly one decide-and-perform; returns the events it appended."""
        events = await perform(self.state, decide(self.state), self.env)
        self.add(*events)
        return events

    async def say(self, text: str, user: str = "U1", display_name: str = "") -> Action:
        """A person writes in the thread, then the run goes on."""
        self.add(HumanMessage(user=user, text=text, display_name=display_name, at=self.clock))
        return await self.go()

    async def decide_call(self, approved: bool, reason: str = "", by: str = "U1",
                          call_id: str | None = None) -> Action:
        """A person approves or denies the first pending call (or `call_id`), then the run goes on."""
        call_id = call_id or self.state.pending_approvals()[0].request.call_id
        self.add(ApprovalDecided(call_id=call_id, approved=approved, by=by, reason=reason,
                                 at=self.clock))
        return await self.go()

    def of(self, kind: type[Event]) -> list[Any]:
        """The logged events of one type, in order."""
        return [e for e in self.log if isinstance(e, kind)]

    @property
    def speakers(self) -> list[str]:
        """Who spoke, in order: agents by name, people as 'human'."""
        return [e.agent if isinstance(e, AgentMessage) else "human" for e in self.log
                if isinstance(e, AgentMessage | HumanMessage)]

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.of(AgentMessage)]

    def result_of(self, call_id: str) -> ToolResult:
        (result,) = [e for e in self.of(ToolResult) if e.call_id == call_id]
        return result

    def request_of(self, call_id: str) -> ToolCallRequested:
        (req,) = [e for e in self.of(ToolCallRequested) if e.call_id == call_id]
        return req
