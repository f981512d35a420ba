"""A magentic run as people in the thread see it: the plan as one post under the orchestrator's
persona, edited when it is replaced or approved; who may approve a plan; `status`; the
orchestrator's instructions; and a whole run through the real `openai` client."""

from __future__ import annotations

import json

import pytest

from tests.bot.helpers import make_host, say, summon, thread, write_teams
from tests.fakes.poster import RecordingPoster
from threadteam.teams.engine import Env, Idle, drive
from threadteam.teams.events import PlanReviewed, PlanWritten, TaskStarted
from threadteam.teams.magentic import ANSWERED
from threadteam.teams.models import ModelPool
from threadteam.teams.models.scripted import ScriptedModel
from threadteam.teams.spec import parse_team
from threadteam.teams.state import RunState

RESEARCH = """
name: research
description: Plans, researches, writes.
model: scripted
strategy: magentic
orchestrator:
  persona: {{display_name: Conductor, avatar: ":compass:"}}
  max_stalls: 1
  max_resets: 1
  plan_review: {review}
agents:
  - {{name: researcher, persona: {{display_name: Researcher}}, system_message: Find facts.}}
  - {{name: writer, persona: {{display_name: Writer}}, system_message: Write.}}
termination: {{max_messages: 20}}
"""


def ledger(next_speaker: str = "researcher", ask: str = "Find the tide tables.", *,
           done: bool = False, progress: bool = True) -> str:
    why = "the tables are not found" if not progress else "on track"
    return json.dumps({k: {"reason": why, "answer": v} for k, v in (
        ("is_request_satisfied", done), ("is_in_loop", False),
        ("is_progress_being_made", progress), ("next_speaker", next_speaker),
        ("instruction_or_question", ask))})


PLAN = "FACTS:\n- tides follow the moon\nPLAN:\n- researcher: tide tables\n- writer: the note"
PLAN_2 = "FACTS:\n- tides\nPLAN:\n- researcher: the almanac\n- writer: the note"


@pytest.fixture
def poster() -> RecordingPoster:
    return RecordingPoster()


@pytest.fixture
async def host_of(store, poster, tmp_path):
    hosts = []

    async def start(model: ScriptedModel, review: bool):
        host = make_host(store, poster, model,
                         write_teams(tmp_path / "teams", RESEARCH.format(review=str(review).lower())))
        await host.start()
        hosts.append(host)
        return host

    yield start
    for h in hosts:
        await h.aclose()


def conductor(poster: RecordingPoster, key) -> list[str]:
    return [text for name, text in poster.in_thread(key) if name == "Conductor"]


async def test_a_plan_waits_for_the_summoner_and_a_bystanders_approve_changes_nothing(
        host_of, poster):
    model = ScriptedModel([PLAN, PLAN_2, ledger(), "06:12.", ledger(done=True), "High tide 06:12."])
    host = await host_of(model, review=True)
    key = thread()
    await host.handle(summon(key, "research A note on today's tides."))
    await host.idle()
    [plan] = conductor(poster, key)
    assert plan.startswith("**Plan 1**") and "- researcher: tide tables" in plan
    assert "reply `approve` to start, or write what to change" in plan
    assert await host.thread_status(key) == "awaiting_human"

    refused = await host.handle(say(key, "approve", user="bob"))
    assert refused.private == "Sorry, only <@alice> can `approve` this run; nothing was changed."
    await host.handle(say(key, "Tables are better.", user="bob"))  # only words in the thread
    await host.idle()
    assert len(model.requests) == 1 and conductor(poster, key) == [plan]

    status = (await host.handle(say(key, "status"))).private or poster.notices(key)[-1]
    assert "Waiting for: <@alice> (or an approver) to reply `approve` to plan 1" in status
    assert "Plan 1:\n```\n- researcher: tide tables" in status and "Stalls: 0 of 1" in status

    await host.handle(say(key, "Use the almanac instead."))
    await host.idle()
    assert "Use the almanac instead." in model.requests[1].messages[-1].content
    old, new = conductor(poster, key)
    assert old.startswith("~~Plan 1~~ superseded by plan 2 below: rewritten with the changes")
    assert "- ~~researcher: tide tables~~" in old
    assert new.startswith("**Plan 2**, rewritten with the changes asked for")

    await host.handle(say(key, "approve"))
    await host.idle()
    assert [t.splitlines()[0] for t in conductor(poster, key)] == [
        "~~Plan 1~~ superseded by plan 2 below: rewritten with the changes asked for",
        "✅ Plan 2, approved by alice",
        "→ **Researcher**: Find the tide tables.",
        "High tide 06:12."]
    assert ("Researcher", "06:12.") in poster.in_thread(key)
    assert f"Finished: {ANSWERED}." in poster.notices(key)[-1]
    loaded = await host.runner.load(await host.store.run_for_thread(str(key)))
    assert [e.by for e in loaded.events if isinstance(e, PlanReviewed)] == ["alice", "alice"]


