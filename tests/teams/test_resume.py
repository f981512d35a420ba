"""Resumable by construction: a run picked up from any prefix of its log goes on exactly as before.

The property: drive a scripted run to its end, recording the log. Then, for every
cut point, fold the stored prefix back from JSON, give a fresh model only the
answers not yet used, replay people's events at the positions they had, and
drive again: the events written must be exactly the rest of the original log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threadteam.teams.engine import (
    AwaitApproval,
    AwaitHuman,
    AwaitPlanReview,
    Env,
    Idle,
    deadline,
    decide,
    perform,
    time_passed,
)
from threadteam.teams.errors import ModelError
from threadteam.teams.events import (
    AgentMessage,
    ApprovalDecided,
    Event,
    HumanMessage,
    PlanReviewed,
    PlanWritten,
    ProgressAssessed,
    RunContinued,
    RunPaused,
    RunResumed,
    SpeakerSelected,
    StopRequested,
    TaskStarted,
    from_json,
    to_json,
)
from threadteam.teams.models.base import ModelRequest, ModelResponse, ToolCall, Usage
from threadteam.teams.models.scripted import ScriptedModel
from threadteam.teams.spec import Team
from threadteam.teams.state import RunState
from threadteam.teams.tools import ToolContext

from .helpers import Models, agent, make_team, says

# Tools that declare nothing need approval; the team files here waive it.
TICKET = {"use": "tests.teams.sample_tools:create_ticket", "approval": "never"}
EXPLODE = {"use": "tests.teams.sample_tools:explode", "approval": "never"}


async def post(channel: str, text: str) -> str:
    return f"{channel}/{len(text)}"  # deterministic: a resumed run must post the same


def env_for(model: ScriptedModel) -> Env:
    return Env(models=Models(model),
               tool_context=lambda request: ToolContext(agent=request.agent, post_message=post))


# -- people ---------------------------------------------------------------------------------
Respond = Callable[[RunState, object], Event | None]


@dataclass
class People:
    """What the people in the thread do: answer waits in order, and interject after N messages."""

    replies: list[Event | Callable[[RunState], Event | list[Event]]] = field(default_factory=list)
    interjections: dict[int, Event] = field(default_factory=dict)

    def interjection(self, state: RunState) -> Event | None:
        return self.interjections.pop(state.model_calls, None)

    def reply(self, state: RunState, action: object) -> Event | list[Event] | None:
        if not self.replies:
            return None
        nxt = self.replies.pop(0)
        return nxt(state) if callable(nxt) else nxt


def time_up(state: RunState) -> list[Event]:
    """Nobody answers: the host wakes the run once its time limit has passed."""
    due = deadline(state)
    assert due is not None, "the run has no time limit to pass"
    return time_passed(state, due + 1)


def approve(approved: bool = True, reason: str = "") -> Callable[[RunState], Event]:
    def decided(state: RunState) -> Event:
        call = state.pending_approvals()[0].request.call_id
        return ApprovalDecided(call_id=call, approved=approved, by="U1", reason=reason)
    return decided


# -- the two drivers ------------------------------------------------------------------------
def answers_used(events: list[Event]) -> int:
    """Model calls whose answers a log prefix already holds."""
    return sum(1 for e in events if isinstance(e, AgentMessage | RunPaused | PlanWritten
                                               | ProgressAssessed) or (
        isinstance(e, SpeakerSelected) and e.how in ("model", "fallback")))


async def run_through(team: Team, answers: list, people: People, task: str = "Go.",
                      all_used: bool = True) -> tuple[list[Event], list[tuple[int, Event]]]:
    """The uninterrupted run: its whole log, and where each person's event landed."""
    model = ScriptedModel(answers, leftovers_ok=not all_used)
    env = env_for(model)
    state, log, placed = RunState(team), [], []

    def add(e: Event, by_person: bool = False) -> None:
        if by_person:
            placed.append((len(log), e))
        state.apply(e)
        log.append(e)

    add(TaskStarted(team=team.name, task=task, by="U1", at=1.0))
    for _ in range(2_000):
        if (e := people.interjection(state)) is not None:
            add(e, by_person=True)
            continue
        action = decide(state)
        if action.waits:
            said = people.reply(state, action)
            if said is None:
                break
            for e in said if isinstance(said, list) else [said]:
                add(e, by_person=True)
            continue
        for e in await perform(state, action, env):
            add(e)
    else:
        raise AssertionError("the scripted run did not settle")
    if all_used:
        model.assert_used()
    return log, placed


