"""Magentic orchestration, path by path, with scripted models: plan, delegate, retry an unusable
ledger, count stalls, replan, give up, review a plan, hear a person, hand a person the turn."""

from __future__ import annotations

import json

import pytest

from threadteam.teams.engine import (
    AssessProgress,
    AwaitHuman,
    AwaitPlanReview,
    Idle,
    decide,
)
from threadteam.teams.errors import ModelError, TeamFileError
from threadteam.teams.events import (
    AgentMessage,
    HumanMessage,
    PlanReviewed,
    PlanWritten,
    ProgressAssessed,
    RunContinued,
    RunFinished,
    RunPaused,
    RunResumed,
)
from threadteam.teams.ledger import parse_plan, parse_progress
from threadteam.teams.magentic import ANSWERED

from .helpers import Run, agent, make_team, says


def research(**orchestrator):
    return make_team(agent("researcher", description="Finds facts."),
                     agent("writer", description="Writes the text."),
                     agent("you", human=True, description="The person who asked."),
                     strategy="magentic", orchestrator=orchestrator or None,
                     termination={"max_messages": 40})


def ledger(next_speaker: str = "researcher", ask: str = "Find the tide tables.", *,
           done: bool = False, progress: bool = True, loop: bool = False,
           why: str = "just starting") -> str:
    return json.dumps({
        "is_request_satisfied": {"reason": why, "answer": done},
        "is_in_loop": {"reason": why, "answer": loop},
        "is_progress_being_made": {"reason": why, "answer": progress},
        "next_speaker": {"reason": why, "answer": next_speaker},
        "instruction_or_question": {"reason": why, "answer": ask},
    })


PLAN = "FACTS:\n- tides follow the moon\n\nPLAN:\n1. researcher: tide tables\n2. writer: the note"
STUCK = ledger("researcher", "Try again.", progress=False, why="the tables are not found")


async def asked(run: Run, n: int) -> None:
    """Step the run until its model has been asked `n` times."""
    while len(run.model.requests) < n:
        assert await run.step(), "the run waits"


def instructions(run: Run) -> list[tuple[str, str]]:
    """Who the orchestrator handed the turn to, and what it told them, in order."""
    return [e.instruction for e in run.of(ProgressAssessed) if e.instruction is not None]


def purposes(run: Run) -> list[str]:
    return [r.purpose for r in run.model.requests]


async def test_plan_delegate_and_finish_with_the_orchestrators_answer():
    run = Run(research(), [
        PLAN, ledger(), "High tide is at 06:12.",
        ledger("writer", "Write two lines for the harbour board."), "Tides today: 06:12.",
        ledger(done=True, why="the note is written"), "High tide is at 06:12 today.",
    ], task="A note on today's tides.")
    assert await run.go() == Idle("finished")
    [plan] = run.of(PlanWritten)
    assert (plan.revision, plan.facts, plan.plan) == (
        1, "- tides follow the moon", "1. researcher: tide tables\n2. writer: the note")
    assert instructions(run) == [
        ("researcher", "Find the tide tables."), ("writer", "Write two lines for the harbour board.")]
    assert [(e.agent, e.text) for e in run.of(AgentMessage)] == [
        ("researcher", "High tide is at 06:12."), ("writer", "Tides today: 06:12."),
        ("orchestrator", "High tide is at 06:12 today.")]
    assert run.of(RunFinished)[-1].reason == ANSWERED
    assert purposes(run) == ["plan", "progress", "reply", "progress", "reply", "progress", "answer"]
    # The specialist reads the task, the plan and its instruction, from the orchestrator.
    seen = run.model.requests[2].messages
    assert [m.name for m in seen] == ["task", "orchestrator", "orchestrator"]
    assert "1. researcher: tide tables" in seen[1].content and seen[2].content == \
        "Find the tide tables."
    assert len(run.of(ProgressAssessed)) == 3 and run.state.magentic.stalls == 0
    # The orchestrator's requests share one prompt-cache key, its own (not a specialist's).
    keys = {r.cache_key for r in run.model.requests if r.agent == "orchestrator"}
    assert len(keys) == 1 and keys.pop().endswith("-orchestrator")