async def test_a_replan_says_why_and_strikes_the_old_plan_through(host_of, poster):
    model = ScriptedModel([PLAN, ledger(progress=False), PLAN_2, ledger(progress=False)])
    host = await host_of(model, review=False)
    key = thread(2)
    await host.handle(summon(key, "research Tides."))
    await host.idle()
    old, new = conductor(poster, key)
    assert old == ("~~Plan 1~~ superseded by plan 2 below: the team stalled (no progress: the "
                   "tables are not found)\n\n- ~~researcher: tide tables~~\n- ~~writer: the note~~")
    assert new.startswith("**Plan 2**, new plan 1 of 1 because the team stalled: no progress: "
                          "the tables are not found")
    assert poster.notices(key)[-1].startswith(
        "Finished: the orchestrator gave up after 1 new plan: no progress")
    status = (await host.handle(say(key, "status"))).private or poster.notices(key)[-1]
    assert "Stalls: 1 of 1 · new plans: 1 of 1" in status and "- researcher: the almanac" in status


async def test_a_whole_run_through_the_real_openai_client(fake_openai):
    team = parse_team(RESEARCH.format(review="false").replace("model: scripted",
                                                               "model: openai:gpt-4o-mini"))
    for text in (PLAN, ledger(), "06:12 at Dover.", ledger(done=True), "High tide: 06:12."):
        fake_openai.queue_text(text)
    pool = ModelPool(env={"OPENAI_BASE_URL": fake_openai.url, "OPENAI_API_KEY": "test"})
    state = RunState(team)
    state.apply(TaskStarted(team=team.name, task="Tides at Dover.", by="U1"))
    try:
        assert await drive(state, Env(models=pool)) == Idle("finished")
    finally:
        await pool.aclose()
    assert state.finished == ANSWERED
    bodies = fake_openai.bodies()
    assert len(bodies) == 5 and {b["model"] for b in bodies} == {"gpt-4o-mini"}
    progress = bodies[1]["messages"]
    assert progress[0]["role"] == "system" and "orchestrator" in progress[0]["content"]
    assert "Answer with only a JSON object" in progress[-1]["content"]
    assert state.magentic.plans[1].plan == "- researcher: tide tables\n- writer: the note"
    assert isinstance(state.history[1], PlanWritten)
    assert state.history[-1].text == "High tide: 06:12."


class DiesOnPlan2(RecordingPoster):
    """A platform that drops the connection the first time plan 2 is posted, as if the
    process died right after the new plan was written to the log."""

    async def post(self, out):
        if out.idempotency_key.endswith(":plan:2") and not getattr(self, "died", False):
            self.died = True
            raise ConnectionError("the process died here")
        return await super().post(out)


