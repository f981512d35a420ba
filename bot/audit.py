"""Runs as an auditor reads them: a list, and one run's transcript with every approval
decision (who, when, on which arguments). Read straight from the log, so a run whose
team file has since changed or gone still reads as it happened."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from threadteam.teams.events import (
    AgentMessage,
    ApprovalDecided,
    Event,
    HumanMessage,
    Instructed,
    PlanReviewed,
    PlanWritten,
    ProgressAssessed,
    RunContinued,
    RunFinished,
    RunPaused,
    RunResumed,
    StopRequested,
    TaskStarted,
    ToolCallRequested,
    ToolResult,
    to_dict,
    try_from_json,
)

from .stores.base import Store

__all__ = ["RECENT", "AmbiguousRun", "RunLine", "list_runs", "transcript"]

_QUIET = ("speaker_selected", "clock_checked")  # bookkeeping no auditor needs


@dataclass(frozen=True, slots=True)
class RunLine:
    run_id: str
    thread: str
    team: str
    by: str
    started: float
    updated: float
    state: str
    task: str


async def list_runs(store: Store, limit: int = 20) -> list[RunLine]:
    """The most recently updated runs, newest first."""
    lines = []
    for info in await store.runs(limit=limit):
        read = _read(await store.load(info.run_id))
        events = [e for e in read if not isinstance(e, str)]
        if not read or not isinstance(read[0], TaskStarted):
            continue
        start = read[0]
        state = _state(events) if len(events) == len(read) else "unreadable"
        lines.append(RunLine(info.run_id, info.thread, start.team, start.by, start.at,
                             info.updated_at, state, start.task))
    return lines


class AmbiguousRun(LookupError):
    """A run id's start that more than one recent run has."""

    def __init__(self, start: str, matches: list[str]) -> None:
        super().__init__(start)
        self.start, self.matches = start, matches

    def __str__(self) -> str:
        shown = ", ".join(self.matches[:5]) + (", …" if len(self.matches) > 5 else "")
        return f"{self.start!r} is the start of {len(self.matches)} runs ({shown}); give more of it"


# How many of the most recently updated runs a run id's start is looked for among.
RECENT = 10_000


async def transcript(store: Store, run_id: str) -> str | None:
    """The run's log as text, one line per event; None when there is no such run. `run_id`
    is a whole id (any run) or the start of one (among the `RECENT` latest; `AmbiguousRun`
    when several have it)."""
    if not run_id or await store.thread_of(run_id) is None:
        matches = [r.run_id for r in await store.runs(limit=RECENT)
                   if r.run_id.startswith(run_id)]
        if len(matches) > 1:
            raise AmbiguousRun(run_id, matches)
        if not matches:
            return None
        run_id = matches[0]
    raw = await store.load(run_id)
    if not raw:
        return None
    read = _read(raw)
    events = [e for e in read if not isinstance(e, str)]
    thread = await store.thread_of(run_id) or "?"
    tools: dict[str, str] = {}
    state = _state(events) if len(events) == len(read) else \
        "holds events this version of threadteam cannot read"
    out = [f"run {run_id} in {thread} ({state})"]
    for e in read:
        if isinstance(e, str):  # shown as stored: an auditor still sees what happened
            shown = e if len(e) <= 500 else e[:499] + "…"
            out.append(f"{'?':<19}  (an event this version cannot read) {shown}")
            continue
        if e.kind in _QUIET:
            continue
        if isinstance(e, ToolCallRequested):
            tools[e.call_id] = e.tool
        out.append(f"{_when(e.at)}  " + _line(e, tools).replace("\n", "\n" + " " * 21))
    return "\n".join(out)


