"""What a magentic orchestrator's model is asked, and how its answers are read.

Three kinds of request, each a pure function of the folded state: the task ledger
(facts and plan: at the start, after a person's changes, or to replan when the
team stalls), the progress ledger (strict JSON, every round) and the final answer.
Every request opens with the same system prompt, the task and the orchestrator's
view of the conversation, and ends with the question, so its prefix stays
byte-stable for the providers' prompt caches.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import orjson

from .events import PlanWritten
from .models.base import Candidate, ChatMessage, ModelRequest
from .spec import ORCHESTRATOR, Team

if TYPE_CHECKING:
    from .state import RunState

__all__ = [
    "KEYS", "ORCHESTRATOR_CONTEXT", "ORCHESTRATOR_SYSTEM", "answer_request", "parse_plan",
    "parse_progress", "plan_message", "plan_request", "progress_request",
]

#: How many recent messages the orchestrator reads (since its latest plan).
ORCHESTRATOR_CONTEXT = 40

#: The progress ledger's questions, in the order the model answers them.
KEYS = ("is_request_satisfied", "is_in_loop", "is_progress_being_made", "next_speaker",
        "instruction_or_question")
_YES_NO = KEYS[:3]

ORCHESTRATOR_SYSTEM = (
    "You are the orchestrator of a team that works on a task in a chat thread, with people "
    "reading along. You plan, hand each step to the team member best placed for it, check "
    "progress after every turn, and replan when the team is stuck. You do not do the work "
    "yourself.")

_SECTIONS = "Answer with the two sections, headed exactly FACTS: and PLAN:."

_PLAN = """Task: {task}

The team:
{team}

This will be plan revision {revision}. Before we begin, write down what we know and how we will proceed.

FACTS: what the task gives or we can verify; facts to look up, and where; facts to derive (by reasoning or computation); educated guesses.

PLAN: a short bullet-point plan for this team, naming who does each step. Not every member needs a step.

""" + _SECTIONS

_REVIEW = """Task: {task}

The team:
{team}

Your plan was:

FACTS:
{facts}

PLAN:
{plan}

A person asked for these changes:
{changes}

This will be plan revision {revision}. Rewrite the facts and the plan to take the changes into account. """ + _SECTIONS

_REPLAN = """Task: {task}

The team:
{team}

We are stuck ({reason}). Our facts were:
{facts}

and our plan was:
{plan}

This will be plan revision {revision}. Update the facts with what we have learned (move guesses that proved true into the facts, add new guesses), then write a new plan that gets past what went wrong and does not repeat it. """ + _SECTIONS

# The progress question after its first lines (task, team, revision): the same for every
# run of a team, so written once per team (`progress_request`).
_PROGRESS_REST = """. To decide what happens next, answer these questions, with your reasoning:
- is_request_satisfied: is the task fully done (true), or not yet SUCCESSFULLY and FULLY addressed (false)?
- is_in_loop: are we repeating the same requests or getting the same answers as before?
- is_progress_being_made: are recent messages adding value (true also when just starting)?
- next_speaker: who speaks next, one of: {names}
- instruction_or_question: what to tell or ask them, spoken to them directly, with what they need to know.

Answer with only a JSON object, no code fence, in exactly this shape:
{{"is_request_satisfied": {{"reason": "...", "answer": true}}, "is_in_loop": {{"reason": "...", "answer": false}}, "is_progress_being_made": {{"reason": "...", "answer": true}}, "next_speaker": {{"reason": "...", "answer": "<name>"}}, "instruction_or_question": {{"reason": "...", "answer": "..."}}}}"""

_RETRY = ("That answer could not be used: {problem}. Answer again with only the JSON object, "
          "in the shape asked for above.")

_ANSWER = """The task is done: {task}

