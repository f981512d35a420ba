"""What each event looks like in a thread: which persona posts which text.

Pure functions from events to `Outbound` posts; the runner delivers them.
Texts a person reads say what happened and what they can do next.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from threadteam.teams.events import (
    AgentMessage,
    ApprovalDecided,
    ApprovalExpired,
    Event,
    Instructed,
    PlanReviewed,
    PlanWritten,
    ProgressAssessed,
    RunFinished,
    RunPaused,
    SpeakerSelected,
    TaskStarted,
    ToolCallRequested,
)
from threadteam.teams.state import RunState

from .shapes import ApprovalPrompt, Outbound, ThreadKey

__all__ = ["approval_key", "approval_number", "is_postable", "plan_key", "post_key", "render",
           "render_decision", "render_edit", "settled_key"]

Mention = Callable[[str], str]


def post_key(run_id: str, seq: int) -> str:
    """The idempotency key of the post for event number `seq` of a run."""
    return f"{run_id}:{seq}"


def approval_key(run_id: str, call_id: str) -> str:
    """The idempotency key of an approval request's post (found again to edit it)."""
    return f"{run_id}:approval:{call_id}"


def plan_key(run_id: str, revision: int) -> str:
    """The idempotency key of a magentic plan's post (found again to edit it)."""
    return f"{run_id}:plan:{revision}"


def approval_number(state: RunState, call_id: str) -> int:
    """1-based number of a call among the run's approval requests ("approve 2")."""
    n = 0
    for cid, call in state.calls.items():
        if call.request.needs_approval:
            n += 1
        if cid == call_id:
            return n
    return n


def is_postable(e: Event) -> bool:
    """Whether an event shows up in the thread."""
    if isinstance(e, AgentMessage):
        return bool(e.text.strip())
    if isinstance(e, ToolCallRequested):
        return e.needs_approval
    if isinstance(e, PlanReviewed):
        return e.approved  # the plan post is edited to say so
    if isinstance(e, ProgressAssessed):
        return e.hands_on  # the orchestrator's instruction to whoever speaks next
    return isinstance(e, PlanWritten | Instructed | TaskStarted | ApprovalDecided | ApprovalExpired | RunPaused | RunFinished
                      | SpeakerSelected)


def render(state: RunState, e: Event, seq: int, key: ThreadKey, run_id: str, mention: Mention,
           notice: str = "") -> Outbound | None:
    """The post for event number `seq`, given the state right after it was folded in."""
    team = state.team
    if isinstance(e, TaskStarted):
        who = ", ".join(a.persona.display_name for a in team.agents if not a.human)
        text = (f"*{team.name}* is on it: {who}. Reply in this thread to join in; "
                f"`stop` ends the run, `help` lists the commands.")
        if notice:
            text += f"\n{notice}"
        return Outbound(key, text, post_key(run_id, seq), notice=True)
    if isinstance(e, AgentMessage):
        if not e.text.strip():
            return None
        persona = team.by_name[e.agent].persona
        return Outbound(key, e.text, post_key(run_id, seq), persona=persona,
                        meta={"agent": e.agent})
    if isinstance(e, ToolCallRequested) and e.needs_approval:
        persona = team.by_name[e.agent].persona
        n = approval_number(state, e.call_id)
        args = _args_block(e.args)
        tool = team.by_name[e.agent].tool(e.tool)
        source = f" on {tool.source}" if tool is not None and tool.source else ""
        text = (f"Approval #{n}: {persona.display_name} wants to run `{e.tool}`{source}\n{args}\n"
                f"Reply `approve {n}` or `deny {n} <reason>`.")
        return Outbound(key, text, approval_key(run_id, e.call_id), persona=persona,
                        approval=ApprovalPrompt(e.call_id, e.tool, dict(e.args), n,
                                                always=team.approval.quorum == 1 and not (
                                                    tool is not None and tool.pinned)))
    if isinstance(e, PlanWritten | Instructed | ProgressAssessed):
        return _render_orchestrator(state, e, key, run_id, seq)
    if isinstance(e, SpeakerSelected) and e.agent in team.humans:
        return Outbound(key, f"Your turn, {mention(state.by)}: the team is waiting for your "
                             f"reply in this thread.", post_key(run_id, seq), notice=True)
    if isinstance(e, RunPaused):
        who = team.by_name[e.agent].persona.display_name if e.agent in team.by_name else "The team"
        return Outbound(key, f"{who} could not go on: {e.reason}\nReply `retry` to try again.",
                        post_key(run_id, seq), notice=True)
    if isinstance(e, RunFinished):
        if state.budget_spent:
            return Outbound(key, f"Finished: {e.reason}. The run cannot go on past its budget; "
                                 f"start a new one to keep going.", post_key(run_id, seq),
                            notice=True)
        if state.unheard:
            return Outbound(key, f"Finished: {e.reason}. A message written as the team finished "
                                 f"was kept, but no agent has read it: reply `continue` to have "
                                 f"the team answer it.", post_key(run_id, seq), notice=True)
        return Outbound(key, f"Finished: {e.reason}. Reply `continue` (with instructions, if you "
                             f"like) to keep going.", post_key(run_id, seq), notice=True)
    return None