def test_a_log_written_with_separate_instructions_folds_as_one_written_with_hands_on():
    from threadteam.teams.events import Instructed, TaskStarted
    from threadteam.teams.state import RunState

    start = [TaskStarted(team="research", task="Tides.", by="U1"),
             PlanWritten(revision=1, facts="", plan="1. researcher: tables")]
    checked = json.loads(ledger("researcher", "Find the tide tables."))
    old = RunState.fold(research(), [*start, ProgressAssessed(ledger=checked),
                                     Instructed(agent="researcher", text="Find the tide tables.")])
    new = RunState.fold(research(), [*start, ProgressAssessed(ledger=checked, hands_on=True)])
    for state in (old, new):
        assert state.current == "researcher" and decide(state) != AssessProgress()
        assert state.magentic.ledger is None and state.magentic.stalls == 0
        assert [(m.name, m.content) for m in state.views["writer"].messages][-1] == \
            ("orchestrator", "Find the tide tables.")


async def test_an_unusable_ledger_is_asked_again_once_with_what_was_wrong():
    run = Run(research(), [PLAN, "Sure! The researcher should go next.", ledger(), "Found."],
              task="Tides.")
    await asked(run, 3)
    first, second = run.of(ProgressAssessed)
    assert first.problem == "it is not a JSON object" and first.ledger == {}
    assert first.reply == "Sure! The researcher should go next."
    assert second.problem == "" and run.state.magentic.stalls == 0, "a good retry is no stall"
    retry = run.model.requests[2]
    assert [m.role for m in retry.messages[-3:]] == ["user", "assistant", "user"]
    assert retry.messages[-2].content == "Sure! The researcher should go next."
    assert "could not be used: it is not a JSON object" in retry.messages[-1].content
    await asked(run, 4)
    assert run.of(AgentMessage)[-1].text == "Found."


async def test_an_unusable_ledger_twice_counts_as_a_stall_and_the_next_round_asks_afresh():
    nobody = ledger("the_intern")
    run = Run(research(), [PLAN, nobody, "{not json}", ledger(), "Found."], task="Tides.")
    await asked(run, 5)
    first, second, third = run.of(ProgressAssessed)
    assert '"the_intern"' in first.problem and "researcher, writer, you" in first.problem
    assert second.problem.startswith("it is not valid JSON")
    assert third.problem == ""
    assert "could not be used" not in run.model.requests[3].messages[-1].content, \
        "after the stall the ledger is asked afresh"
    assert run.state.magentic.stalls == 0, "a stall, then progress, counts back down"
    assert run.of(AgentMessage)[-1].text == "Found."


async def test_stalls_count_up_and_down_then_replan_restarts_the_team_from_the_new_plan():
    run = Run(research(max_stalls=2, max_resets=1), [
        PLAN, STUCK, "Nothing yet.",                          # stall 1
        ledger(), "Still looking.",                           # progress: back to 0
        STUCK, "No tables.",                                  # 1
        ledger("researcher", "Again.", loop=True, why="asking the same"),  # 2: replan
        "FACTS:\n- the harbour site has tables\n\nPLAN:\n1. researcher: use the harbour site",
        ledger("researcher", "Use the harbour site."), "06:12, from the harbour site.",
        ledger(done=True), "06:12.",
    ], task="Tides.")
    assert await run.go() == Idle("finished")
    plans = run.of(PlanWritten)
    assert [(p.revision, p.cause) for p in plans] == [(1, "start"), (2, "replan")]
    assert plans[1].reason == "going in circles: asking the same"
    replan = run.model.requests[8]
    assert replan.purpose == "plan" and "We are stuck (going in circles: asking the same)" in \
        replan.messages[-1].content and "1. researcher: tide tables" in replan.messages[-1].content
    # After the replan the researcher reads the task, the new plan and its instruction only.
    after = run.model.requests[10].messages
    assert [m.content.splitlines()[0] for m in after] == [
        "Tides.", "FACTS:", "Use the harbour site."]
    assert "use the harbour site" in after[1].content
    assert (run.state.magentic.resets, run.of(RunFinished)[-1].reason) == (1, ANSWERED)


