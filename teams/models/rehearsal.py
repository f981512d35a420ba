"""The rehearsal model: offline, deterministic, visibly labelled.

It lets a team's wiring (turns, personas, tools, termination, approvals) be
tried with no key. Every answer depends only on the request, and every text
it writes starts with "[rehearsal] ". It exercises the whole team: a selector
hands each participant (the person too) a turn before anyone speaks twice; an
agent calls each of its tools once (so approvals are asked for), hands over in
a swarm, and writes its team's marker (FINAL ANSWER, DONE, ...) only once it has
heard the rest of the team. It answers what a person last said and names the
agent it follows, never quoting rehearsal text inside rehearsal text.

A magentic orchestrator's prompts get valid answers too: a plan naming each
participant, then a progress ledger (JSON) that hands each one a turn in order and
is satisfied once all were heard. A person steers it: the word "stall" in the task
or a message makes every round a stall (so the orchestrator replans, then gives
up); "replan" makes the first plan stall until the orchestrator replans.
"""

from __future__ import annotations

import json
import re

from .base import (
    HANDOFF_PREFIX,
    ChatMessage,
    ModelRequest,
    ModelResponse,
    RetrySink,
    TextSink,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = ["LABEL", "RehearsalModel"]

LABEL = "[rehearsal] "
# A quoted ALL-CAPS phrase in a system prompt, e.g. 'FINAL ANSWER:' or "RESOLVED":
# teams that end when a marker appears must see one, or a rehearsal never ends.
MARKER = re.compile(r"""['"“]([A-Z][A-Z ]{2,}[A-Z]):?['"”]""")
# The closing sentence of every agent's system prompt (teams.prompts.system_prompt), which
# names the rest of the team: a rehearsed agent concludes only once it has heard them.
TEAMMATES = re.compile(r"in a team conversation with: ([^\n]*)\.\Z")
# A participant in a selector prompt's list of roles ("- name: description", its {roles}).
ROLE = re.compile(r"^- ([A-Za-z][A-Za-z0-9_-]*): ", re.M)
# The task opens every conversation under this name (teams.state); it is nobody's turn.
TASK = "task"
# A quoted example in a tool's description ("such as '(1200 * 0.15) / 12'"), used as the
# value of its one text argument so the rehearsed call can succeed.
EXAMPLE = re.compile(r"""(?:such as|e\.g\.|for example)\s+['"“]([^'"”]+)['"”]""")
EXCERPT = 60
# What the orchestrator's prompts say (teams.ledger), read back to answer them.
ORCHESTRATOR = "orchestrator"
REVISION = re.compile(r"(?:will be|follow) plan revision (\d+)")
CHANGES = re.compile(r"asked for these changes:\n(.*?)\n\nThis will be", re.S)
STUCK = re.compile(r"We are stuck \((.*?)\)\. Our facts", re.S)
PLAN_POST = "PLAN (revision "
STALL = re.compile(r"\bstall\b", re.I)
REPLAN = re.compile(r"\breplan\b", re.I)


class RehearsalModel:
    """Answers without a network: picks speakers, calls each tool once, answers, concludes."""

    name = "rehearsal"

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None, *,
                       on_retry: RetrySink | None = None) -> ModelResponse:
        """Answer deterministically; the text goes to `on_text` in a few chunks.

        It never fails, so `on_retry` is never called.
        """
        calls: tuple[ToolCall, ...] = ()
        if request.purpose == "select":
            text = _select(request)
        elif request.purpose == "plan":
            text = _plan(request)
        elif request.purpose == "progress":
            text = _progress(request)
        elif request.purpose == "answer":
            text = _answer(request)
        else:
            text, calls = _reply(request)
        if on_text is not None:
            for piece in _chunks(text):
                await on_text(piece)
        messages = request.messages  # list comprehensions: ~2x faster than generators here
        seen = len(request.system) + sum([len(m.content) for m in messages]) \
            + sum([len(m.name) for m in messages if m.name])
        usage = Usage(input_tokens=max(1, seen // 4),
                      output_tokens=max(1, (len(text) + sum(len(c.arguments) for c in calls)) // 4))
        return ModelResponse(text=text, tool_calls=calls, usage=usage, model=self.name)

    async def aclose(self) -> None:
        return None


def _select(request: ModelRequest) -> str:
    # Just the name, no label: a selector's answer is parsed, not shown.
    candidates = request.candidates
    if not candidates:
        return ""
    spoken = _speakers(request.messages)
    # Whoever has not spoken yet comes first, people included: the whole team is heard
    # before anyone speaks twice. A person speaks under their own name, not the human
    # participant's, so any speaker who is not a participant is the person.
    names = [c.name for c in candidates]
    roster = set(ROLE.findall(request.system))
    if not roster >= set(names):  # a selector prompt without the team's {roles}: the one
        # participant missing from the candidates is the last speaker, who may not repeat
        roster = set(names) | {n for n in spoken[-1:]}
    humans = {c.name for c in candidates if c.human}
    people_spoke = any(n not in roster or n in humans for n in spoken)
    for c in candidates:
        if not (c.name in spoken or (c.human and people_spoke)):
            return c.name
    last = spoken[-1] if spoken else None
    start = names.index(last) + 1 if last in names else 0
    ordered = [candidates[(start + i) % len(candidates)] for i in range(len(candidates))]
    chosen = next((c for c in ordered if not c.human), ordered[0])
    return chosen.name


def _reply(request: ModelRequest) -> tuple[str, tuple[ToolCall, ...]]:
    """A turn: a word on the latest thing a person said (never on rehearsal text), each of
    the agent's tools called once, a handoff where it has some, and the marker once the
    whole team has been heard."""
    agent = request.agent or "agent"
    messages = request.messages
    last = messages[-1] if messages else None
    call = _next_call(request)
    if last is not None and last.role == "tool":
        called = _tool_name(messages, last.tool_call_id) or "the tool"
        outcome = "failed" if last.is_error else "returned"
        text = f"{LABEL}{agent} notes that {called} {outcome} '{_excerpt(last.content)}'"
        if call is not None:
            text += f", then {_calling(call)}"
    elif call is not None and not call.name.startswith(HANDOFF_PREFIX):
        text = f"{LABEL}{agent} {_calling(call)}"
    else:
        text = f"{LABEL}{agent} {_on_topic(messages)}"
        if call is not None:
            text += f", then {_calling(call)}"
    marker = MARKER.search(request.system)
    if call is None and marker and _team_heard(request):
        text += f"\n\n{marker.group(1)}: rehearsal conclusion."
    return text, (call,) if call is not None else ()


def _on_topic(messages: tuple[ChatMessage, ...]) -> str:
    """`on '<what a person last said>'`, naming the agent it answers if one spoke since."""
    topic = next((m for m in reversed(messages)
                  if m.role == "user" and m.content and LABEL not in m.content), None)
    if topic is None:
        return "has nothing to go on yet"
    last = messages[-1]
    after = f"answers {last.name} " if last is not topic and last.role == "user" and last.name \
        else ""
    return f"{after}on '{_excerpt(topic.content)}'"


def _calling(call: ToolCall) -> str:
    if call.name.startswith(HANDOFF_PREFIX):
        return f"hands over to {call.name[len(HANDOFF_PREFIX):]}"
    return f"calls {call.name}"


def _next_call(request: ModelRequest) -> ToolCall | None:
    """The first of the agent's tools it has not called yet; once all are, a handoff (to
    whoever was heard least recently) where it has handoffs, unless it concludes."""
    messages = request.messages
    called = {c.name for m in messages if m.role == "assistant" for c in m.tool_calls}
    tools = [t for t in request.tools if not t.name.startswith(HANDOFF_PREFIX)]
    tool = next((t for t in tools if t.name not in called), None)
    if tool is None:
        handoffs = [t for t in request.tools if t.name.startswith(HANDOFF_PREFIX)]
        if not handoffs or (MARKER.search(request.system) and _team_heard(request)):
            return None
        spoken, mates = _speakers(messages), _teammates(request)
        tool = min(handoffs, key=lambda t: _last_heard(t.name[len(HANDOFF_PREFIX):], spoken,
                                                         mates))
    return ToolCall(id=f"rehearsal_{len(messages)}", name=tool.name,
                    arguments=json.dumps(_arguments(tool)))


def _last_heard(name: str, spoken: list[str], mates: list[str]) -> int:
    """Where `name` last spoke in `spoken` (-1: never). A person speaks under their own
    name, so one never heard by name was last heard when a person last spoke."""
    by_name = name in spoken
    for i in range(len(spoken) - 1, -1, -1):
        if spoken[i] == name or (not by_name and spoken[i] not in mates):
            return i
    return -1


def _speakers(messages: tuple[ChatMessage, ...]) -> list[str]:
    """Who spoke, in order: names of others' messages, the task left out."""
    return [m.name for m in messages if m.role == "user" and m.name and m.name != TASK]


def _teammates(request: ModelRequest) -> list[str]:
    """The rest of the team, as the agent's system prompt names them ([] if it does not)."""
    team = TEAMMATES.search(request.system)
    return [n.strip() for n in team.group(1).split(",") if n.strip()] if team else []


def _team_heard(request: ModelRequest) -> bool:
    """Whether every teammate has spoken (a person counts for one not heard by name), or
    this agent has already had its say once: time for its conclusion."""
    if any(m.role == "assistant" and m.content and not m.tool_calls for m in request.messages):
        return True
    mates, spoken = _teammates(request), _speakers(request.messages)
    unheard = [n for n in mates if n not in spoken]
    people = {n for n in spoken if n not in mates}
    return len(unheard) <= len(people)


def _tool_name(messages: tuple[ChatMessage, ...], call_id: str | None) -> str | None:
    for m in reversed(messages):
        for call in m.tool_calls:
            if call.id == call_id:
                return call.name
    return None


def _arguments(tool: ToolSpec) -> dict:
    """Arguments that satisfy the tool's schema: required params and those without defaults."""
    schema = tool.parameters or {}
    required = set(schema.get("required", ()))
    props = schema.get("properties") or {}
    args = {name: _value(name, prop) for name, prop in props.items()
            if name in required or "default" not in prop}
    texts = [n for n, p in props.items() if n in args and p.get("type", "string") == "string"
             and not p.get("enum")]
    example = EXAMPLE.search(tool.description)
    if example and len(texts) == 1:
        args[texts[0]] = example.group(1)
    return args


def _value(name: str, prop: dict) -> object:
    if prop.get("enum"):
        return prop["enum"][0]
    if "const" in prop:
        return prop["const"]
    options = prop.get("anyOf") or prop.get("oneOf")
    if options and "type" not in prop:
        usable = [o for o in options if o.get("type") != "null"] or options
        return _value(name, usable[0])
    kind = prop.get("type", "string")
    if isinstance(kind, list):  # e.g. ["string", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    return {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {},
            "null": None}.get(kind, f"rehearsal {name}")


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT else flat[:EXCERPT - 1] + "…"


def _chunks(text: str, pieces: int = 3) -> list[str]:
    if not text:
        return []
    size = -(-len(text) // pieces)
    return [text[i:i + size] for i in range(0, len(text), size)]


# -- a magentic orchestrator ---------------------------------------------------------------
def _revision(request: ModelRequest) -> int:
    for m in reversed(request.messages[-3:]):
        found = REVISION.search(m.content)
        if found:
            return int(found.group(1))
    return 1


def _task(request: ModelRequest) -> str:
    first = request.messages[0] if request.messages else None
    return first.content if first is not None and first.name == TASK else ""


def _plan(request: ModelRequest) -> str:
    """FACTS and PLAN sections: the task, what a person asked to change or why the team is
    stuck, and one step for each participant."""
    question = request.messages[-1].content if request.messages else ""
    facts = [f"- {LABEL}given: '{_excerpt(_task(request))}'"]
    changes = CHANGES.search(question)
    if changes:
        facts.append(f"- asked for: '{_excerpt(changes.group(1))}'")
    stuck = STUCK.search(question)
    if stuck:
        facts.append(f"- learned: the last plan stalled ({_excerpt(stuck.group(1))})")
    steps = [f"{i}. {c.name}: {_excerpt(c.description)}"
             for i, c in enumerate(request.candidates, 1)]
    return ("FACTS:\n" + "\n".join(facts) + f"\n\nPLAN:\n{LABEL}plan revision "
            f"{_revision(request)}\n" + "\n".join(steps))


def _since_plan(request: ModelRequest) -> tuple[ChatMessage, ...]:
    """The conversation since the latest plan (the question itself left out)."""
    messages = request.messages[:-1]
    start = 0
    for i, m in enumerate(messages):
        if m.name == ORCHESTRATOR and m.content.startswith((PLAN_POST, "FACTS:")) \
                and PLAN_POST in m.content:
            start = i + 1
    return messages[start:]


def _progress(request: ModelRequest) -> str:
    """A progress ledger: each participant in turn, then done; a stall when people ask."""
    candidates = request.candidates
    names = [c.name for c in candidates]
    humans = {c.name for c in candidates if c.human}
    heard: list[str] = []
    person_spoke = False
    words = [_task(request)]
    for m in _since_plan(request):
        if m.role != "user" or not m.name or m.name in (TASK, ORCHESTRATOR):
            continue
        if m.name in names and m.name not in humans:
            heard.append(m.name)
        elif not m.content.startswith(LABEL):
            person_spoke = True
            words.append(m.content)
    said = " ".join(words)
    stalling = bool(STALL.search(said)) or (bool(REPLAN.search(said))
                                             and _revision(request) == 1)
    agents = [n for n in names if n not in humans] or names
    if stalling:
        last = heard[-1] if heard else None
        nxt = agents[(agents.index(last) + 1) % len(agents)] if last in agents else agents[0]
        return _ledger(False, False, False, nxt, "the team repeats itself without getting closer",
                       f"{LABEL}{nxt}, try that step again.")
    unheard = [c for c in candidates if c.name not in heard and not (c.human and person_spoke)]
    if not unheard:
        return _ledger(True, False, True, names[0] if names else "", "everyone was heard",
                       f"{LABEL}nothing more to do.")
    nxt = unheard[0].name
    ask = (f"{LABEL}what should the team know that only you can tell it?"
           if unheard[0].human else f"{LABEL}{nxt}, please take your step of the plan.")
    return _ledger(False, False, True, nxt, f"{nxt} has not been heard since the plan", ask)


def _ledger(done: bool, loop: bool, progress: bool, nxt: str, why: str, ask: str) -> str:
    return json.dumps({
        "is_request_satisfied": {"reason": why, "answer": done},
        "is_in_loop": {"reason": why, "answer": loop},
        "is_progress_being_made": {"reason": why, "answer": progress},
        "next_speaker": {"reason": why, "answer": nxt},
        "instruction_or_question": {"reason": why, "answer": ask},
    })


def _answer(request: ModelRequest) -> str:
    heard = list(dict.fromkeys(m.name for m in request.messages
                               if m.role == "user" and m.name and m.name not in
                               (TASK, ORCHESTRATOR)))
    who = ", ".join(heard) if heard else "nobody"
    return (f"{LABEL}final answer on '{_excerpt(_task(request))}', after hearing from {who}.")
