"""Who may approve, stop and spend: a team file's `approval:`, `stoppers:`, `budget:`,
`channels:` and `role:` advice, as the engine holds them.

Each test drives a real team file through the engine the way the host does
(people's events appended, the run driven until it waits) and checks what the
people in the thread would notice: what ran, what waited, what the agent was told.
"""

from __future__ import annotations

import textwrap

import pytest

from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.engine import (
    AwaitApproval,
    Idle,
    deadline,
    time_passed,
)
from threadteam.teams.errors import TeamFileError
from threadteam.teams.events import (
    ApprovalExpired,
    RunContinued,
    RunFinished,
    ToolAlwaysApproved,
    ToolResult,
)
from threadteam.teams.models.base import ModelResponse, ToolCall, Usage
from threadteam.teams.spec import parse_team
from threadteam.teams.state import EXPIRED
from threadteam.teams.tools import ToolContext

from .helpers import Run, agent, make_team, says

POST = "post_message"


def post(channel: str = "#announcements", call_id: str = "c1") -> ToolCall:
    return ToolCall(call_id, POST, f'{{"channel": "{channel}", "text": "We launch Monday."}}')


class Poster:
    """A ToolContext.post_message that records where it posted."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str]] = []

    async def __call__(self, channel: str, text: str) -> str:
        self.posts.append((channel, text))
        return f"m{len(self.posts)}"


def announcer(tools=None, messages: int = 2, **top) -> object:
    return make_team(agent("announcer", tools=tools or [POST]), termination={"max_messages": messages},
                     **top)


def spent(tokens: int) -> ModelResponse:
    return ModelResponse(text=f"used {tokens}", usage=Usage(tokens, 0), model="scripted")


# -- budget: {tokens: N} -------------------------------------------------------------------
async def test_the_budget_stops_the_run_before_the_next_model_call():
    run = Run(make_team("a", "b", termination={"max_messages": 10}, budget={"tokens": 250}),
              [spent(100), spent(100), spent(100)])
    assert await run.go() == Idle("finished")
    assert len(run.model.requests) == 3, "no model is called once the budget is used"
    assert run.state.budget_spent and run.state.budget_left() == 0
    assert run.state.finished == "the token budget of 250 is spent (300 tokens used)"


async def test_continue_does_not_give_the_budget_back():
    run = Run(make_team("a", termination={"max_messages": 3}, budget={"tokens": 500}),
              [spent(100), spent(100), spent(100)])
    await run.go()
    assert run.state.finished == "3 messages reached"
    assert (run.state.tokens_used, run.state.budget_left()) == (300, 200)
    run.model.add(spent(150), spent(100))
    run.add(RunContinued(by="U1"))
    await run.go()
    assert run.state.finished == "the token budget of 500 is spent (550 tokens used)"
    run.add(RunContinued(by="U1"))  # the host refuses this; if it were logged anyway:
    assert await run.go() == Idle("finished")
    assert len(run.model.requests) == 5, "a continue after the budget calls no model"
    assert run.of(RunFinished)[-1].reason == "the token budget of 500 is spent (550 tokens used)"


async def test_a_selector_models_tokens_count_against_the_budget():
    team = make_team("a", "b", strategy="selector", termination={"max_messages": 10},
                     budget={"tokens": 130})
    choice = ModelResponse(text="a", usage=Usage(120, 5), model="scripted")
    run = Run(team, [choice, spent(10)])
    await run.go()
    assert run.state.tokens_used == 135, "the selector's 125 tokens and the agent's 10"
    assert run.state.finished == "the token budget of 130 is spent (135 tokens used)"


def test_no_budget_means_no_limit():
    state = Run(make_team("a")).state
    assert state.budget_left() is None and not state.budget_spent


# -- stoppers ----------------------------------------------------------------------------------
def test_stop_is_for_the_summoner_the_approvers_and_the_listed_stoppers():
    team = make_team("a", approvers=["U2"], stoppers=["U5", "role:123456789012345678"])
    state = Run(team, by="U1", approvers=("U2",)).state
    assert state.may_stop("U1") and state.may_stop("U2") and state.may_stop("U5")
    assert state.may_stop("U9", roles=("123456789012345678",))
    assert not state.may_stop("U9")
    assert state.may_steer("U1") and state.may_steer("U2")
    assert not state.may_steer("U5"), "a stopper may stop, not continue or retry"


def test_by_default_nobody_else_may_stop():
    state = Run(make_team("a"), by="U1").state
    assert state.may_stop("U1") and not state.may_stop("U2")


# -- approval: {quorum, summoner_may_approve, expires_after} ---------------------------------------
async def test_a_quorum_needs_that_many_different_people():
    poster = Poster()
    team = announcer(approvers=["U2", "U3", "U4"], approval={"quorum": 2})
    run = Run(team, [says("Posting.", post()), "Posted."], context=ToolContext(post_message=poster))
    await run.go()
    assert isinstance(await run.decide_call(True, by="U2"), AwaitApproval)
    call = run.state.calls["c1"]
    assert call.status == "awaiting_approval" and call.approved_by == ["U2"]
    assert isinstance(await run.decide_call(True, by="U2", call_id="c1"), AwaitApproval), \
        "the same person approving twice counts once"
    assert poster.posts == []
    await run.decide_call(True, by="U3", call_id="c1")
    assert poster.posts == [("#announcements", "We launch Monday.")]
    assert run.state.calls["c1"].approved_by == ["U2", "U3"]


async def test_under_a_quorum_one_denial_denies():
    poster = Poster()
    team = announcer(approvers=["U2", "U3"], approval={"quorum": 2})
    run = Run(team, [says("Posting.", post()), "Understood."],
              context=ToolContext(post_message=poster))
    await run.go()
    await run.decide_call(True, by="U2")
    await run.decide_call(False, by="U3", reason="not yet", call_id="c1")
    assert poster.posts == [] and run.state.calls["c1"].status == "denied"
    assert "not yet" in run.result_of("c1").output


def test_four_eyes_the_summoner_may_not_approve():
    team = announcer(approvers=["U1", "U2"], approval={"summoner_may_approve": False})
    state = Run(team, by="U1", approvers=("U1", "U2")).state
    assert not state.may_approve("U1"), "not even when listed as an approver"
    assert state.may_approve("U2")
    assert state.may_steer("U1"), "the summoner still steers the run"


async def test_an_unanswered_request_expires_and_the_model_is_told():
    poster = Poster()
    team = announcer(approval={"expires_after": "1h"})
    run = Run(team, [says("Posting.", post()), "No answer, so I did not post."], at=1000.0,
              context=ToolContext(post_message=poster))
    assert isinstance(await run.go(), AwaitApproval)
    assert deadline(run.state) == 1000.0 + 3600, "the host wakes the run then"
    assert time_passed(run.state, 1000.0 + 3599) == []
    run.clock = 1000.0 + 3600
    run.add(*time_passed(run.state, run.clock))
    await run.go()
    assert run.of(ApprovalExpired) == [ApprovalExpired(call_id="c1", at=4600.0)]
    call = run.state.calls["c1"]
    assert call.status == "expired" and call.decision is None, "expired is not a denial"
    assert run.result_of("c1") == ToolResult(call_id="c1", output=EXPIRED, error=True, at=4600.0)
    assert run.model.requests[1].messages[-1].content == EXPIRED
    assert poster.posts == []


async def test_an_approval_that_arrives_after_the_expiry_does_not_run_the_call():
    poster = Poster()
    run = Run(announcer(approval={"expires_after": "30m"}), [says("", post()), "Too late."],
              context=ToolContext(post_message=poster))
    await run.go()
    run.clock = 1800.0
    await run.decide_call(True, by="U1")
    assert poster.posts == []
    assert run.state.calls["c1"].status == "expired"


async def test_an_expiry_earlier_than_the_time_limit_wakes_the_run_first():
    team = make_team(agent("announcer", tools=[POST]), approval={"expires_after": "90s"},
                     termination={"any": [{"max_messages": 2}, {"timeout": "10m"}]})
    run = Run(team, [says("", post()), "Nobody answered."], at=100.0)
    await run.go()
    assert deadline(run.state) == 190.0
    run.clock = 190.0
    run.add(*time_passed(run.state, 190.0))
    await run.go()
    assert run.state.calls["c1"].status == "expired"
    assert run.texts[-1] == "Nobody answered."
    assert run.state.finished == "2 messages reached", "the time limit had not come"


@pytest.mark.parametrize(("written", "seconds"), [
    ("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172800), (45, 45), ("1.5h", 5400)])
def test_expiry_durations(written, seconds):
    assert announcer(approval={"expires_after": written}).approval.expires_after == seconds


# -- approve always ------------------------------------------------------------------------------
async def test_approve_always_approves_the_pending_call_and_later_ones_of_that_tool():
    poster = Poster()
    team = announcer(tools=[POST, {"use": "calculate", "approval": "always"}], messages=3)
    run = Run(team, [says("", post(call_id="p1")), says("", post("#general", "p2")),
                     says("", ToolCall("k1", "calculate", '{"expression": "1+1"}'))],
              context=ToolContext(post_message=poster))
    await run.go()
    assert run.state.may_approve_always("U1")
    run.add(*run.state.approve_always(POST, by="U1"))
    action = await run.go()
    assert poster.posts == [("#announcements", "We launch Monday."),
                            ("#general", "We launch Monday.")]
    assert not run.request_of("p2").needs_approval
    assert run.state.always_approved == {POST: "U1"}, "who granted it is remembered"
    assert run.of(ToolAlwaysApproved) == [ToolAlwaysApproved(tool=POST, by="U1")]
    assert isinstance(action, AwaitApproval) and action.calls[0].request.tool == "calculate", \
        "other tools still ask"


async def test_under_a_quorum_nobody_may_approve_a_tool_for_the_rest_of_the_run():
    team = announcer(approvers=["U2", "U3"], approval={"quorum": 2})
    run = Run(team, [says("", post(call_id="p1"))], approvers=("U2", "U3"))
    await run.go()
    assert not run.state.may_approve_always("U2")
    run.add(ToolAlwaysApproved(tool=POST, by="U2"))  # refused by the host; if logged anyway:
    assert run.state.always_approved == {}


# -- tools: [{use: post_message, channels: [...]}] -------------------------------------------------
async def test_post_message_may_only_post_where_the_team_file_says():
    poster = Poster()
    team = announcer(tools=[{"use": POST, "channels": ["#announcements"]}])
    run = Run(team, [says("", post("#general")), "Understood."],
              context=ToolContext(post_message=poster))
    await run.go()
    refused = run.result_of("c1")
    assert refused.error and "post_message may only post to #announcements" in refused.output
    assert not run.request_of("c1").needs_approval, "nobody is asked to approve a refused call"
    assert run.model.requests[1].messages[-1].content == refused.output
    assert poster.posts == []


@pytest.mark.parametrize("channel", ["#announcements", "announcements", "#Announcements"])
async def test_the_allowed_channel_still_needs_approval_then_posts(channel):
    poster = Poster()
    team = announcer(tools=[{"use": POST, "channels": ["#announcements"]}])
    run = Run(team, [says("", post(channel)), "Posted."], context=ToolContext(post_message=poster))
    assert isinstance(await run.go(), AwaitApproval)
    await run.decide_call(True)
    assert poster.posts == [(channel, "We launch Monday.")]


def test_channels_only_apply_to_a_tool_that_takes_a_channel():
    with pytest.raises(TeamFileError) as caught:
        parse_team(textwrap.dedent("""\
            name: t
            agents:
              - name: a
                system_message: Add.
                tools:
                  - {use: calculate, channels: ["#x"]}
            termination: {max_messages: 2}
            """), "t.yaml")
    assert caught.value.line == 6 and "channels: only narrows a tool that takes a channel" in str(
        caught.value)


# -- the team file: errors and warnings with file:line -------------------------------------------
GOVERNED = """\
name: governed
approvers: [U1, "role:Moderators", "role:123456789012345678", "role:S0614TZR7"]
stoppers: ["role:@oncall", U7]
approval: {quorum: 2, summoner_may_approve: false, expires_after: 2d}
budget: {tokens: 20000}
agents:
  - name: announcer
    system_message: Post it.
    tools: [{use: post_message, channels: ["#announcements", "C0123"]}]