async def test_after_max_resets_the_orchestrator_gives_up_and_says_why():
    run = Run(research(max_stalls=1, max_resets=1), [
        PLAN, STUCK, PLAN.replace("tide tables", "almanac"), STUCK], task="Tides.")
    assert await run.go() == Idle("finished")
    assert [p.cause for p in run.of(PlanWritten)] == ["start", "replan"]
    assert run.of(RunFinished)[-1].reason == (
        "the orchestrator gave up after 1 new plan: no progress: the tables are not found")
    assert not instructions(run), "a stall at max_stalls replans instead of delegating"


async def test_with_no_resets_allowed_the_first_stalls_end_the_run():
    run = Run(research(max_stalls=1, max_resets=0), [PLAN, STUCK], task="Tides.")
    await run.go()
    assert run.of(RunFinished)[-1].reason.startswith(
        "the orchestrator gave up without replanning (max_resets is 0)")


async def test_plan_review_waits_folds_changes_into_a_new_plan_then_starts_on_approve():
    run = Run(research(plan_review=True), [
        PLAN, "FACTS:\n- tides\n\nPLAN:\n1. researcher: use the almanac", ledger(), "Found."],
        task="Tides.")
    assert await run.go() == AwaitPlanReview(1)
    assert run.state.status == "awaiting_human"
    run.add(HumanMessage(user="U7", text="Looks odd to me."))  # a bystander: no review
    assert await run.go() == AwaitPlanReview(1)
    run.add(PlanReviewed(revision=1, by="U1", approved=False, changes="Use the almanac, not tables.",
                         display_name="Ana"))
    assert await run.go() == AwaitPlanReview(2), "the new plan waits for review too"
    review = run.model.requests[1].messages[-1].content
    assert "Use the almanac, not tables." in review and "1. researcher: tide tables" in review
    run.add(PlanReviewed(revision=1, by="U1", approved=True))  # too late: plan 1 is gone
    assert decide(run.state) == AwaitPlanReview(2)
    run.add(PlanReviewed(revision=2, by="U1", approved=True))
    await asked(run, 4)
    assert [e.cause for e in run.of(PlanWritten)] == ["start", "review"]
    assert run.of(AgentMessage)[-1].text == "Found."
    assert "Looks odd to me." in [m.content for m in run.model.requests[2].messages]


# Naming the person, or nobody on the team, is a remark like any other.
@pytest.mark.parametrize("said", ["Use local time, please.", "@you and @nobody: thoughts?"])
async def test_a_persons_interjection_reaches_the_next_progress_ledger(said):
    run = Run(research(), [PLAN, ledger(), "Found 06:12.", ledger("writer", "Write it.")],
              task="Tides.")
    await asked(run, 3)
    run.add(HumanMessage(user="U2", text=said, display_name="Bo"))
    await asked(run, 4)
    seen = run.model.requests[3]
    assert seen.purpose == "progress", "the orchestrator stays in charge"
    assert ("Bo", said) in [(m.name, m.content) for m in seen.messages]
    assert instructions(run)[-1][0] == "writer"


async def test_a_person_who_names_a_member_gets_them_next_then_progress_is_checked_afresh():
    run = Run(research(), [PLAN, ledger(), "Found 06:12.", "Draft: high tide 06:12.",
                           ledger("researcher", "Check the low tide too.")], task="Tides.")
    await asked(run, 3)
    run.add(HumanMessage(user="U2", text="@Writer draft it now, please.", display_name="Bo"))
    await asked(run, 5)
    assert purposes(run) == ["plan", "progress", "reply", "reply", "progress"]
    drafted = run.model.requests[3]
    assert drafted.agent == "writer", "the member the person named speaks next"
    assert ("Bo", "@Writer draft it now, please.") in [(m.name, m.content)
                                                       for m in drafted.messages]
    assert [e.agent for e in run.of(AgentMessage)] == ["researcher", "writer"]
    assert instructions(run)[-1][0] == "researcher", "then the orchestrator leads again"
    assert run.state.mention_next is None


async def test_a_ledger_that_spends_the_budget_instructs_nobody_and_the_run_ends():
    from threadteam.teams.models.base import ModelResponse, Usage
    team = make_team(agent("researcher", description="Finds facts."),
                     agent("writer", description="Writes the text."),
                     strategy="magentic", termination={"max_messages": 40},
                     budget={"tokens": 500})
    costly = ModelResponse(text=ledger(), usage=Usage(420, 50), model="scripted")  # 40 + 470
    run = Run(team, [says(PLAN, tokens=20), costly], task="Tides.")
    assert await run.go() == Idle("finished")
    assert not instructions(run), "no instruction to a member who will never speak"
    assert purposes(run) == ["plan", "progress"]
    assert run.state.finished == "the token budget of 500 is spent (510 tokens used)"


