"""Every built-in team, run on the rehearsal model with no key, reaches its end (or its approval)."""

from __future__ import annotations

import pytest

from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.engine import AwaitApproval, AwaitHuman, Env, Idle, drive
from threadteam.teams.events import (
    AgentMessage,
    ApprovalDecided,
    Event,
    HumanMessage,
    TaskStarted,
    ToolCallRequested,
)
from threadteam.teams.magentic import ANSWERED
from threadteam.teams.models import ModelPool
from threadteam.teams.state import RunState
from threadteam.teams.tools import ToolContext

BUILT_IN = TeamCatalog.load().teams
# The condition each team is meant to end on, not its safety net.
ENDS = {"debate": "synthesis said 'FINAL ANSWER'", "triage": "dispatcher said 'RESOLVED'",
        "announce": "announcer said 'DONE'", "research": ANSWERED}


class Thread:
    """A run on the model pool with nothing configured, so every agent rehearses."""

    def __init__(self, team_name: str) -> None:
        self.posts: list[tuple[str, str]] = []
        self.env = Env(models=ModelPool(env={}), tool_context=lambda request: ToolContext(
            agent=request.agent, post_message=self.post))
        self.state = RunState(BUILT_IN[team_name])
        self.log: list[Event] = []
        self.add(TaskStarted(team=team_name, task="Announce the new office hours.", by="U1"))

    async def post(self, channel: str, text: str) -> str:
        self.posts.append((channel, text))
        return "1700000000.000100"

    def add(self, *events: Event) -> None:
        for e in events:
            self.state.apply(e)
            self.log.append(e)

    async def go(self):
        async def append(events: list[Event]) -> None:
            self.log.extend(events)
        return await drive(self.state, self.env, append)


def test_with_no_keys_the_pool_answers_with_the_rehearsal_model():
    assert ModelPool(env={}).resolve_name(None, None) == "rehearsal"


def test_the_built_ins_are_the_ones_these_tests_know():
    assert set(BUILT_IN) >= set(ENDS)


async def rehearse(name: str) -> tuple[Thread, list]:
    """Run a built-in team on rehearsal; a person answers whatever it waits for."""
    thread = Thread(name)
    waits = []
    action = await thread.go()
    for _ in range(10):
        waits.append(action)
        if isinstance(action, AwaitHuman):
            thread.add(HumanMessage(user="U1", text="It started after the update.",
                                    display_name="Ana"))
        elif isinstance(action, AwaitApproval):
            thread.add(ApprovalDecided(call_id=action.calls[0].request.call_id, approved=True,
                                       by="U1"))
        else:
            break
        action = await thread.go()
    return thread, waits


@pytest.mark.parametrize("name", sorted(BUILT_IN))
async def test_each_built_in_team_reaches_its_end_in_rehearsal(name):
    thread, waits = await rehearse(name)
    assert waits[-1] == Idle("finished")
    if name in ENDS:
        assert thread.state.finished == ENDS[name]
    messages = [e for e in thread.log if isinstance(e, AgentMessage)]
    assert messages and all(m.text.startswith("[rehearsal] ") for m in messages), \
        "rehearsal text is visibly labelled"


@pytest.mark.parametrize("name", sorted(BUILT_IN))
async def test_each_built_in_team_exercises_its_whole_wiring_in_rehearsal(name):
    team = BUILT_IN[name]
    thread, waits = await rehearse(name)
    spoke = {e.agent for e in thread.log if isinstance(e, AgentMessage)}
    orchestrator = {team.orchestrator.agent.name} if team.orchestrator else set()
    assert spoke == {a.name for a in team.agents if not a.human} | orchestrator, \
        "every agent has a turn"
    if team.humans:
        assert any(isinstance(w, AwaitHuman) for w in waits), "the person is handed a turn"
    requested = {e.tool: e for e in thread.log if isinstance(e, ToolCallRequested)}
    for agent in team.agents:
        for tool in agent.tools:
            assert tool.name in requested, f"{agent.name} calls {tool.name}"
            assert requested[tool.name].needs_approval == (tool.approval == "always")
            assert not thread.state.calls[requested[tool.name].call_id].result.error, \
                f"the rehearsed {tool.name} call succeeds"
    assert {c.request.tool for w in waits if isinstance(w, AwaitApproval) for c in w.calls} == {
        t.name for a in team.agents for t in a.tools if t.approval == "always"}, \
        "approval is asked for exactly the tools that need it"
    for m in (e for e in thread.log if isinstance(e, AgentMessage)):
        assert m.text.count("[rehearsal]") == 1, f"no rehearsal text quoted in another: {m.text!r}"


async def test_the_rehearsed_triage_hears_the_person_before_it_resolves():
    thread, _ = await rehearse("triage")
    said = [(e.agent, e.text) if isinstance(e, AgentMessage) else ("person", e.text)
            for e in thread.log if isinstance(e, AgentMessage | HumanMessage)]
    assert [who for who, _ in said] == ["dispatcher", "engineer", "billing", "billing", "person",
                                        "dispatcher"]
    assert said[-1][1] == ("[rehearsal] dispatcher on 'It started after the update.'\n\n"
                           "RESOLVED: rehearsal conclusion.")
    assert said[1][1] == "[rehearsal] engineer answers dispatcher on 'Announce the new office hours.'"
    assert said[3][1] == "[rehearsal] billing notes that calculate returned '15'"


async def test_the_rehearsed_debate_reads_as_answers_not_nested_quotes():
    thread, _ = await rehearse("debate")
    assert [e.text for e in thread.log if isinstance(e, AgentMessage)] == [
        "[rehearsal] bull on 'Announce the new office hours.'",
        "[rehearsal] bear answers bull on 'Announce the new office hours.'",
        "[rehearsal] synthesis answers bear on 'Announce the new office hours.'\n\n"
        "FINAL ANSWER: rehearsal conclusion."]


async def test_the_announce_team_stops_at_its_approval_in_rehearsal():
    thread = Thread("announce")
    action = await thread.go()
    assert isinstance(action, AwaitApproval)
    (call,) = action.calls
    assert (call.request.agent, call.request.tool) == ("announcer", "post_message")
    assert thread.state.status == "awaiting_approval"
    assert thread.posts == [], "nothing is posted before a person approves"
    thread.add(ApprovalDecided(call_id=call.request.call_id, approved=True, by="U1"))
    assert await thread.go() == Idle("finished")
    assert len(thread.posts) == 1
