"""Tools: schemas from types, checked arguments, failures as results, and approvals."""

from __future__ import annotations

import pytest

from threadteam.teams.builtin_tools import BUILTIN
from threadteam.teams.engine import AwaitApproval, Idle, RunTool, decide
from threadteam.teams.errors import TeamFileError, ToolError
from threadteam.teams.events import ApprovalDecided, StopRequested, ToolCallRequested, ToolResult
from threadteam.teams.models.base import ToolCall
from threadteam.teams.tools import Tool, ToolContext, load_tool, tool

from . import sample_tools
from .helpers import Run, agent, make_team, says


def waived(ref: str) -> dict:
    """A `module:function` tool the team file lets run without approval."""
    return {"use": f"tests.teams.sample_tools:{ref}", "approval": "never"}


def desk(*tools, messages: int = 9, **team):
    """One agent with `tools`, then a reviewer, in turn."""
    return make_team(agent("clerk", tools=list(tools)), "reviewer",
                     termination={"max_messages": messages}, **team)


def call(name: str, args: str, call_id: str = "c1") -> ToolCall:
    return ToolCall(call_id, name, args)


class Poster:
    """A ToolContext.post_message that records what was posted where."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str]] = []

    async def __call__(self, channel: str, text: str) -> str:
        self.posts.append((channel, text))
        return f"m{len(self.posts)}"


# -- schemas --------------------------------------------------------------------------------
def test_the_schema_comes_from_the_type_hints_and_the_docstring():
    spec = Tool.from_function(sample_tools.create_ticket).spec
    assert spec.name == "create_ticket" and spec.description == "Open a ticket in the tracker."
    assert spec.parameters == {
        "type": "object", "additionalProperties": False, "required": ["title"],
        "properties": {
            "title": {"type": "string"},
            "priority": {"enum": ["low", "high"], "type": "string", "default": "low"},
            "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                     "default": None},
        }}


def test_the_context_parameter_is_the_hosts_not_the_models():
    spec = Tool.from_function(sample_tools.whoami).spec
    assert spec.parameters["properties"] == {}


@pytest.mark.parametrize("name", ["opaque_parameter", "unresolvable_hint"])
def test_parameters_that_cannot_be_described_are_refused_when_loading(name):
    with pytest.raises(ToolError, match="cannot be described"):
        load_tool(f"tests.teams.sample_tools:{name}")


def test_a_name_that_is_not_a_function_is_refused():
    with pytest.raises(ToolError, match="has no function 'not_callable'"):
        load_tool("tests.teams.sample_tools:not_callable")


def test_the_decorator_gives_the_tool_it_describes_and_it_still_calls_the_function():
    @tool(name="shout", approval="always")
    def loud(text: str) -> str:
        """Say it loudly."""
        return text.upper()

    assert isinstance(loud, Tool)
    assert (loud.name, loud.approval, loud.spec.description) == ("shout", "always", "Say it loudly.")
    assert loud("hey") == "HEY", "a user's own code and tests can still call it"


def test_a_decorated_tool_is_named_in_a_team_file_by_module_and_function():
    team = desk("tests.teams.sample_tools:shout")
    shout = team.by_name["clerk"].tool("shout")
    assert shout is sample_tools.shout and shout.spec.description == "Say it loudly."


def test_the_built_in_tools_are_a_table_not_a_registry():
    assert sorted(BUILTIN) == ["calculate", "current_time", "post_message", "run_code"]
    with pytest.raises(TeamFileError, match="unknown tool 'shout'"):
        desk("shout")


# -- arguments and failures go back to the model ----------------------------------------------
@pytest.mark.parametrize(("args", "problem"), [
    ('{"title": 5}', "title: Input should be a valid string"),
    ('{"priority": "high"}', "title: Field required"),
    ('{"title": "x", "priority": "urgent"}', "priority: Input should be 'low' or 'high'"),
    ('{"title": "x", "color": "red"}', "color: Extra inputs are not permitted"),
    ('{"title": ', "not valid JSON"),
    ('["x"]', "must be a JSON object"),
])
async def test_invalid_arguments_go_back_to_the_model_and_the_run_goes_on(args, problem):
    run = Run(desk(waived("create_ticket"), messages=3), [says("", call("create_ticket", args)),
                                           says("", call("create_ticket", '{"title": "Printer"}', "c2")),
                                           "Ticket T-7 is open."])
    assert await run.go() == Idle("finished")
    refused = run.result_of("c1")
    assert refused.error and problem in refused.output
    retry = run.model.requests[1]
    assert retry.agent == "clerk"
    assert retry.messages[-1].role == "tool" and problem in retry.messages[-1].content
    assert retry.messages[-1].is_error
    assert run.result_of("c2").output == '{"ticket": "T-7", "priority": "low", "tags": []}'
    assert run.speakers == ["clerk", "clerk", "clerk"]


async def test_a_tool_that_raises_gives_the_error_to_the_model():
    run = Run(desk(waived("explode"), messages=2),
              [says("", call("explode", '{"reason": "maintenance"}')), "The tracker is down."])
    await run.go()
    result = run.result_of("c1")
    assert result.error and result.output == "RuntimeError: the tracker is down (maintenance)"
    assert run.model.requests[1].messages[-1].content == result.output
    assert run.state.status == "finished"


async def test_an_unknown_tool_is_refused_with_the_ones_that_exist():
    run = Run(desk("calculate", messages=2), [says("", call("weather", "{}")), "Sorry."])
    await run.go()
    result = run.result_of("c1")
    assert result.error
    assert result.output == "There is no tool named 'weather'. Available tools: calculate."


async def test_a_tool_gets_the_hosts_context():
    run = Run(desk(waived("whoami"), messages=2),
              [says("", call("whoami", "{}")), "ok"], context=None)
    await run.go()
    assert run.result_of("c1").output == "called by clerk"


async def test_calls_of_one_reply_run_in_order_and_the_agent_sees_every_result():
    reply = says("Two sums.", call("calculate", '{"expression": "2*21"}', "a"),
                 call("calculate", '{"expression": "1/0"}', "b"))
    run = Run(desk("calculate", messages=2), [reply, "42, and the other is undefined."])
    await run.go()
    assert [e.call_id for e in run.of(ToolResult)] == ["a", "b"]
    assert run.result_of("a").output == "42"
    assert run.result_of("b").error and "division by zero" in run.result_of("b").output
    seen = run.model.requests[1].messages
    assert [(m.role, m.tool_call_id) for m in seen[-3:]] == [
        ("assistant", None), ("tool", "a"), ("tool", "b")]


async def test_after_the_tool_round_limit_the_agent_must_answer_in_words():
    sums = [says("", call("calculate", '{"expression": "1+1"}', f"c{i}")) for i in range(3)]
    run = Run(desk("calculate", messages=4, max_tool_rounds=2), [*sums, "Done summing."])
    await run.go()
    assert [len(r.tools) for r in run.model.requests] == [1, 1, 0, 0]
    third = run.result_of("c2")
    assert third.error and "No more tool calls this turn" in third.output
    assert run.speakers == ["clerk", "clerk", "clerk", "clerk"]


# -- approvals ------------------------------------------------------------------------------
async def test_a_call_that_needs_approval_waits_without_running():
    poster = Poster()
    run = Run(desk("post_message"), [says("Posting the note.", call(
        "post_message", '{"channel": "#general", "text": "Lunch at noon"}'))],
        context=ToolContext(post_message=poster))
    action = await run.go()
    assert isinstance(action, AwaitApproval)
    (pending,) = action.calls
    assert pending.request.tool == "post_message" and pending.request.needs_approval
    assert pending.request.args == {"channel": "#general", "text": "Lunch at noon"}
    assert run.state.status == "awaiting_approval"
    assert decide(run.state) == action, "it keeps waiting"
    assert poster.posts == [] and run.of(ToolResult) == []


async def test_an_approved_call_runs_and_its_result_reaches_the_agent():
    poster = Poster()
    run = Run(desk("post_message", messages=3), [says("Posting.", call(
        "post_message", '{"channel": "#general", "text": "Lunch at noon"}'))],
        context=ToolContext(post_message=poster))
    await run.go()
    run.model.add("Posted it.", "Good.")
    assert await run.decide_call(True, by="U1") == Idle("finished")
    assert poster.posts == [("#general", "Lunch at noon")]
    assert run.result_of("c1").output == "Posted to #general (message m1)."
    assert run.model.requests[1].messages[-1].content == "Posted to #general (message m1)."


async def test_a_denial_with_its_reason_reaches_the_agent_as_the_result():
    poster = Poster()
    run = Run(desk("post_message", messages=3), [says("Posting.", call(
        "post_message", '{"channel": "#general", "text": "Lunch at noon"}'))],
        context=ToolContext(post_message=poster))
    await run.go()
    run.model.add("Understood, not posting.", "Fine.")
    await run.decide_call(False, reason="wrong channel, use #food", by="U1")
    assert poster.posts == []
    denied = run.result_of("c1")
    assert denied.error and "wrong channel, use #food" in denied.output
    assert "denied" in denied.output
    assert run.model.requests[1].messages[-1].content == denied.output


async def test_a_call_behind_one_that_waits_also_waits():
    reply = says("", call("post_message", '{"channel": "#a", "text": "x"}', "p"),
                 call("calculate", '{"expression": "1+1"}', "q"))
    run = Run(desk("post_message", "calculate", messages=3), [reply, "ok", "ok"])
    assert isinstance(await run.go(), AwaitApproval)
    assert run.of(ToolResult) == []
    await run.decide_call(True)
    assert [e.call_id for e in run.of(ToolResult)] == ["p", "q"]


async def test_the_team_file_can_require_or_waive_approval():
    team = desk({"use": "calculate", "approval": "always"}, {"use": "post_message", "approval": "never"})
    clerk = team.by_name["clerk"]
    assert clerk.tool("calculate").approval == "always"
    assert clerk.tool("post_message").approval == "never"
    run = Run(team, [says("", call("calculate", '{"expression": "2+2"}'))])
    assert isinstance(await run.go(), AwaitApproval)
    quick = Run(team, [says("", call("post_message", '{"channel": "#a", "text": "hi"}')), "ok"])
    quick.state.condition = make_team("a", termination={"max_messages": 2}).termination()
    await quick.go()
    assert not quick.request_of("c1").needs_approval
    assert quick.result_of("c1").output == "This chat does not support posting to other channels."


async def test_a_name_override_is_what_the_model_sees_and_calls():
    team = desk({"use": "calculate", "name": "add_up"}, messages=2)
    run = Run(team, [says("", call("add_up", '{"expression": "40+2"}')), "42"])
    await run.go()
    assert [t.name for t in run.model.requests[0].tools] == ["add_up"]
    assert run.result_of("c1").output == "42"


async def test_module_function_tools_load_and_run():
    run = Run(desk(waived("create_ticket"), messages=2),
              [says("", call("create_ticket", '{"title": "VPN", "tags": ["net"]}')), "Opened."])
    await run.go()
    assert run.result_of("c1").output == '{"ticket": "T-3", "priority": "low", "tags": ["net"]}'


def test_who_may_approve_defaults_to_the_summoner_and_follows_the_team_file():
    run = Run(desk("post_message"), by="U1")
    assert run.state.may_approve("U1") and not run.state.may_approve("U2")
    listed = Run(desk("post_message"), by="U1", approvers=("U3", "role:Moderators"))
    assert listed.state.may_approve("U3")
    assert listed.state.may_approve("U4", roles=("Moderators",))
    assert not listed.state.may_approve("U1"), "the list replaces the default"


def test_the_next_step_after_an_approval_is_running_that_call():
    run = Run(desk("post_message"))
    run.add(ToolCallRequested(agent="clerk", call_id="p", tool="post_message",
                              args={"channel": "#a", "text": "x"}, needs_approval=True))
    assert isinstance(decide(run.state), AwaitApproval)
    run.add(ApprovalDecided(call_id="p", approved=True, by="U1"))
    action = decide(run.state)
    assert isinstance(action, RunTool) and action.call.request.call_id == "p"


async def test_each_new_turn_gets_its_tool_rounds_back():
    team = make_team(agent("clerk", tools=["calculate"]), agent("checker", tools=["calculate"]),
                     termination={"max_messages": 5}, max_tool_rounds=2)
    sums = [says("", call("calculate", '{"expression": "1+1"}', f"c{i}")) for i in range(2)]
    run = Run(team, [*sums, "Two.", says("", call("calculate", '{"expression": "3*3"}', "k")), "Ok."])
    await run.go()
    assert [(r.agent, len(r.tools)) for r in run.model.requests] == [
        ("clerk", 1), ("clerk", 1), ("clerk", 0), ("checker", 1), ("checker", 1)]
    assert run.result_of("k").output == "9"


async def test_missing_or_repeated_call_ids_are_made_unique():
    # Some OpenAI-compatible servers send empty or repeated ids; each call must still run once.
    twice = says("", call("calculate", '{"expression": "1+1"}', ""), call("calculate", '{"expression": "2+2"}', ""))
    again = says("", call("calculate", '{"expression": "3+3"}', "call_x"))
    run = Run(desk("calculate", messages=4), [twice, says("", call("calculate", '{"expression": "5"}', "call_x")),
                                              again, "Done."])
    await run.go()
    ids = [e.call_id for e in run.of(ToolCallRequested)]
    assert len(set(ids)) == 4 and all(ids)
    assert [e.output for e in run.of(ToolResult)] == ["2", "4", "5", "6"]
    sent = run.model.requests[1].messages[-3:]
    assert [m.tool_call_id for m in sent[1:]] == [c.id for c in sent[0].tool_calls]


async def test_a_call_in_the_message_that_ends_the_run_still_gets_its_approval():
    poster = Poster()
    run = Run(desk("post_message", messages=1), [says("Posting it. DONE", call(
        "post_message", '{"channel": "#general", "text": "Hi"}'))], context=ToolContext(post_message=poster))
    assert isinstance(await run.go(), AwaitApproval), "the approval prompt is live, not orphaned"
    assert run.state.condition.fired == "1 messages reached"
    assert await run.decide_call(True) == Idle("finished")
    assert poster.posts == [("#general", "Hi")]
    assert run.state.finished == "1 messages reached"


async def test_stop_ends_the_run_even_with_an_approval_pending():
    run = Run(desk("post_message"), [says("", call("post_message", '{"channel": "#a", "text": "x"}'))])
    await run.go()
    run.add(StopRequested(by="U1"))
    assert await run.go() == Idle("finished")
    assert run.of(ToolResult) == []


async def test_calculate_refuses_numbers_too_large_instead_of_hanging():
    calculate = BUILTIN["calculate"]
    assert await calculate.invoke({"expression": "(1200 * 0.15) / 12"}, ToolContext()) == "15"
    with pytest.raises(ValueError, match="too large"):
        await calculate.invoke({"expression": "9**9**9**9"}, ToolContext())
    with pytest.raises(ValueError, match="only numbers"):
        await calculate.invoke({"expression": "__import__('os')"}, ToolContext())


@pytest.mark.parametrize("ref", [":ox:", "mod:", ":fn"])
def test_a_half_written_module_reference_is_a_tool_error(ref):
    from threadteam.teams.errors import ToolError
    from threadteam.teams.tools import load_tool

    with pytest.raises(ToolError, match="must be a built-in tool name or 'module:function'"):
        load_tool(ref)