async def test_an_agent_naming_a_member_does_not_take_the_turn_from_the_orchestrator():
    run = Run(research(), [PLAN, ledger(), "@writer, take over from here.",
                           ledger("researcher", "Check the low tide too.")], task="Tides.")
    await asked(run, 4)
    assert purposes(run) == ["plan", "progress", "reply", "progress"], \
        "only a person's mention picks the next speaker"
    assert instructions(run)[-1][0] == "researcher" and run.state.mention_next is None


async def test_the_person_can_be_next_speaker_and_the_run_waits_for_their_answer():
    run = Run(research(), [PLAN, ledger("you", "Which harbour?"),
                           ledger("researcher", "Tides at Dover."), "06:12 at Dover."],
              task="Tides.")
    assert await run.go() == AwaitHuman("you")
    assert instructions(run)[-1] == ("you", "Which harbour?")
    assert run.state.status == "awaiting_human"
    run.add(HumanMessage(user="U1", text="Dover.", display_name="Ana"))
    assert decide(run.state) == AssessProgress()
    await asked(run, 4)
    assert ("Ana", "Dover.") in [(m.name, m.content) for m in run.model.requests[2].messages]
    assert run.of(AgentMessage)[-1].text == "06:12 at Dover."


async def test_a_failed_orchestrator_call_pauses_and_retry_repeats_only_that_call():
    run = Run(research(), [PLAN, ModelError("the provider is overloaded"), ledger(), "Found.",
                           ledger(done=True), "Found it."], task="Tides.")
    assert await run.go() == Idle("paused")
    assert run.of(RunPaused)[-1].agent == "orchestrator"
    run.add(RunResumed(by="U1"))
    await run.go()
    assert purposes(run) == ["plan", "progress", "progress", "reply", "progress", "answer"]


async def test_continue_after_the_answer_asks_the_ledger_again_with_fresh_counts():
    run = Run(research(max_stalls=1, max_resets=0), [PLAN, ledger(done=True), "06:12."],
              task="Tides.")
    await run.go()
    run.add(RunContinued(by="U1", instructions="Add tomorrow's."))
    run.model.add(ledger("researcher", "Tomorrow's too."), "06:58.", ledger(done=True),
                  "06:12 and 06:58.")
    await run.go()
    assert instructions(run)[-1][1] == "Tomorrow's too."
    assert "Add tomorrow's." in [m.content for m in run.model.requests[3].messages]
    assert run.of(RunFinished)[-1].reason == ANSWERED and len(run.of(PlanWritten)) == 1


async def test_ledger_tokens_count_toward_the_runs_usage_and_budget():
    team = make_team(agent("researcher"), strategy="magentic", budget={"tokens": 30},
                     termination={"max_messages": 9})
    run = Run(team, [says(PLAN, tokens=10), says(ledger(), tokens=10)], task="Tides.")
    await run.go()
    assert run.state.tokens_used == 40
    assert "token budget" in run.of(RunFinished)[-1].reason
    assert purposes(run) == ["plan", "progress"], "no model is called past the budget"


# -- reading the orchestrator's answers -----------------------------------------------------------
@pytest.mark.parametrize("text, facts, plan", [
    ("FACTS:\n- a\nPLAN:\n- b", "- a", "- b"),
    ("## Facts\n- a\n\n## Plan\n1. b\n2. c", "- a", "1. b\n2. c"),
    ("**FACTS:** a\n**PLAN:** b", "a", "b"),
    ("Just do b.", "", "Just do b."),
    ("Plan the launch first.\nThen c.", "", "Plan the launch first.\nThen c."),
])
def test_a_plan_is_read_with_or_without_headings(text, facts, plan):
    assert parse_plan(text) == (facts, plan)


def test_a_ledger_in_a_code_fence_with_names_in_any_case_is_read():
    team = research()
    fenced = "```json\n" + ledger("Writer").replace("false", '"false"') + "\n```"
    checked, problem = parse_progress(fenced, team)
    assert problem == ""
    assert checked["next_speaker"]["answer"] == "writer"
    assert checked["is_in_loop"]["answer"] is False


