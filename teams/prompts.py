"""What each model sees: an agent's request for its turn, and the selector's request.

Pure functions of the folded state. An agent's system prompt and tool list are
memoised on the team, so its request prefix is byte-stable from turn to turn
(what the providers' prompt caches key on).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .models.base import HANDOFF_PREFIX, Candidate, ChatMessage, ModelRequest, ToolSpec
from .spec import AgentSpec, Team

if TYPE_CHECKING:
    from .state import RunState

__all__ = [
    "SELECTOR_CONTEXT", "SELECTOR_PROMPT", "build_request", "build_selector_request", "offered",
    "parse_selection", "rounds_used", "system_prompt", "window",
]

#: How many recent messages a selector reads to choose the next speaker.
SELECTOR_CONTEXT = 20

#: The selector's instructions unless the team file gives its own `selector.prompt`.
SELECTOR_PROMPT = (
    "You choose who speaks next in a team conversation.\nParticipants:\n{roles}\n\n"
    "Read the conversation, then answer with only the name of the next speaker, "
    "one of: {candidates}.")


# -- an agent's turn ---------------------------------------------------------------------
def system_prompt(team: Team, agent: AgentSpec) -> str:
    """The agent's instructions, then who it is and whom it talks with."""
    key = ("system", agent.name)
    system = team.memo.get(key)
    if system is None:
        others = ", ".join(a.name for a in team.agents if a.name != agent.name)
        system = (f"{agent.system_message}\n\nYou are {agent.name} ({agent.persona.display_name}) "
                  f"in a team conversation with: {others}.")
        team.memo[key] = system
    return system


def offered(team: Team, agent: AgentSpec, rounds: int) -> tuple[ToolSpec, ...]:
    """The tools (and handoffs) an agent may call after `rounds` tool rounds this turn."""
    if rounds >= team.max_tool_rounds:
        return ()  # enough tool rounds this turn: the agent must answer in words
    key = ("tools", agent.name)
    specs = team.memo.get(key)
    if specs is None:
        specs = tuple(t.spec for t in agent.tools) + tuple(
            _handoff_spec(target, team.by_name[target].description) for target in agent.handoffs)
        team.memo[key] = specs
    return specs


def _handoff_spec(target: str, description: str) -> ToolSpec:
    return ToolSpec(f"{HANDOFF_PREFIX}{target}", f"Hand the conversation to {target}: {description}",
                    {"type": "object", "properties": {}})


def rounds_used(state: RunState, agent_name: str) -> int:
    """Tool rounds the agent has used this turn; a turn not yet recorded has used none."""
    return state.turn_rounds if state.current == agent_name else 0


def window(state: RunState, agent: AgentSpec) -> tuple[ChatMessage, ...]:
    """What `agent` reads: the task, then its context window (`View`: at most its
    `context` messages and tokens, trimmed in blocks so the request's prefix stays put)."""
    recent = state.views[agent.name].messages
    cut = 0
    while cut < len(recent) and recent[cut].role == "tool":  # its call fell out of the window
        cut += 1
    if cut:
        recent = recent[cut:]
    task = state.task_message
    return (task, *recent) if task is not None else tuple(recent)


def build_request(state: RunState, agent_name: str, model: str) -> ModelRequest:
    """The request for one agent's turn."""
    team = state.team
    agent = team.by_name[agent_name]
    return ModelRequest(model=model, system=system_prompt(team, agent),
                        messages=window(state, agent),
                        tools=offered(team, agent, rounds_used(state, agent_name)),
                        agent=agent_name,
                        cache_key=f"{state.cache_key}-{agent_name}" if state.cache_key else "")


# -- choosing the next speaker -------------------------------------------------------------
def build_selector_request(state: RunState, candidates: tuple[str, ...], model: str
                           ) -> ModelRequest:
    """The request that asks a model who speaks next."""
    team = state.team
    roles = "\n".join(f"- {a.name}: {a.description}" for a in team.agents)
    prompt = team.selector_prompt or SELECTOR_PROMPT
    system = prompt.replace("{roles}", roles).replace("{candidates}", ", ".join(candidates))
    assert state.public is not None, "a selector request in a run without a selector"
    recent = state.public.messages[-SELECTOR_CONTEXT:]
    task = state.task_message
    messages = (task, *recent) if task is not None else tuple(recent)
    return ModelRequest(model=model, system=system, messages=messages, purpose="select",
                        agent="selector",
                        candidates=tuple(Candidate(n, team.by_name[n].description,
                                                   team.by_name[n].human) for n in candidates))


def parse_selection(text: str, candidates: tuple[str, ...], state: RunState) -> tuple[str, str]:
    """The candidate a selector named (and "model"), or a sensible fallback (and "fallback")."""
    low = text.lower()
    found = []
    for name in candidates:
        display = state.team.by_name[name].persona.display_name.lower()
        positions = [p for p in (_word_at(low, name.lower()), _word_at(low, display)) if p >= 0]
        if positions:
            found.append((min(positions), name))
    if found:
        return min(found)[1], "model"
    # No valid name: the next agent in the file's order. A garbled answer should not
    # leave the run waiting on a person, so the human comes only when no agent may speak.
    names = state.team.names
    start = names.index(state.last_speaker) + 1 if state.last_speaker in names else 0
    ordered = [n for n in (names[(start + i) % len(names)] for i in range(len(names)))
               if n in candidates]
    agents = [n for n in ordered if n not in state.team.humans]
    return (agents or ordered or list(candidates))[0], "fallback"


def _word_at(text: str, word: str) -> int:
    m = re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text)
    return m.start() if m else -1