async def resume(team: Team, answers: list, log: list[Event], placed: list[tuple[int, Event]],
                 cut: int, leftovers_ok: bool = False) -> list[Event]:
    """Fold the stored prefix from JSON and drive on with a fresh model; return what it wrote."""
    stored = [to_json(e) for e in log[:cut]]
    state = RunState.fold(team, [from_json(t) for t in stored])
    model = ScriptedModel(answers[answers_used(log[:cut]):], leftovers_ok=leftovers_ok)
    env = env_for(model)
    people = [(at, e) for at, e in placed if at >= cut]
    out: list[Event] = []
    for _ in range(2_000):
        if people and people[0][0] == cut + len(out):
            e = people.pop(0)[1]
            state.apply(e)
            out.append(e)
            continue
        action = decide(state)
        if action.waits:
            break
        events = await perform(state, action, env)
        for e in events:
            state.apply(e)
        out.extend(events)
    return out


async def assert_resumable_everywhere(team: Team, answers: list, people: People) -> list[Event]:
    log, placed = await run_through(team, list(answers), people)
    whole = [to_json(e) for e in log]
    for cut in range(1, len(log) + 1):
        rest = await resume(team, list(answers), log, placed, cut)
        assert [to_json(e) for e in rest] == whole[cut:], f"resuming after event {cut - 1} diverged"
    live = RunState.fold(team, log)
    assert decide(RunState.fold(team, [from_json(t) for t in whole])) == decide(live)
    return log


def kinds(log: list[Event]) -> set[str]:
    return {e.kind for e in log}


# -- scripted scenarios -----------------------------------------------------------------------
async def test_round_robin_with_the_person_interjections_tools_and_a_continue():
    team = make_team(agent("writer", tools=["calculate", "post_message"]), agent("you", human=True),
                     agent("editor", tools=[TICKET, EXPLODE]),
                     termination={"any": [{"text_mention": "DONE"}, {"max_messages": 9}]})
    answers = [
        says("Costs first.", ToolCall("w1", "calculate", '{"expression": "12*4"}'),
             ToolCall("w2", "calculate", '{"expr": 1}')),
        says("48 a month. Posting.", ToolCall("w3", "post_message", '{"channel": "#ops", "text": "48"}')),
        "Posted.",
        says("", ToolCall("e1", "create_ticket", '{"title": "Budget"}'),
             ToolCall("e2", "explode", '{"reason": "x"}'), ToolCall("e3", "nope", "{}")),
        "Ticket open. DONE",
        "Round two from the writer.",
        "Editor agrees. DONE",
    ]
    people = People(
        replies=[approve(True), HumanMessage(user="U1", text="@editor your turn"),
                 RunContinued(by="U1", instructions="One more round."),
                 HumanMessage(user="U2", text="fine")],
        interjections={1: HumanMessage(user="U2", text="Keep it short.")})
    log = await assert_resumable_everywhere(team, answers, people)
    assert {"tool_call_requested", "approval_decided", "tool_result", "run_continued",
            "run_finished", "human_message"} <= kinds(log)


async def test_selector_with_fallbacks_a_model_failure_and_a_denial():
    team = make_team(
        agent("dispatcher", description="Classifies."),
        agent("billing", tools=["calculate", {"use": "post_message"}], description="Money."),
        agent("customer", human=True, description="The reporter."),
        strategy="selector", termination={"any": [{"text_mention": "RESOLVED"}, {"max_messages": 8}]})
    answers = [
        "nobody in particular",            # selector: falls back to the dispatcher
        "A refund question.",
        "billing",
        ModelError("the provider is overloaded"),
        says("", ToolCall("b1", "post_message", '{"channel": "#refunds", "text": "Refund 12"}')),
        "Not posted; asking the customer.",
        "customer",
        "dispatcher",
        "RESOLVED: refund on its way.",
    ]
    people = People(replies=[RunResumed(by="U1"), approve(False, "ask first"),
                             HumanMessage(user="U1", text="Yes please refund.")])
    log = await assert_resumable_everywhere(team, answers, people)
    assert {"run_paused", "run_resumed", "approval_decided"} <= kinds(log)
    assert log[-1].kind == "run_finished"