def _line(e: Event, tools: dict[str, str]) -> str:
    if isinstance(e, TaskStarted):
        return (f"{e.by} summoned {e.team}: {e.task}"
                f"  [approvers: {', '.join(e.approvers) or e.by}]")
    if isinstance(e, HumanMessage):
        return f"{e.display_name or e.user} ({e.user}): {e.text}"
    if isinstance(e, AgentMessage):
        used = f"  [{e.usage.total} tokens, {e.model}]" if e.model else ""
        return f"{e.agent}: {e.text}{used}"
    if isinstance(e, ToolCallRequested):
        gate = "needs approval" if e.needs_approval else "no approval needed"
        return f"{e.agent} asks to run {e.tool} ({gate}), call {e.call_id}, arguments: " \
               f"{json.dumps(e.args, ensure_ascii=False, sort_keys=True)}"
    if isinstance(e, ApprovalDecided):
        verdict = "APPROVED" if e.approved else "DENIED"
        by = e.by or "the run's time limit"
        note = f": {e.reason}" if e.reason else ""
        return f"{verdict} {tools.get(e.call_id, '?')} call {e.call_id} by {by}{note}"
    if isinstance(e, ToolResult):
        what = "failed" if e.error else "returned"
        return f"{tools.get(e.call_id, 'tool')} call {e.call_id} {what}: {e.output}"
    if isinstance(e, StopRequested):
        return f"stop requested by {e.by}"
    if isinstance(e, RunPaused):
        return f"paused: {e.reason}"
    if isinstance(e, RunResumed):
        return f"resumed by {e.by}"
    if isinstance(e, RunContinued):
        return f"continued by {e.by}" + (f": {e.instructions}" if e.instructions else "")
    if isinstance(e, RunFinished):
        return f"finished: {e.reason}"
    if isinstance(e, PlanWritten | ProgressAssessed | Instructed | PlanReviewed):
        return _orchestration_line(e)
    data = to_dict(e)
    data.pop("at", None)
    kind = data.pop("kind")
    return f"{kind.replace('_', ' ')}: {json.dumps(data, ensure_ascii=False, sort_keys=True)}"


def _orchestration_line(e: PlanWritten | ProgressAssessed | Instructed | PlanReviewed) -> str:
    """A magentic orchestrator's plans, progress checks and instructions, and plan reviews."""
    if isinstance(e, Instructed):
        return f"orchestrator -> {e.agent}: {e.text}"
    if isinstance(e, PlanReviewed):
        if e.approved:
            return f"plan {e.revision} approved by {e.by}"
        return f"{e.display_name or e.by} ({e.by}) asked for changes to plan {e.revision}: " \
               f"{e.changes}"
    used = f"  [{e.usage.total} tokens, {e.model}]" if e.model else ""
    if isinstance(e, PlanWritten):
        why = {"start": "", "review": " with a person's changes",
               "replan": f" to replace plan {e.revision - 1} ({e.reason})"}.get(e.cause, "")
        facts = f"FACTS:\n{e.facts}\n" if e.facts else ""
        return f"orchestrator wrote plan {e.revision}{why}{used}\n{facts}PLAN:\n{e.plan}"
    if e.problem:
        return f"progress check unusable: {e.problem}{used}\nreply: {e.reply}"

    def said(key: str) -> str:
        entry = e.ledger.get(key, {})
        answer = entry.get("answer")
        shown = ("yes" if answer else "no") if isinstance(answer, bool) else str(answer)
        return f"{shown} ({entry.get('reason', '')})"

    handed = e.instruction
    return (f"progress check{used}\n"
            f"done? {said('is_request_satisfied')}\nin a loop? {said('is_in_loop')}\n"
            f"progress? {said('is_progress_being_made')}\nnext: {said('next_speaker')}\n"
            f"to say: {said('instruction_or_question')}"
            + (f"\norchestrator -> {handed[0]}: {handed[1]}" if handed is not None else ""))


def _read(raw: list[str]) -> list[Event | str]:
    """A run's log: its events, and as stored each one this version cannot read (a newer
    threadteam wrote it, say)."""
    return [r if (e := try_from_json(r)) is None else e for r in raw]


def _state(events: list[Event]) -> str:
    state = "running"
    for e in events:
        if isinstance(e, RunFinished):
            state = "finished"
        elif isinstance(e, RunPaused):
            state = "paused"
        elif isinstance(e, RunResumed | RunContinued):
            state = "running"
    return state


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if at else "-"