@pytest.mark.parametrize("text, problem", [
    ('{"is_request_satisfied": {"answer": true}}', "'is_in_loop' is missing or has no answer"),
    (ledger().replace("false", '"no"', 1), "'is_request_satisfied' must answer true or false"),
    (ledger().replace('"Find the tide tables."', "3"), "'instruction_or_question' must answer"),
    ("[1, 2]", "it is not a JSON object"),
])
def test_a_ledger_that_cannot_be_used_says_why(text, problem):
    checked, found = parse_progress(text, research())
    assert checked == {} and found.startswith(problem)


def test_a_finished_ledger_may_name_nobody():
    checked, problem = parse_progress(ledger("", done=True), research())
    assert problem == "" and checked["next_speaker"]["answer"] == ""


# -- the team file -------------------------------------------------------------------------------
def test_the_orchestrator_section_is_checked_with_its_line():
    with pytest.raises(TeamFileError) as err:
        make_team("researcher", orchestrator={"max_stalls": 2})
    assert "orchestrator: only applies with strategy: magentic" in str(err.value)
    with pytest.raises(TeamFileError) as err:
        make_team("orchestrator", "writer", strategy="magentic")
    assert "'orchestrator' is the name of a magentic team's orchestrator" in str(err.value)
    with pytest.raises(TeamFileError) as err:
        make_team("writer", strategy="magentic", orchestrator={"max_stalls": 0, "plan_review": "y"})
    assert "orchestrator.max_stalls" in str(err.value) and "orchestrator.plan_review" in str(err.value)


def test_the_orchestrator_has_defaults_and_its_own_persona_and_model():
    team = make_team("writer", strategy="magentic", model="m1",
                     orchestrator={"persona": {"display_name": "Conductor", "avatar": ":tada:"},
                                   "model": "m2"})
    spec = team.orchestrator
    assert (spec.max_stalls, spec.max_resets, spec.plan_review) == (3, 2, False)
    assert (spec.agent.persona.display_name, spec.agent.model) == ("Conductor", "m2")
    assert team.names == ("writer",), "the orchestrator is not a participant"
    assert make_team("writer", strategy="magentic").orchestrator.agent.persona.display_name == \
        "Orchestrator"


# -- rehearsal: every path offline ----------------------------------------------------------------
async def rehearse(task: str, **orchestrator) -> Run:
    from threadteam.teams.models import RehearsalModel
    run = Run(make_team(agent("researcher"), agent("writer"), strategy="magentic",
                        orchestrator=orchestrator or None, termination={"max_messages": 40}),
              RehearsalModel(), task=task)
    await run.go()
    return run


async def test_rehearsal_plans_delegates_to_each_agent_and_answers():
    run = await rehearse("A note on tides.")
    assert [agent for agent, _ in instructions(run)] == ["researcher", "writer"]
    assert all(not e.problem for e in run.of(ProgressAssessed)), "valid JSON every round"
    assert run.of(AgentMessage)[-1].agent == "orchestrator"
    assert run.of(RunFinished)[-1].reason == ANSWERED


async def test_rehearsal_stalls_and_replans_when_asked_and_gives_up_on_stall():
    run = await rehearse("A note on tides; rehearse a replan.", max_stalls=2)
    plans = run.of(PlanWritten)
    assert [p.cause for p in plans] == ["start", "replan"]
    assert "plan revision 2" in plans[1].plan and "the last plan stalled" in plans[1].facts
    assert run.of(RunFinished)[-1].reason == ANSWERED
    run = await rehearse("Please stall.", max_stalls=1, max_resets=1)
    assert run.of(RunFinished)[-1].reason.startswith("the orchestrator gave up after 1 new plan")


async def test_rehearsal_folds_a_persons_changes_into_the_reviewed_plan():
    run = await rehearse("Tides.", plan_review=True)
    assert decide(run.state) == AwaitPlanReview(1)
    run.add(PlanReviewed(revision=1, by="U1", approved=False, changes="Add the moon phase."))
    assert await run.go() == AwaitPlanReview(2)
    assert "asked for: 'Add the moon phase.'" in run.of(PlanWritten)[-1].facts
    run.add(PlanReviewed(revision=2, by="U1", approved=True))
    assert await run.go() == Idle("finished")