async def test_swarm_handoffs_to_the_person_and_back_with_approvals():
    team = make_team(
        agent("planner", handoffs=["coder", "you"], tools=["post_message"]),
        agent("coder", handoffs=["planner"], tools=["calculate"]),
        agent("you", human=True),
        strategy="swarm", termination={"any": [{"text_mention": "SHIPPED"}, {"max_messages": 10}]})
    answers = [
        says("Which repo?", ToolCall("p1", "transfer_to_you", "{}")),
        says("Coder, go.", ToolCall("p2", "transfer_to_coder", "{}"), ToolCall("p3", "transfer_to_you", "{}")),
        says("", ToolCall("c1", "calculate", '{"expression": "2**10"}')),
        says("1024 rows. Back to planner.", ToolCall("c2", "transfer_to_planner", "{}")),
        says("Announcing.", ToolCall("p4", "post_message", '{"channel": "#dev", "text": "1024"}'),
             ToolCall("p5", "transfer_to_coder", "{}")),
        "SHIPPED",
    ]
    people = People(replies=[HumanMessage(user="U1", text="threadteam"), approve(True)],
                    interjections={3: HumanMessage(user="U9", text="Remember the tests.")})
    log = await assert_resumable_everywhere(team, answers, people)
    assert [e.target for e in log if e.kind == "handoff"] == ["you", "coder", "planner", "coder"]


async def test_time_limits_end_a_wait_for_a_person_and_an_approval():
    team = make_team(agent("writer", tools=["post_message"]), agent("you", human=True),
                     termination={"any": [{"timeout": "1h"}, {"max_messages": 12}]})
    answers = [
        "Which channel?",
        says("Posting.", ToolCall("w1", "post_message", '{"channel": "#ops", "text": "hi"}')),
        "Not posted.",
    ]
    people = People(replies=[
        time_up,  # nobody answers the writer
        RunContinued(by="U1", at=9_000.0), HumanMessage(user="U1", text="#ops, sorry"),
        time_up,  # nobody decides the approval
        RunContinued(by="U1", at=20_000.0)])
    log = await assert_resumable_everywhere(team, answers, people)
    assert [e.reason for e in log if e.kind == "run_finished"] == [
        "time limit of 3600 s reached"] * 2
    [denied] = [e for e in log if e.kind == "approval_decided"]
    assert not denied.approved and denied.by == "" and "time limit" in denied.reason
    assert kinds(log) >= {"clock_checked", "tool_result"}


async def test_a_finished_run_continued_from_its_stored_log_keeps_its_history():
    team = make_team("bull", "bear", termination={"any": [{"text_mention": "DONE"}, {"max_messages": 3}]})
    log, _ = await run_through(team, ["b1", "r1 DONE"], People())
    state = RunState.fold(team, [from_json(to_json(e)) for e in log])
    assert isinstance(decide(state), Idle) and state.finished == "bear said 'DONE'"
    state.apply(RunContinued(by="U1", instructions="Again, shorter."))
    model = ScriptedModel(["b2", "r2", "b3"])
    env = env_for(model)
    while not (action := decide(state)).waits:
        for e in await perform(state, action, env):
            state.apply(e)
    assert state.finished == "3 messages reached", "the conditions started again from zero"
    assert [m.content for m in model.requests[0].messages] == [
        "Go.", "b1", "r1 DONE", "Again, shorter."]


def ledger(next_speaker: str = "", ask: str = "Go on.", *, done: bool = False,
           progress: bool = True) -> str:
    return json.dumps({k: {"reason": "because", "answer": v} for k, v in (
        ("is_request_satisfied", done), ("is_in_loop", False),
        ("is_progress_being_made", progress), ("next_speaker", next_speaker),
        ("instruction_or_question", ask))})


def review(approved: bool, changes: str = "") -> Callable[[RunState], Event]:
    def reviewed(state: RunState) -> Event:
        assert state.magentic is not None
        return PlanReviewed(revision=state.magentic.revision, by="U1", approved=approved,
                            changes=changes)
    return reviewed


