"""Team files: YAML in, a checked `Team` out, or a `TeamFileError` naming file:line of each problem.

Shape (see teams/builtin/*.yaml):

    name, description, strategy (round_robin | selector | swarm | magentic), model,
    approvers, stoppers, approval {quorum, summoner_may_approve, expires_after},
    budget {tokens}, selector {model, prompt, allow_repeated_speaker},
    mcp_servers {name: {command | url, headers, env, cwd, approval {never, always}, timeout}},
    orchestrator {persona, model, max_stalls, max_resets, plan_review} (magentic),
    agents: [{name, persona, description, system_message, model,
              tools: [name | {use, name, approval, channels} | {mcp, tools}],
              handoffs, context, human}], termination

A file that loads may still carry `warnings` (file:line: advice), e.g. a `role:`
written as a name where an id would be unambiguous.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from ._duration import seconds
from ._yaml import NO_ALIASES, line_of, load_with_lines
from .approvers import ROLE_PREFIX, ApprovalPolicy, Approvers, role_is_id
from .builtin_tools import BUILTIN
from .errors import TeamFileError, ToolError
from .mcp.config import McpServer, McpServerModel, McpUse
from .persona import Persona, is_emoji
from .termination import Condition, TerminationSpecError, names_in, parse_termination
from .tools import Approval, Tool, load_tool

__all__ = ["ORCHESTRATOR", "AgentSpec", "Orchestrator", "Team", "TeamFileWarning", "load_team",
           "parse_team"]

#: The name a magentic team's orchestrator speaks under (no agent of such a team may take it).
ORCHESTRATOR = "orchestrator"

_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonaModel(_Strict):
    display_name: str | None = None
    avatar: str = ""
    color: str = ""

    @pydantic.field_validator("avatar")
    @classmethod
    def _avatar(cls, v: str) -> str:
        v = v.strip()
        if v and not (re.fullmatch(r":[a-z0-9_+\-']+:", v) or v.startswith("https://")
                      or is_emoji(v)):
            raise ValueError('avatar must be an :emoji: name, an emoji such as "🐂", '
                             'or an https:// URL')
        return v


class ToolEntry(_Strict):
    use: str | None = None
    name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    approval: Approval | None = None
    channels: list[pydantic.StrictStr] | None = Field(default=None, min_length=1)
    mcp: pydantic.StrictStr | None = None  # `- mcp: server`: that server's tools
    tools: list[pydantic.StrictStr] | None = Field(default=None, min_length=1)

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> ToolEntry:
        if (self.use is None) == (self.mcp is None):
            raise ValueError("a tool entry is a tool name, {use: ...} or {mcp: server}")
        if self.mcp is not None and (self.name or self.approval or self.channels):
            raise ValueError("an mcp: entry takes only tools: [...]; set approvals under "
                             "mcp_servers.<server>.approval")
        if self.use is not None and self.tools is not None:
            raise ValueError("tools: only goes with mcp: server")
        return self

    @pydantic.field_validator("channels")
    @classmethod
    def _channels(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not all(c.strip().removeprefix("#").strip() for c in v):
            raise ValueError("each channel is a name like '#announcements' or a channel id")
        return v


class ContextLimit(_Strict):
    messages: int | None = Field(default=None, gt=0)
    tokens: int | None = Field(default=None, gt=0)


class AgentModel(_Strict):
    name: str = Field(pattern=_NAME)
    human: bool = False
    persona: PersonaModel | None = None
    description: str | None = None
    system_message: str | None = None
    model: str | None = None
    tools: list[ToolEntry] = []
    handoffs: list[str] = []
    context: ContextLimit | None = None

    @pydantic.field_validator("tools", mode="before")
    @classmethod
    def _tool_names(cls, v: Any) -> Any:
        # `- calculate` is short for `- {use: calculate}`; one shape gives clearer errors.
        return [{"use": t} if isinstance(t, str) else t for t in v] if isinstance(v, list) else v


class SelectorModel(_Strict):
    model: str | None = None
    prompt: str | None = None
    allow_repeated_speaker: bool = False


class OrchestratorModel(_Strict):
    persona: PersonaModel | None = None
    model: str | None = None
    max_stalls: pydantic.StrictInt = Field(default=3, ge=1)
    max_resets: pydantic.StrictInt = Field(default=2, ge=0)
    plan_review: pydantic.StrictBool = False


class BudgetModel(_Strict):
    tokens: pydantic.StrictInt = Field(gt=0)


class ApprovalModel(_Strict):
    quorum: pydantic.StrictInt = Field(default=1, ge=1)
    summoner_may_approve: pydantic.StrictBool = True
    expires_after: float | None = None

    @pydantic.field_validator("expires_after", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return None if v is None else seconds(v, "expires_after")


class TeamModel(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""
    strategy: Literal["round_robin", "selector", "swarm", "magentic"] = "round_robin"
    model: str | None = None
    approvers: list[str] = []
    stoppers: list[str] = []
    approval: ApprovalModel = ApprovalModel()
    budget: BudgetModel | None = None
    selector: SelectorModel = SelectorModel()
    orchestrator: OrchestratorModel | None = None
    agents: list[AgentModel] = Field(min_length=1)
    termination: Any = None
    max_tool_rounds: int = Field(default=5, gt=0)
    mcp_servers: dict[str, McpServerModel] = {}

    @pydantic.field_validator("mcp_servers")
    @classmethod
    def _server_names(cls, v: dict[str, McpServerModel]) -> dict[str, McpServerModel]:
        bad = [n for n in v if not re.fullmatch(_NAME, n)]
        if bad:
            raise ValueError(f"server name {bad[0]!r}: names use letters, digits, '_' or '-' "
                             f"and start with a letter")
        return v


@dataclass(frozen=True)
class AgentSpec:
    """One participant: an agent with a model, or the human (user proxy)."""

    name: str
    persona: Persona
    description: str
    system_message: str = ""
    model: str | None = None
    tools: tuple[Tool, ...] = ()
    handoffs: tuple[str, ...] = ()
    human: bool = False
    context_messages: int = 40
    context_tokens: int | None = None
    mcp: tuple[McpUse, ...] = ()  # `- mcp: server` entries; tools come from the server

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)


@dataclass(frozen=True)
class Orchestrator:
    """A magentic team's orchestrator: its face and model, when it replans, when it gives up,
    and whether a person reviews each plan before the team starts on it."""

    agent: AgentSpec
    max_stalls: int = 3
    max_resets: int = 2
    plan_review: bool = False


@dataclass(frozen=True)
class Team:
    """A checked team: participants in order, how turns pass, when it ends."""

    name: str
    description: str
    strategy: str
    agents: tuple[AgentSpec, ...]
    termination_spec: Any
    model: str | None = None
    approvers: tuple[str, ...] = ()
    selector_model: str | None = None
    selector_prompt: str | None = None
    allow_repeated_speaker: bool = False
    max_tool_rounds: int = 5
    source: str = ""
    name_line: int | None = field(default=None, compare=False)  # where `name:` stands in `source`
    stoppers: Approvers = field(default_factory=Approvers)
    approval: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    budget_tokens: int | None = None
    orchestrator: Orchestrator | None = None  # strategy: magentic
    mcp_servers: Mapping[str, McpServer] = field(default_factory=dict, compare=False)
    warnings: tuple[TeamFileWarning, ...] = field(default=(), compare=False)
    by_name: dict[str, AgentSpec] = field(default_factory=dict, compare=False, repr=False)
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)  # engine's cache

    def __post_init__(self) -> None:
        self.by_name.update({a.name: a for a in self.agents})
        if self.orchestrator is not None:  # it posts under its persona, like an agent
            self.by_name[self.orchestrator.agent.name] = self.orchestrator.agent

    def termination(self) -> Condition:
        """A fresh condition tree (each run folds its own)."""
        return parse_termination(self.termination_spec) if self.termination_spec else _NEVER()

    @cached_property
    def humans(self) -> tuple[str, ...]:
        """The human participants' names, in order."""
        return tuple(a.name for a in self.agents if a.human)

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Every participant's name, in the file's order."""
        return tuple(a.name for a in self.agents)

    @cached_property
    def after(self) -> dict[str, str]:
        """Who comes after whom in the file's order (round robin)."""
        return {n: self.names[(i + 1) % len(self.names)] for i, n in enumerate(self.names)}