termination: {max_messages: 4}
"""


def test_the_governance_fields_load_as_written():
    team = parse_team(GOVERNED, "governed.yaml")
    assert (team.approval.quorum, team.approval.summoner_may_approve,
            team.approval.expires_after) == (2, False, 2 * 86400)
    assert team.budget_tokens == 20000
    assert team.stoppers.people == ("U7",) and team.stoppers.roles == ("@oncall",)
    assert team.by_name["announcer"].tool(POST).channels == ("#announcements", "C0123")


def test_a_role_written_as_a_name_gets_a_warning_recommending_its_id(tmp_path):
    (tmp_path / "governed.yaml").write_text(GOVERNED)
    catalog = TeamCatalog.load(tmp_path, strict=True)
    shown = [str(w) for w in catalog.warnings]
    assert len(shown) == 2, shown
    approver, stopper = shown
    assert approver.startswith(f"{tmp_path / 'governed.yaml'}:2: warning: approvers: "
                               f"'role:Moderators' names a role")
    assert "prefer its id" in approver
    assert stopper.startswith(f"{tmp_path / 'governed.yaml'}:3: warning: stoppers: 'role:@oncall'")


@pytest.mark.parametrize(("block", "line", "problem"), [
    ("approval: {quorum: 3}\napprovers: [U1, U2]", 1, "approval.quorum is 3, but approvers: lists "
                                                      "only 2 people"),
    ("approval: {quorum: 2}", 1, "without an approvers: list only the person who summons"),
    ("approval: {summoner_may_approve: false}", 1, "summoner_may_approve is false, but without"),
    ("approval: {quorum: 0}", 1, "approval.quorum"),
    ("approval: {expires_after: soon}", 1, "expires_after must be a positive duration"),
    ("approval: {expires_after: -5}", 1, "expires_after must be a positive duration"),
    ("approval: {expiry: 1h}", 1, "unknown key 'expiry'"),
    ("budget: {tokens: 0}", 1, "budget.tokens"),
    ("budget: {tokens: many}", 1, "budget.tokens"),
    ("budget: 500", 1, "budget: expected a mapping"),
    ("stoppers: U1", 1, "stoppers: expected a list"),
])
def test_bad_governance_fields_are_refused_with_their_line(block, line, problem):
    text = f"name: t\n{block}\nagents:\n  - {{name: a, system_message: x}}\ntermination: {{stop: true}}\n"
    with pytest.raises(TeamFileError) as caught:
        parse_team(text, "t.yaml")
    assert caught.value.line == line + 1, str(caught.value)
    assert problem in caught.value.problem


def test_a_quorum_of_people_in_roles_cannot_be_counted_so_it_loads():
    team = make_team("a", approvers=["role:123456789012345678"], approval={"quorum": 3})
    assert team.approval.quorum == 3