Using the conversation above, write the final answer for the people who asked, complete and self-contained. Start with the answer itself; do not describe how the team got there."""


# -- requests ---------------------------------------------------------------------------------
def _team_lines(team: Team) -> str:
    key = "magentic.team"
    lines = team.memo.get(key)
    if lines is None:
        lines = "\n".join(f"- {a.name}: {a.description}" + (" (a person in the thread)"
                                                           if a.human else "")
                           for a in team.agents)
        team.memo[key] = lines
    return lines


def _candidates(team: Team) -> tuple[Candidate, ...]:
    key = "magentic.candidates"
    found = team.memo.get(key)
    if found is None:
        found = tuple(Candidate(a.name, a.description, a.human) for a in team.agents)
        team.memo[key] = found
    return found


def _request(state: RunState, model: str, purpose: Any, question: str | ChatMessage,
             *after: ChatMessage) -> ModelRequest:
    m = state.magentic
    assert m is not None
    recent = m.view.messages  # a view of ORCHESTRATOR_CONTEXT messages at most
    task = state.task_message
    asking = question if isinstance(question, ChatMessage) else ChatMessage("user", question)
    messages = (task, *recent, *after, asking) if task is not None else (*recent, *after, asking)
    if not m.cache_key and state.cache_key:
        m.cache_key = f"{state.cache_key}-{ORCHESTRATOR}"
    return ModelRequest(model=model, system=ORCHESTRATOR_SYSTEM, messages=messages,
                        purpose=purpose, agent=ORCHESTRATOR, candidates=_candidates(state.team),
                        cache_key=m.cache_key)


def plan_request(state: RunState, model: str, cause: str, reason: str = "") -> ModelRequest:
    """The request for the next task ledger: the first plan, a plan with a person's changes
    (`review`), or a new plan because the team stalled (`replan`, saying why)."""
    m = state.magentic
    assert m is not None
    team, fields = state.team, {"task": state.task, "revision": m.revision + 1}
    fields["team"] = _team_lines(team)
    old = m.plans.get(m.revision)
    if cause == "review" and old is not None and m.changes is not None:
        question = _REVIEW.format(facts=old.facts, plan=old.plan, changes=m.changes.changes,
                                  **fields)
    elif cause == "replan" and old is not None:
        question = _REPLAN.format(facts=old.facts, plan=old.plan, reason=reason, **fields)
    else:
        question = _PLAN.format(**fields)
    return _request(state, model, "plan", question)


def progress_request(state: RunState, model: str) -> ModelRequest:
    """The request for this round's progress ledger; after an unusable answer, that answer
    and what was wrong with it come before the question is asked again."""
    m = state.magentic
    assert m is not None
    team = state.team
    asked = m.asked  # the same question every round of a plan: written once
    if asked is None or asked[0][1] != m.revision or asked[0][0] != state.task:
        rest = team.memo.get("magentic.progress")
        if rest is None:
            rest = team.memo["magentic.progress"] = _PROGRESS_REST.format(
                names=", ".join(team.names))
        question = (f"Recall the task: {state.task}\n\nThe team:\n{_team_lines(team)}\n\n"
                    f"We follow plan revision {m.revision}{rest}")
        m.asked = asked = ((state.task, m.revision), ChatMessage("user", question))
    bad = m.retry
    if bad is None:
        return _request(state, model, "progress", asked[1])
    return _request(state, model, "progress", _RETRY.format(problem=bad.problem),
                    asked[1], ChatMessage("assistant", bad.reply))


def answer_request(state: RunState, model: str) -> ModelRequest:
    """The request for the final answer, once the ledger says the task is done."""
    return _request(state, model, "answer", _ANSWER.format(task=state.task))


# -- reading the answers -------------------------------------------------------------------------
# A section heading on a line of its own or before its text: "FACTS:", "## Plan", "**PLAN:**".
_HEADING = re.compile(r"^[\s#>*_]*(facts|plan)\b[\s*_]*(?::|$)[\s*_]*(.*)$", re.I)


def parse_plan(text: str) -> tuple[str, str]:
    """(facts, plan) from a task ledger; a reply without headings is all plan."""
    sections: dict[str, list[str]] = {"facts": [], "plan": []}
    current: str | None = None
    loose: list[str] = []
    for line in text.strip().splitlines():
        heading = _HEADING.match(line)
        if heading is not None:
            current = heading.group(1).lower()
            rest = heading.group(2).strip()
            if rest:
                sections[current].append(rest)
            continue
        (sections[current] if current is not None else loose).append(line)
    facts = "\n".join(sections["facts"]).strip()
    plan = "\n".join(sections["plan"]).strip()
    if not plan:
        plan = "\n".join(loose).strip() if facts else text.strip()
    return facts, plan


def parse_progress(text: str, team: Team) -> tuple[dict[str, Any], str]:
    """(the checked ledger, "") or ({}, what is wrong with it). The ledger has every key
    with a string `reason`; yes/no answers are booleans and `next_speaker` a participant's
    name (it may name nobody only when the task is done)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return {}, "it is not a JSON object"
    body = text if start == 0 and end == len(text) - 1 else text[start:end + 1]
    try:  # orjson reads the ledger of every round 3x faster than json; json explains errors
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(body)  # what orjson refuses and json takes (NaN), or why not
        except json.JSONDecodeError as exc:
            return {}, f"it is not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(data, dict):
        return {}, "it is not a JSON object"
    if _as_asked(data) and data["next_speaker"]["answer"] in team.by_name:
        return data, ""  # the usual answer: checked in one pass, kept as it came
    ledger: dict[str, Any] = {}
    for key in KEYS:
        entry = data.get(key)
        if type(entry) is not dict or "answer" not in entry:
            return {}, f"'{key}' is missing or has no answer"
        answer, reason = entry["answer"], entry.get("reason", "")
        clean = len(entry) == 2 and type(reason) is str  # kept as it came: the usual case
        if key in _YES_NO:
            if answer is not True and answer is not False:
                answer, clean = _yes_no(answer), False
                if answer is None:
                    return {}, f"'{key}' must answer true or false"
        elif type(answer) is not str:
            return {}, f"'{key}' must answer with text"
        if clean:
            ledger[key] = entry
            continue
        if type(reason) is not str:
            reason = json.dumps(reason)
        ledger[key] = {"reason": reason, "answer": answer}
    speaker = _participant(ledger["next_speaker"]["answer"], team)
    if speaker is None and not ledger["is_request_satisfied"]["answer"]:
        return {}, (f"next_speaker {json.dumps(ledger['next_speaker']['answer'])} is not one of: "
                    f"{', '.join(team.names)}")
    if speaker != ledger["next_speaker"]["answer"]:
        ledger["next_speaker"] = {"reason": ledger["next_speaker"]["reason"],
                                  "answer": speaker or ""}
    return ledger, ""


