"""Every built-in team, run on the rehearsal model with no key, reaches its end (or its approval)."""

from __future__ import annotations

import pytest

from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.engine import AwaitApproval, AwaitHuman, Env, Idle, drive
from threadteam.teams.events import AgentMessage, ApprovalDecided, Event, HumanMessage, TaskStarted
from threadteam.teams.models import ModelPool
from threadteam.teams.state import RunState
from threadteam.teams.tools import ToolContext

BUILT_IN = TeamCatalog.load().teams
# The condition each team is meant to end on, not its safety net.
ENDS = {"debate": "synthesis said 'FINAL ANSWER'", "triage": "dispatcher said 'RESOLVED'",
        "announce": "announcer said 'DONE'"}


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


@pytest.mark.parametrize("name", sorted(BUILT_IN))
async def test_each_built_in_team_reaches_its_end_in_rehearsal(name):
    thread = Thread(name)
    action = await thread.go()
    for _ in range(10):  # people answer whatever the team waits for
        if isinstance(action, AwaitHuman):
            thread.add(HumanMessage(user="U1", text="It started after the update."))
        elif isinstance(action, AwaitApproval):
            thread.add(ApprovalDecided(call_id=action.calls[0].request.call_id, approved=True, by="U1"))
        else:
            break
        action = await thread.go()
    assert action == Idle("finished")
    if name in ENDS:
        assert thread.state.finished == ENDS[name]
    messages = [e for e in thread.log if isinstance(e, AgentMessage)]
    assert messages and all(m.text.startswith("[rehearsal] ") for m in messages), \
        "rehearsal text is visibly labelled"


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
