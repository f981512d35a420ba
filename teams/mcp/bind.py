"""An agent's `- mcp: server` entries as tools: names, schemas and approval rules.

A team file is checked without reaching any server; the tools of its servers are
known once a server has been listed. `bind` gives the team with those tools added
(cached per team and listing), for the runner before it drives a run and for
`threadteam teams show`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import mcp_types as types

from ..spec import AgentSpec, Team
from ..tools import Approval, Tool, ToolContext
from .config import McpServer
from .hub import McpFailure, McpHub

__all__ = ["Bound", "ToolLine", "approval_of", "bind", "tool_lines"]

_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Bound:
    """A team with its servers' tools, and what could not be offered (one line each)."""

    team: Team
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolLine:
    """One tool of one agent as `threadteam teams show` prints it."""

    agent: str
    name: str
    approval: Approval
    why: str


async def tool_lines(team: Team, hub: McpHub) -> tuple[list[ToolLine], tuple[str, ...]]:
    """Every agent's tools with the approval each needs and why (servers are started to
    list theirs), and what could not be listed."""
    bound = await bind(team, hub)
    listings = {n: hub.listed(s) for n, s in team.mcp_servers.items()}
    lines: list[ToolLine] = []
    for agent in team.agents:
        for t in agent.tools:
            why = ("pinned: always asked under the local code executor" if t.pinned
                   else "built-in or Python tool")
            lines.append(ToolLine(agent.name, t.name, t.approval, why))
        if agent.mcp:
            extra: list[str] = []
            for t, why in _tools_of(agent, team, {k: v for k, v in listings.items() if v},
                                    hub, extra):
                lines.append(ToolLine(agent.name, t.name, t.approval,
                                      f"{t.source}: {why}"))
    return lines, bound.problems


def approval_of(server: McpServer, tool: types.Tool) -> tuple[Approval, str]:
    """The approval a server's tool needs, and why: the team file's lists first, then the
    server's own `readOnlyHint`; anything else waits for a person."""
    if tool.name in server.never:
        return "never", "the team file says never"
    if tool.name in server.always:
        return "always", "the team file says always"
    if tool.annotations is not None and tool.annotations.read_only_hint is True:
        return "never", "the server marks it read-only"
    return "always", "the server does not mark it read-only"


async def bind(team: Team, hub: McpHub, *, connect: bool = True) -> Bound:
    """`team` with each agent's MCP tools; servers are started as needed (`connect`)."""
    if not team.mcp_servers:
        return Bound(team)
    names = sorted({u.server for a in team.agents for u in a.mcp})
    got = await asyncio.gather(*(hub.tools(team.mcp_servers[n]) for n in names),
                               return_exceptions=True)  # servers start side by side
    listings: dict[str, tuple[types.Tool, ...]] = {}
    problems: list[str] = []
    for name, listing in zip(names, got, strict=True):
        if isinstance(listing, McpFailure):
            problems.append(f"{listing}; its tools are not offered for now")
        elif isinstance(listing, BaseException):
            raise listing
        else:
            listings[name] = listing
    key = tuple(listings.get(n) for n in sorted(team.mcp_servers))
    cached = team.memo.get(("mcp", hub))
    if cached is not None and all(a is b for a, b in zip(cached[0], key, strict=True)):
        return Bound(cached[1], tuple(problems))  # the same listings: the same tools
    agents = []
    for agent in team.agents:
        tools = [t for t, _ in _tools_of(agent, team, listings, hub, problems)] \
            if agent.mcp else []
        agents.append(replace(agent, tools=(*agent.tools, *tools)) if tools else agent)
    bound = replace(team, agents=tuple(agents), by_name={}, memo={})
    team.memo[("mcp", hub)] = (key, bound)
    return Bound(bound, tuple(problems))


def _tools_of(agent: AgentSpec, team: Team, listings: dict[str, tuple[types.Tool, ...]],
              hub: McpHub, problems: list[str]) -> list[tuple[Tool, str]]:
    chosen: list[tuple[McpServer, types.Tool]] = []
    for use in agent.mcp:
        listing = listings.get(use.server)
        if listing is None:
            continue
        by_name = {t.name: t for t in listing}
        wanted: Iterable[str] = use.tools if use.tools is not None else by_name
        for name in wanted:
            if name in by_name:
                if all(t is not by_name[name] for _, t in chosen):
                    chosen.append((team.mcp_servers[use.server], by_name[name]))
            else:
                problems.append(f"the {use.server} MCP server has no tool named {name!r} "
                                f"(agent {agent.name})")
    names = [_model_name(t.name) for _, t in chosen]
    taken = {t.name for t in agent.tools}
    out = []
    for (server, tool), name in zip(chosen, names, strict=True):
        if names.count(name) > 1 or name in taken:  # two servers offer it: say whose
            name = _model_name(f"{server.name}_{tool.name}")
        approval, why = approval_of(server, tool)
        out.append((Tool(name=name, description=(tool.description or f"{tool.name} "
                                                 f"({server.name})").strip(),
                         fn=_caller(hub, server, tool.name), approval=approval,
                         schema=_schema(tool.input_schema),
                         source=f"the {server.name} MCP server"), why))
    return out


def _model_name(name: str) -> str:
    return _BAD_NAME_CHARS.sub("_", name)[:64] or "tool"


def _schema(schema: Any) -> dict[str, Any]:
    # As the server gives it; only a schema that is not an object schema is made one.
    out = dict(schema) if isinstance(schema, dict) else {"type": "object"}
    out.setdefault("type", "object")
    return out


def _caller(hub: McpHub, server: McpServer, tool: str) -> Any:
    async def call(args: dict[str, Any], context: ToolContext) -> str:
        try:
            outcome = await hub.call(server, tool, args, ask=context.ask)
        except McpFailure as exc:
            if context.notice is not None:
                await context.notice(f"`{tool}` ({server.name}) {exc.short}.")
            raise
        if outcome.error:
            if context.notice is not None:
                await context.notice(f"`{tool}` ({server.name}) reported an error.")
            raise McpFailure(f"{tool} reported an error: {outcome.text}")
        return outcome.text
    return call