#: What each of the ledger's answers is, as asked.
_SHAPE = tuple((key, bool if key in _YES_NO else str) for key in KEYS)


def _as_asked(data: dict[str, Any]) -> bool:
    """Whether a ledger has exactly the shape asked for: the five keys, each exactly a text
    `reason` and an `answer` (true or false for the three questions, else text)."""
    if len(data) != len(KEYS):
        return False
    for key, kind in _SHAPE:
        entry = data.get(key)
        if type(entry) is not dict or len(entry) != 2 or type(entry.get("reason")) is not str \
                or type(entry.get("answer")) is not kind:
            return False
    return True


def _yes_no(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _participant(name: str, team: Team) -> str | None:
    if name in team.by_name:  # named exactly, as asked
        return name
    key = "magentic.names"
    names = team.memo.get(key)
    if names is None:  # display names first, so a participant's own name wins a clash
        names = {a.persona.display_name.lower(): a.name for a in team.agents}
        names.update({a.name.lower(): a.name for a in team.agents})
        team.memo[key] = names
    return names.get(name.strip().strip("@").lower())


def plan_message(e: PlanWritten) -> str:
    """The plan as the team reads it in its conversation."""
    facts = f"FACTS:\n{e.facts}\n\n" if e.facts else ""
    return f"{facts}PLAN (revision {e.revision}):\n{e.plan}"