def settled_key(run_id: str, e: ApprovalDecided | ApprovalExpired | PlanReviewed) -> str:
    """The idempotency key of the edit that settles a request (decided, or expired), or
    marks a plan approved."""
    if isinstance(e, PlanReviewed):
        return f"{plan_key(run_id, e.revision)}:approved"
    suffix = "expired" if isinstance(e, ApprovalExpired) else "decided"
    return f"{approval_key(run_id, e.call_id)}:{suffix}"


def render_decision(state: RunState, e: ApprovalDecided | ApprovalExpired, key: ThreadKey,
                    run_id: str, mention: Mention) -> tuple[str, Outbound] | None:
    """The edit that settles an approval request in place: (request's post key, new post).

    None for a decision that settles nothing: one approval of several a quorum needs
    (the request keeps its buttons until the last one)."""
    call = state.calls.get(e.call_id)
    if call is None:
        return None
    if isinstance(e, ApprovalDecided) and call.decision != e:
        return None
    req = call.request
    persona = state.team.by_name[req.agent].persona
    n = approval_number(state, e.call_id)
    if isinstance(e, ApprovalExpired):
        head = "⌛ Expired: nobody decided in time, so it did not run"
    else:
        verdict = "Approved" if e.approved else "Denied"
        reason = f": {e.reason}" if e.reason else ""
        others = [p for p in call.approved_by if p != e.by] if e.approved else []
        by = ", ".join(mention(p) for p in [*others, e.by]) if e.by else ""
        by = f" by {by}" if by else ""  # no one: the run's time limit decided
        head = f"{'✅' if e.approved else '❌'} {verdict}{by}{reason}"
    text = (f"{head}\nApproval #{n}: {persona.display_name} wanted to run `{req.tool}`\n"
            f"{_args_block(req.args)}")
    return approval_key(run_id, e.call_id), Outbound(key, text, settled_key(run_id, e),
                                                       persona=persona)


def _args_block(args: dict) -> str:
    """The whole arguments, never a truncation of what will run: a person approves what
    they read. (Adapters split a long post into several messages.)"""
    body = json.dumps(args, indent=2, ensure_ascii=False).replace("```", "`\u200b``")
    return f"```\n{body}\n```"