MAGENTIC = make_team(
    agent("researcher", tools=[TICKET]), agent("writer"), agent("you", human=True),
    strategy="magentic", orchestrator={"max_stalls": 1, "max_resets": 1, "plan_review": True},
    termination={"any": [{"max_messages": 30}, {"stop": True}]})


async def test_magentic_with_a_plan_review_a_replan_and_the_person_as_speaker():
    answers = [
        "FACTS:\n- given\nPLAN:\n- researcher: look",             # plan 1: changes asked
        "FACTS:\n- given\nPLAN:\n- researcher: look harder",      # plan 2 (review): approved
        ledger("researcher", "Open a ticket."),
        says("Opening.", ToolCall("r1", "create_ticket", '{"title": "Tides"}')),
        "Ticket open.",
        ledger("writer", "Write.", progress=False),                 # stall 1: replan
        "FACTS:\n- a ticket exists\nPLAN:\n- you: say which harbour",  # plan 3: approved
        "not json at all",                                         # retried once
        ledger("you", "Which harbour?"),
        ledger("writer", "Write it up."),
        "Dover tides: 06:12.",
        ledger(done=True),
        "High tide at Dover is 06:12.",
    ]
    people = People(replies=[review(False, "Look harder."), review(True), review(True),
                             HumanMessage(user="U1", text="Dover.")],
                    interjections={5: HumanMessage(user="U2", text="Mind the time zone.")})
    log = await assert_resumable_everywhere(MAGENTIC, answers, people)
    assert [(e.revision, e.cause) for e in log if isinstance(e, PlanWritten)] == [
        (1, "start"), (2, "review"), (3, "replan")]
    assert [e.instruction[0] for e in log if isinstance(e, ProgressAssessed) and e.hands_on] \
        == ["researcher", "you", "writer"]
    assert log[-1].kind == "run_finished" and log[-1].reason == "the orchestrator gave the final answer"


# -- the property, over generated runs -----------------------------------------------------------
TEAMS = {
    "round_robin": make_team(
        agent("writer", tools=["calculate", "post_message"]), agent("you", human=True),
        agent("editor", tools=[TICKET, EXPLODE]),
        termination={"any": [{"text_mention": "DONE"}, {"max_messages": 10}, {"stop": True}]}),
    "selector": make_team(
        agent("dispatcher", description="Classifies."),
        agent("billing", tools=["calculate", {"use": "post_message"}], description="Money."),
        agent("engineer", tools=[EXPLODE], description="Bugs."),
        agent("customer", human=True, description="The reporter."),
        strategy="selector",
        termination={"any": [{"text_mention": {"text": "DONE", "sources": ["dispatcher"]}},
                             {"max_messages": 10}]}),
    "swarm": make_team(
        agent("planner", handoffs=["coder", "you"], tools=["post_message"]),
        agent("coder", handoffs=["planner"], tools=["calculate", EXPLODE]),
        agent("you", human=True),
        strategy="swarm", termination={"any": [{"max_messages": 10}, {"tool_call": "calculate"},
                                               {"text_mention": "DONE"}]}, max_tool_rounds=2),
    "magentic": make_team(
        agent("researcher", tools=["calculate", EXPLODE]), agent("writer", tools=["post_message"]),
        agent("you", human=True), strategy="magentic",
        orchestrator={"max_stalls": 2, "max_resets": 1, "plan_review": True},
        termination={"any": [{"max_messages": 10}, {"text_mention": "DONE"}]}),
}
GOOD_ARGS = {"calculate": {"expression": "6*7"}, "post_message": {"channel": "#c", "text": "t"},
             "create_ticket": {"title": "T"}, "explode": {"reason": "r"}}


