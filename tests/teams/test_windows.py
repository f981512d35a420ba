"""Context windows trim in blocks; the selector still reads the newest messages."""

from __future__ import annotations

from threadteam.teams.events import AgentMessage, HumanMessage, TaskStarted
from threadteam.teams.models.base import ChatMessage, ToolCall, Usage
from threadteam.teams.prompts import SELECTOR_CONTEXT, build_request, build_selector_request
from threadteam.teams.state import RunState, View

from .helpers import agent, make_team


def test_the_selector_reads_the_newest_messages_however_long_the_run():
    team = make_team("bull", "bear", strategy="selector")
    state = RunState(team)
    state.apply(TaskStarted(team=team.name, task="Oil?", by="U1"))
    for i in range(3 * SELECTOR_CONTEXT + 7):
        state.apply(HumanMessage(user="U1", text=f"m{i}"))
        request = build_selector_request(state, ("bull", "bear"), "scripted")
        expected = [f"m{j}" for j in range(max(0, i + 1 - SELECTOR_CONTEXT), i + 1)]
        assert [m.content for m in request.messages] == ["Oil?", *expected]


def test_a_token_window_is_cut_in_one_block_down_to_a_tenth_of_its_budget():
    team = make_team(agent("bull", context={"tokens": 400}), "bear", strategy="round_robin")
    state = RunState(team)
    state.apply(TaskStarted(team=team.name, task="Oil?", by="U1"))
    seen = []
    for i in range(30):
        state.apply(HumanMessage(user="U1", text=f"{i:02d}" + "x" * 38))  # 14 tokens each
        seen.append([m.content[:2] for m in build_request(state, "bull", "scripted").messages[1:]])
    # 28 messages (392 tokens) fit; the 29th overflows and the window restarts from what
    # fits in a tenth of the budget (40 tokens: two messages).
    assert seen[27] == [f"{i:02d}" for i in range(28)]
    assert seen[28] == ["27", "28"]
    assert seen[29] == ["27", "28", "29"]


def test_a_cut_keeps_a_tool_call_with_its_results():
    view = View(4)
    calls = (ToolCall("c1", "search", "{}"), ToolCall("c2", "search", "{}"))
    view.add(ChatMessage("user", "a", name="bear"))
    view.add(ChatMessage("user", "b", name="bear"))
    view.add_own(ChatMessage("assistant", "", tool_calls=calls))
    view.add(ChatMessage("user", "meanwhile", name="ana"))  # held until the results are in
    view.add_result(ChatMessage("tool", "one", tool_call_id="c1"))
    view.add_result(ChatMessage("tool", "two", tool_call_id="c2"))  # overflows: a cut...
    # ...keeps the newest message, and with a result the call it answers.
    assert [(m.role, m.content) for m in view.messages] == [
        ("assistant", ""), ("tool", "one"), ("tool", "two"), ("user", "meanwhile")]


def test_usage_adds_up_cached_and_written_tokens_across_messages():
    team = make_team("bull", "bear")
    state = RunState(team)
    state.apply(TaskStarted(team=team.name, task="Oil?", by="U1"))
    state.apply(AgentMessage(agent="bull", text="Up.", usage=Usage(2000, 10, 1024, 500)))
    state.apply(AgentMessage(agent="bear", text="Down.", usage=Usage(2500, 20, 1920, 80)))
    assert state.usage == Usage(4500, 30, 2944, 580)