class _NEVER(Condition):
    pass


@dataclass(frozen=True, slots=True)
class TeamFileWarning:
    """Advice about a team file that loads: names the file, the line and what to change."""

    file: str
    line: int | None
    problem: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: warning: {self.problem}"


def load_team(path: str | Path) -> Team:
    """Read and check one team file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise TeamFileError(str(p), None, f"cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TeamFileError(str(p), None, "the file is not UTF-8 text") from None
    return parse_team(text, str(p))


def parse_team(text: str, source: str = "<team>") -> Team:
    """Check a team file's text; errors name `source`, and each problem with its line."""
    try:
        data, lines = load_with_lines(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise TeamFileError(source, mark.line + 1 if mark else None,
                            _yaml_problem(str(exc.problem))) from None
    except yaml.YAMLError as exc:
        raise TeamFileError(source, None, f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TeamFileError(source, 1, "a team file is a mapping with name, agents and termination")
    problems = _Problems(lines)
    try:
        model = TeamModel.model_validate(data)
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            problems.add(tuple(err["loc"]), _explain(err))
        _check_termination(data.get("termination"), problems)  # its own shape, at least
        raise problems.error(source) from None
    team = _build(model, source, problems)
    _check_governance(model, problems)
    if problems.found or team is None:
        raise problems.error(source)
    warnings = tuple(TeamFileWarning(source, line_of(lines, loc), problem)
                     for loc, problem in _advice(model))
    return replace(team, warnings=warnings) if warnings else team


#: Said with every YAML syntax error: what most often causes one in a team file.
YAML_HINT = "quote values that contain `: ` or start with `*`, `&`, `?`"


def _yaml_problem(problem: str) -> str:
    if problem.startswith("duplicate key"):
        return f"not valid YAML: {problem}"
    if problem == NO_ALIASES:
        return f"{problem} (hint: {YAML_HINT})"
    return f"not valid YAML: {problem} (hint: {YAML_HINT})"


class _Problems:
    """Every problem found in one file, each with its line, to be reported together."""

    def __init__(self, lines: dict[tuple[str | int, ...], int]) -> None:
        self.lines = lines
        self.found: list[tuple[int | None, str]] = []

    def add(self, loc: tuple[str | int, ...], problem: str) -> None:
        self.found.append((line_of(self.lines, loc), problem))

    def error(self, source: str) -> TeamFileError:
        return TeamFileError.of(source, self.found)


def _explain(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        where = err["loc"][:-1]
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, _keys_at(TeamModel, where), n=1, cutoff=0.75)
        return f"unknown key '{key}'" + (f" in {'.'.join(map(str, where))}" if where else "") \
            + (f" (did you mean '{close[0]}'?)" if close else "")
    if kind == "missing":
        return f"missing required key '{loc}'"
    if kind == "literal_error":
        return f"{loc}: {err['msg'].lower()}"
    if kind == "string_pattern_mismatch":
        return f"{loc}: names use letters, digits, '_' or '-' and start with a letter"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{loc}: expected a mapping (key: value lines), got {_shown(err['input'])}"
    if kind == "list_type":
        return f"{loc}: expected a list (lines starting with '- '), got {_shown(err['input'])}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg[:1].lower()}{msg[1:]}"


def _keys_at(model: Any, path: tuple[str | int, ...]) -> list[str]:
    """The keys the mapping at `path` in a team file may have (for a typo's "did you
    mean"): the fields of the model found by following `path` down the annotations."""
    steps = list(path)
    while True:
        while typing.get_origin(model) is not None:  # list[X], dict[str, X], X | None, ...
            args = [a for a in typing.get_args(model) if a is not type(None)]
            if typing.get_origin(model) in (list, dict):
                if not steps:
                    return []
                steps.pop(0)  # a list's index, a dict's own key
            if not args:
                return []
            model = args[-1]
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        if not steps:
            return [f.alias or name for name, f in model.model_fields.items()]
        field = model.model_fields.get(str(steps.pop(0)))
        if field is None:
            return []
        model = field.annotation


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _build(m: TeamModel, source: str, problems: _Problems) -> Team | None:
    """The team, or None when a problem (added to `problems`) leaves nothing to build."""
    names = [a.name for a in m.agents]
    for i, a in enumerate(m.agents):
        if names.index(a.name) != i:
            problems.add(("agents", i, "name"), f"agent name '{a.name}' is used twice")
    agents = [_agent(m, i, names, problems) for i in range(len(m.agents))]
    if not any(not a.human for a in m.agents):
        problems.add(("agents",), "a team needs at least one agent that is not human")
    if m.strategy == "swarm" and m.agents[0].human:
        problems.add(("agents", 0),
                     "in a swarm the first agent speaks first; it cannot be the human")
    all_tools = {t.name for a in agents for t in a.tools}
    orchestrator = _orchestrator(m, names, problems)
    speakers = [*names, ORCHESTRATOR] if orchestrator is not None else names
    if not _check_termination(m.termination, problems, speakers, all_tools):
        return None
    return Team(name=m.name, description=m.description, strategy=m.strategy, agents=tuple(agents),
                termination_spec=m.termination, model=m.model, approvers=tuple(m.approvers),
                selector_model=m.selector.model, selector_prompt=m.selector.prompt,
                allow_repeated_speaker=m.selector.allow_repeated_speaker,
                max_tool_rounds=m.max_tool_rounds, source=source,
                name_line=problems.lines.get(("name",)), stoppers=Approvers.parse(m.stoppers),
                approval=ApprovalPolicy(m.approval.quorum, m.approval.summoner_may_approve,
                                        m.approval.expires_after),
                budget_tokens=m.budget.tokens if m.budget else None, orchestrator=orchestrator,
                mcp_servers={n: McpServer.of(n, s) for n, s in m.mcp_servers.items()})


def _orchestrator(m: TeamModel, names: list[str], problems: _Problems) -> Orchestrator | None:
    """A magentic team's orchestrator (the section is optional); the section is an error in
    any other team, and so is an agent that takes the orchestrator's name."""
    if m.strategy != "magentic":
        if m.orchestrator is not None:
            problems.add(("orchestrator",), "orchestrator: only applies with strategy: magentic")
        return None
    if ORCHESTRATOR in names:
        problems.add(("agents", names.index(ORCHESTRATOR), "name"),
                     f"'{ORCHESTRATOR}' is the name of a magentic team's orchestrator; "
                     f"give this agent another name")
    o = m.orchestrator or OrchestratorModel()
    persona = o.persona or PersonaModel()
    agent = AgentSpec(name=ORCHESTRATOR, description="Plans, delegates and checks progress.",
                      persona=Persona(persona.display_name or "Orchestrator",
                                      persona.avatar or ":compass:", persona.color),
                      model=o.model)
    return Orchestrator(agent, o.max_stalls, o.max_resets, o.plan_review)


def _agent(m: TeamModel, i: int, names: list[str], problems: _Problems) -> AgentSpec:
    """Agent `i` of the file, its problems added to `problems`."""
    a, at = m.agents[i], ("agents", i)
    if not a.human and not (a.system_message or "").strip():
        problems.add(at, f"agent '{a.name}' has no system_message (say what this agent does)")
    for j, target in enumerate(a.handoffs):
        if target not in names:
            problems.add((*at, "handoffs", j),
                         f"agent '{a.name}' hands off to unknown agent '{target}'; "
                         f"agents are: {', '.join(names)}")
    if a.handoffs and m.strategy != "swarm":
        problems.add((*at, "handoffs"), "handoffs only apply with strategy: swarm")
    tools, mcp = [], []
    for j, e in enumerate(a.tools):
        if e.mcp is not None:
            if e.mcp not in m.mcp_servers:
                known = ", ".join(m.mcp_servers) or "none (add an mcp_servers: section)"
                problems.add((*at, "tools", j, "mcp"),
                             f"agent '{a.name}' uses unknown MCP server '{e.mcp}'; "
                             f"servers are: {known}")
            mcp.append(McpUse(e.mcp, tuple(e.tools) if e.tools else None, (*at, "tools", j)))
            continue
        assert e.use is not None
        try:
            t = load_tool(e.use, BUILTIN)
        except ToolError as exc:
            problems.add((*at, "tools", j), str(exc))
            continue
        if e.channels is not None and not t.takes_channel:
            problems.add((*at, "tools", j, "channels"),
                         f"channels: only narrows a tool that takes a channel (such as "
                         f"post_message); {t.name} does not")
            continue
        tools.append(t.with_overrides(name=e.name, approval=e.approval,
                                      channels=tuple(e.channels) if e.channels else None))
    persona = a.persona or PersonaModel()
    desc = a.description or _first_sentence(a.system_message or "") or (
        "the person in the thread" if a.human else a.name)
    return AgentSpec(
        name=a.name, human=a.human, description=desc, system_message=a.system_message or "",
        persona=Persona(persona.display_name or a.name.replace("_", " ").title(),
                        persona.avatar, persona.color),
        model=a.model, tools=tuple(tools), handoffs=tuple(a.handoffs), mcp=tuple(mcp),
        context_messages=(a.context.messages if a.context and a.context.messages else 40),
        context_tokens=a.context.tokens if a.context else None)


def _check_termination(spec: Any, problems: _Problems, names: list[str] | None = None,
                       tools: set[str] | None = None) -> bool:
    """Whether `termination:` parses; with the team's agent and tool `names`, also whether
    every agent and tool it names exists. Its problems are added to `problems`."""
    if spec is None:
        problems.add((), "missing required key 'termination' (e.g. termination: {max_messages: 12})")
        return False
    try:
        cond = parse_termination(spec)
    except TerminationSpecError as exc:
        problems.add(exc.path, f"bad termination: {exc}")
        return False
    if names is None:
        return True
    for role, name, where in names_in(cond):
        if role in ("source", "handoff") and name not in names:
            problems.add(where, f"bad termination: '{name}' is not an agent of this team; "
                                f"agents are: {', '.join(names)}")
        if role == "tool" and tools is not None and name not in tools:
            problems.add(where, f"bad termination: no agent has a tool named '{name}'")
    return True


def _check_governance(m: TeamModel, problems: _Problems) -> None:
    """An `approval:` block that no one could ever satisfy is a mistake in the file."""
    rule = Approvers.parse(m.approvers)
    if not m.approvers:
        if m.approval.quorum > 1:
            problems.add(("approval", "quorum"),
                         f"approval.quorum is {m.approval.quorum}, but without an approvers: list "
                         f"only the person who summons the run may approve; list the approvers")
        if not m.approval.summoner_may_approve:
            problems.add(("approval", "summoner_may_approve"),
                         "approval.summoner_may_approve is false, but without an approvers: list "
                         "only the person who summons the run may approve; list the approvers")
    elif not rule.roles and m.approval.quorum > len(rule.people):
        problems.add(("approval", "quorum"),
                     f"approval.quorum is {m.approval.quorum}, but approvers: lists only "
                     f"{len(rule.people)} {'person' if len(rule.people) == 1 else 'people'}")


def _advice(m: TeamModel) -> list[tuple[tuple[str | int, ...], str]]:
    """(where, advice) for what loads but could surprise: roles named rather than by id,
    an MCP server's `${VAR}` that is not set here."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for name, server in m.mcp_servers.items():
        for var in McpServer.of(name, server).variables:
            if var not in os.environ:
                out.append((("mcp_servers", name), (
                    f"mcp_servers.{name}: ${{{var}}} is not set in this environment; the "
                    f"server cannot be reached until it is")))
    for key, entries in (("approvers", m.approvers), ("stoppers", m.stoppers)):
        for i, entry in enumerate(entries):
            role = entry[len(ROLE_PREFIX):].strip() if entry.startswith(ROLE_PREFIX) else None
            if role and not role_is_id(role):
                out.append(((key, i), (
                    f"{key}: '{entry}' names a role; names can repeat (on Discord every role "
                    f"called '{role.removeprefix('@')}' would count), so prefer its id: "
                    f"role:<Discord role id> or role:<Slack user group id, S…>")))
    return out


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    return (match.group(1) if match else text)[:200]