def scripted_answer(index: int, choice: int) -> Callable[[ModelRequest], ModelResponse]:
    """Answer number `index`: what it says depends only on `choice` and the request."""
    def answer(request: ModelRequest) -> ModelResponse:
        if request.purpose == "select":
            options = [c.name for c in request.candidates] + ["no one"]
            return says(f"I pick {options[choice % len(options)]}")
        if request.purpose == "progress":  # done, a stall, an unusable answer, or someone
            names = [c.name for c in request.candidates]
            if choice % 7 == 0:
                return says(ledger(done=True))
            if choice % 7 == 1:
                return says(ledger(names[0], progress=False))
            if choice % 7 == 2:
                return says(ledger("no_one"))
            return says(ledger(names[choice % len(names)], f"Step {index}."))
        if request.purpose == "plan":
            return says(f"FACTS:\n- fact {index}\nPLAN:\n- step {choice}")
        tools = [t.name for t in request.tools if not t.name.startswith("transfer_to_")]
        handoffs = [t.name for t in request.tools if t.name.startswith("transfer_to_")]
        kind, pick = choice % 10, choice // 10

        def call(j: int, name: str, args: object) -> ToolCall:
            call_id = ["", "same"][pick % 2] if pick % 5 == 0 else f"c{index}_{j}"  # sloppy servers
            return ToolCall(call_id, name, json.dumps(args))

        if kind == 3:
            return says(f"{request.agent}: DONE")
        if kind == 4 and tools:
            name = tools[pick % len(tools)]
            return says("Calling.", call(0, name, GOOD_ARGS[name]))
        if kind == 5 and tools:
            return says("", call(0, tools[pick % len(tools)], {"bogus": 1}))
        if kind == 6:
            return says("", call(0, "no_such_tool", {}))
        if kind == 7 and handoffs:
            return says("Over to you.", call(0, handoffs[pick % len(handoffs)], {}))
        if kind == 8 and (tools or handoffs):
            names = (tools + handoffs)
            return says("Two at once.", call(0, names[pick % len(names)], GOOD_ARGS.get(
                names[pick % len(names)], {})), *[call(1, h, {}) for h in handoffs[:1]])
        if kind == 9 and pick % 3 == 0:
            raise ModelError("rate limited")
        return ModelResponse(text=f"{request.agent} turn {index}", usage=Usage(choice % 50, 7))
    return answer


class GeneratedPeople(People):
    """People whose answers come from drawn choices."""

    def __init__(self, choices: list[int], interject_at: set[int], continues: int) -> None:
        super().__init__()
        self.choices, self.n, self.continues = choices, 0, continues
        self.interjections = {k: StopRequested(by="U2") if k % 4 == 3 else
                              HumanMessage(user="U2", text=f"note {k} @editor @coder")
                              for k in interject_at}

    def pick(self) -> int:
        self.n += 1
        return self.choices[self.n % len(self.choices)]

    def reply(self, state: RunState, action: object) -> Event | None:
        c = self.pick()
        if isinstance(action, AwaitHuman):
            return HumanMessage(user="U1", text=["ok", "@writer again", "stop it", "DONE"][c % 4])
        if isinstance(action, AwaitApproval):
            return approve(c % 2 == 0, "" if c % 3 else "not now")(state)
        if action == Idle("paused"):
            return RunResumed(by="U1")
        if isinstance(action, AwaitPlanReview):
            changes = c % 3 == 0 and state.magentic is not None and state.magentic.revision < 3
            return review(not changes, f"change {c}" if changes else "")(state)
        if action == Idle("finished") and self.continues:
            self.continues -= 1
            return RunContinued(by="U1", instructions=["", "go on"][c % 2])
        return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(team=st.sampled_from(sorted(TEAMS)),
       choices=st.lists(st.integers(0, 999), min_size=1, max_size=40),
       people=st.lists(st.integers(0, 999), min_size=1, max_size=10),
       interject_at=st.sets(st.integers(0, 12), max_size=3),
       continues=st.integers(0, 2))
def test_any_generated_run_resumes_identically_from_any_event(team, choices, people, interject_at,
                                                               continues):
    answers = [scripted_answer(i, c) for i, c in enumerate(choices)]
    answers += [scripted_answer(len(answers) + i, 0) for i in range(60)]  # plain words after

    async def check() -> None:
        log, placed = await run_through(TEAMS[team], answers, GeneratedPeople(
            people, interject_at, continues), task="Plan the launch.", all_used=False)
        whole = [to_json(e) for e in log]
        for cut in range(1, len(log) + 1):
            rest = await resume(TEAMS[team], answers, log, placed, cut, leftovers_ok=True)
            assert [to_json(e) for e in rest] == whole[cut:], f"diverged after event {cut - 1}"

    asyncio.run(check())