def render_edit(state: RunState, e: Event, key: ThreadKey, run_id: str, mention: Mention
                ) -> tuple[str, Outbound] | None:
    """The edit event `e` makes to an earlier post: (that post's key, its new content), or
    None. A decision settles its approval request; a magentic plan that replaces another
    strikes the old one through; an approved plan says who approved it."""
    if isinstance(e, ApprovalDecided | ApprovalExpired):
        return render_decision(state, e, key, run_id, mention)
    m = state.magentic
    orchestrator = state.team.orchestrator
    if m is None or orchestrator is None:
        return None
    persona, meta = orchestrator.agent.persona, {"agent": orchestrator.agent.name}
    if isinstance(e, PlanWritten) and e.revision > 1 and (old := m.plans.get(e.revision - 1)):
        why = {"review": "rewritten with the changes asked for",
               "replan": f"the team stalled ({e.reason})"}.get(e.cause, "rewritten")
        text = (f"~~Plan {old.revision}~~ superseded by plan {e.revision} below: {why}\n\n"
                f"{_struck(old.plan)}")
        return plan_key(run_id, old.revision), Outbound(
            key, text, f"{plan_key(run_id, old.revision)}:superseded", persona=persona, meta=meta)
    if isinstance(e, PlanReviewed) and e.approved and (plan := m.plans.get(e.revision)):
        who = e.display_name or "a person"
        text = f"✅ Plan {plan.revision}, approved by {who}\n\n{_plan_body(plan)}"
        return plan_key(run_id, plan.revision), Outbound(
            key, text, settled_key(run_id, e), persona=persona, meta=meta)
    return None


def _render_orchestrator(state: RunState, e: PlanWritten | Instructed | ProgressAssessed,
                         key: ThreadKey, run_id: str, seq: int) -> Outbound | None:
    """A magentic orchestrator's posts: its plan (one post per plan, edited when replaced)
    and its instruction to whoever speaks next. Model text, so marked as an agent's."""
    orchestrator = state.team.orchestrator
    if orchestrator is None:
        return None
    persona, meta = orchestrator.agent.persona, {"agent": orchestrator.agent.name}
    if isinstance(e, Instructed | ProgressAssessed):
        handed = (e.agent, e.text) if isinstance(e, Instructed) else e.instruction
        if handed is None:
            return None
        agent, said = handed
        target = state.team.by_name.get(agent)
        name = target.persona.display_name if target is not None else agent
        text = f"→ **{name}**: {said}"
        if target is not None and target.human:
            text += "\n\n_Your turn: the team waits for your reply in this thread._"
        return Outbound(key, text, post_key(run_id, seq), persona=persona, meta=meta)
    head = {"start": f"**Plan {e.revision}**",
            "review": f"**Plan {e.revision}**, rewritten with the changes asked for",
            "replan": f"**Plan {e.revision}**, new plan {_replans(state, e.revision)} of "
                      f"{orchestrator.max_resets} because the team stalled: {e.reason}"}
    text = f"{head.get(e.cause, head['start'])}\n\n{_plan_body(e)}"
    if orchestrator.plan_review:
        text += ("\n\nThe team waits for this plan: reply `approve` to start, or write what "
                 "to change.")
    return Outbound(key, text, plan_key(run_id, e.revision), persona=persona, meta=meta)


def _replans(state: RunState, revision: int) -> int:
    """How many of the run's plans up to `revision` were written because the team stalled."""
    plans = state.magentic.plans if state.magentic is not None else {}
    return sum(1 for r, p in plans.items() if r <= revision and p.cause == "replan")


def _plan_body(e: PlanWritten) -> str:
    facts = f"**Facts**\n{e.facts}\n\n" if e.facts.strip() else ""
    return f"{facts}**Steps**\n{e.plan}"


# A line's list marker ("- ", "2. ") stays outside the strike-through.
_ITEM = re.compile(r"^(\s*(?:[-*+]|\d+[.)])\s+)?(.*?)\s*$")


def _struck(text: str) -> str:
    out = []
    for line in text.splitlines():
        m = _ITEM.match(line)
        lead, rest = (m.group(1) or "", m.group(2)) if m else ("", line)
        rest = rest.replace("~~", "")
        out.append(f"{lead}~~{rest}~~" if rest else lead.rstrip())
    return "\n".join(out)