async def test_a_crash_after_a_new_plan_resumes_without_asking_for_it_again(store, tmp_path):
    poster = DiesOnPlan2()
    teams = write_teams(tmp_path / "teams", RESEARCH.format(review="false"))
    first = ScriptedModel([PLAN, ledger(progress=False), PLAN_2])
    host = make_host(store, poster, first, teams)
    await host.start()
    key = thread(3)
    await host.handle(summon(key, "research Tides."))
    await host.idle()
    await host.aclose()
    assert len(conductor(poster, key)) == 1, "plan 2 never reached the thread"

    second = ScriptedModel([ledger(), "06:12.", ledger(done=True), "High tide 06:12."])
    host = make_host(store, poster, second, teams)
    await host.start()  # picks the run up from its log
    await host.idle()
    await host.aclose()
    assert [r.purpose for r in second.requests] == ["progress", "reply", "progress", "answer"], \
        "the recorded plan is not asked for again"
    assert [t.splitlines()[0] for t in conductor(poster, key)] == [
        "~~Plan 1~~ superseded by plan 2 below: the team stalled (no progress: the tables are "
        "not found)",
        "**Plan 2**, new plan 1 of 1 because the team stalled: no progress: the tables are not "
        "found",
        "→ **Researcher**: Find the tide tables.",
        "High tide 06:12."]
    assert [p.unsure for p in poster.posts if p.name == "Conductor"] == [False, True, False, False]


def test_the_orchestrators_question_to_the_person_says_it_is_their_turn():
    from threadteam.bot.render import is_postable, render
    from threadteam.teams.events import Instructed, PlanWritten, ProgressAssessed

    team = parse_team(RESEARCH.format(review="false").replace(
        "termination:", "  - {name: you, human: true, persona: {display_name: You}}\ntermination:"))
    state = RunState(team)
    state.apply(TaskStarted(team=team.name, task="Tides.", by="U1"))
    state.apply(PlanWritten(revision=1, facts="", plan="1. you: say which harbour"))
    asked = ProgressAssessed(ledger=json.loads(ledger("you", "Which harbour?")), hands_on=True)
    state.apply(asked)
    assert is_postable(asked)
    out = render(state, asked, 2, thread(), "run1", lambda user: f"<@{user}>")
    assert (out.persona.display_name, out.meta) == ("Conductor", {"agent": "orchestrator"})
    assert out.text == ("→ **You**: Which harbour?\n\n"
                        "_Your turn: the team waits for your reply in this thread._")
    assert state.status == "awaiting_human"
    # A check that hands nothing on is not shown; an instruction from a log of old still is.
    quiet = ProgressAssessed(ledger=json.loads(ledger("writer", "Write it.")))
    assert not is_postable(quiet) and render(state, quiet, 3, thread(), "run1", str) is None
    told = Instructed(agent="writer", text="Write it.")
    assert render(state, told, 3, thread(), "run1", str).text == "→ **Writer**: Write it."


async def test_an_approver_by_role_reviews_the_plan_and_someone_without_it_cannot(
        store, poster, tmp_path):
    text = RESEARCH.format(review="true").replace("strategy: magentic",
                                                  'strategy: magentic\napprovers: ["role:S0PS"]')
    model = ScriptedModel([PLAN, PLAN_2, ledger(done=True), "Done."])
    host = make_host(store, poster, model, write_teams(tmp_path / "teams", text))
    await host.start()
    key = thread(4)
    try:
        await host.handle(summon(key, "research Tides."))
        await host.idle()
        refused = await host.handle(say(key, "approve", user="bob", roles=("S0THER",)))
        assert refused.private.startswith("Sorry, only <@alice> or members of S0PS can `approve`")
        await host.handle(say(key, "Use the almanac.", user="carol", roles=("S0PS",)))
        await host.idle()
        assert "Use the almanac." in model.requests[1].messages[-1].content
        await host.handle(say(key, "approve", user="carol", roles=("S0PS",)))
        await host.idle()
    finally:
        await host.aclose()
    assert conductor(poster, key)[1].startswith("✅ Plan 2, approved by carol")
    assert f"Finished: {ANSWERED}." in poster.notices(key)[-1]
