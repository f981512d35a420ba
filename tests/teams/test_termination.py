"""Termination: each condition alone, any/all combinations, and a fresh start on `continue`."""

from __future__ import annotations

import pytest

from threadteam.teams.engine import Finish, Idle, deadline, decide, time_passed
from threadteam.teams.events import (
    AgentMessage,
    ClockChecked,
    Event,
    Handoff,
    HumanMessage,
    RunContinued,
    RunFinished,
    SpeakerSelected,
    StopRequested,
    TaskStarted,
    ToolCallRequested,
    ToolResult,
)
from threadteam.teams.models.base import ToolCall, Usage
from threadteam.teams.state import RunState

from .helpers import Run, agent, make_team

START = 1_000.0


def said(who: str, text: str = "ok", tokens: tuple[int, int] = (0, 0), at: float = START,
         calls: tuple[ToolCall, ...] = ()) -> AgentMessage:
    return AgentMessage(agent=who, text=text, usage=Usage(*tokens), at=at, tool_calls=calls)


def fold(termination, *events: Event, humans: bool = False) -> RunState:
    parts = ["bull", "bear", agent("synthesis", tools=["calculate"])]
    if humans:
        parts.append(agent("you", human=True))
    state = RunState(make_team(*parts, termination=termination))
    for e in (TaskStarted(team="team", task="t", by="U1", at=START), *events):
        state.apply(e)
    return state


def finish_reason(state: RunState) -> str | None:
    action = decide(state)
    return action.reason if isinstance(action, Finish) else None


@pytest.mark.parametrize(("termination", "events", "reason"), [
    pytest.param({"text_mention": "FINAL ANSWER"}, [said("bull", "my FINAL ANSWER: buy")],
                 "bull said 'FINAL ANSWER'", id="text_mention"),
    pytest.param({"text_mention": "FINAL ANSWER"}, [said("bull", "final answer, maybe")],
                 None, id="text_mention is case-sensitive"),
    pytest.param({"text_mention": {"text": "DONE", "sources": ["synthesis"]}},
                 [said("bull", "DONE"), said("bear", "DONE")], None,
                 id="text_mention from others is ignored"),
    pytest.param({"text_mention": {"text": "DONE", "sources": ["synthesis"]}},
                 [said("bull", "DONE"), said("synthesis", "We are DONE.")],
                 "synthesis said 'DONE'", id="text_mention from a named source"),
    pytest.param({"max_messages": 3}, [said("bull"), said("bear")], None, id="max_messages under"),
    pytest.param({"max_messages": 3},
                 [said("bull"), HumanMessage(user="U7", text="hm"), said("bear")],
                 "3 messages reached", id="max_messages counts people too"),
    pytest.param({"token_usage": 100}, [said("bull", tokens=(40, 20)), said("bear", tokens=(30, 9))],
                 None, id="token_usage under"),
    pytest.param({"token_usage": 100}, [said("bull", tokens=(40, 20)), said("bear", tokens=(30, 10))],
                 "total token budget of 100 used", id="token_usage total"),
    pytest.param({"token_usage": {"max_prompt_tokens": 50}}, [said("bull", tokens=(50, 0))],
                 "input token budget of 50 used", id="token_usage input"),
    pytest.param({"token_usage": {"max_completion_tokens": 5}}, [said("bull", tokens=(100, 4))],
                 None, id="token_usage output under"),
    pytest.param({"timeout": "10m"}, [said("bull", at=START + 599)], None, id="timeout under"),
    pytest.param({"timeout": "10m"}, [said("bull", at=START + 600)],
                 "time limit of 600 s reached", id="timeout"),
    pytest.param({"source_match": ["bear"]}, [said("bull")], None, id="source_match other"),
    pytest.param({"source_match": ["bear"]}, [said("bull"), said("bear")], "bear replied",
                 id="source_match"),
    pytest.param({"source_match": ["synthesis"]},
                 [said("synthesis", "", calls=(ToolCall("c1", "calculate", "{}"),))], None,
                 id="source_match waits for a reply in words"),
    pytest.param({"handoff": "you"}, [Handoff(source="bull", target="bear")], None,
                 id="handoff to someone else"),
    pytest.param({"handoff": "you"}, [Handoff(source="bull", target="you")],
                 "bull handed off to you", id="handoff"),
    pytest.param({"stop": True}, [StopRequested(by="U9")], "stopped by U9", id="stop"),
    pytest.param({"tool_call": "calculate"},
                 [ToolCallRequested(agent="synthesis", call_id="c1", tool="calculate",
                                    args={"expression": "1+1"}, needs_approval=False)],
                 None, id="tool_call requested but not run"),
    pytest.param({"tool_call": "calculate"},
                 [ToolCallRequested(agent="synthesis", call_id="c1", tool="calculate",
                                    args={"expression": "1/0"}, needs_approval=False),
                  ToolResult(call_id="c1", output="ZeroDivisionError", error=True)],
                 None, id="tool_call that failed"),
    pytest.param({"tool_call": "calculate"},
                 [ToolCallRequested(agent="synthesis", call_id="c1", tool="calculate",
                                    args={"expression": "1+1"}, needs_approval=False),
                  ToolResult(call_id="c1", output="2")],
                 "calculate ran", id="tool_call"),
])
def test_each_condition_alone(termination, events, reason):
    assert fold(termination, *events, humans=True).condition.fired == reason


def test_a_person_stopping_ends_the_run_even_without_a_stop_condition():
    state = fold({"max_messages": 50}, StopRequested(by="U2"))
    assert finish_reason(state) == "stopped by U2"


def test_text_mention_can_listen_to_the_human_participant():
    termination = {"text_mention": {"text": "THANKS", "sources": ["you"]}}
    assert finish_reason(fold(termination, said("bull", "THANKS"), humans=True)) is None
    state = fold(termination, HumanMessage(user="U1", text="THANKS, all"), humans=True)
    assert finish_reason(state) == "you said 'THANKS'"


def test_any_fires_on_the_first_child():
    termination = {"any": [{"text_mention": "STOP"}, {"max_messages": 2}]}
    assert finish_reason(fold(termination, said("bull"))) is None
    assert finish_reason(fold(termination, said("bull", "STOP"))) == "bull said 'STOP'"
    assert finish_reason(fold(termination, said("bull"), said("bear"))) == "2 messages reached"


def test_a_plain_list_means_any():
    termination = [{"text_mention": "STOP"}, {"max_messages": 2}]
    assert finish_reason(fold(termination, said("bull", "STOP"))) == "bull said 'STOP'"


def test_all_needs_every_child_in_any_order():
    termination = {"all": [{"text_mention": "AGREED"}, {"max_messages": 3}]}
    assert finish_reason(fold(termination, said("bull", "AGREED"), said("bear"))) is None
    assert finish_reason(fold(termination, said("bull", "AGREED"), said("bear"), said("synthesis"))) \
        == "bull said 'AGREED' and 3 messages reached"
    assert finish_reason(fold(termination, said("bull"), said("bear"), said("synthesis"))) is None
    assert finish_reason(fold(termination, said("bull"), said("bear"), said("synthesis"),
                              said("bull", "AGREED"))) is not None


def test_conditions_nest():
    termination = {"any": [
        {"all": [{"source_match": ["synthesis"]}, {"token_usage": 100}]},
        {"max_messages": 6},
    ]}
    cheap = [said("bull", tokens=(5, 5)), said("bear", tokens=(5, 5)), said("synthesis", tokens=(5, 5))]
    assert finish_reason(fold(termination, *cheap)) is None
    costly = [said("bull", tokens=(60, 5)), said("bear", tokens=(30, 5)), said("synthesis")]
    assert finish_reason(fold(termination, *costly)) == \
        "synthesis replied and total token budget of 100 used"
    assert finish_reason(fold(termination, *cheap, *cheap)) == "6 messages reached"


async def test_a_run_ends_on_its_condition_with_the_reason_in_the_log():
    team = make_team("bull", "bear", "synthesis",
                     termination={"any": [{"text_mention": "FINAL ANSWER"}, {"max_messages": 12}]})
    run = Run(team, ["Up.", "Down.", "FINAL ANSWER: sideways."])  # a 4th call would fail
    assert await run.go() == Idle("finished")
    assert run.speakers == ["bull", "bear", "synthesis"]
    assert run.log[-1] == RunFinished(reason="synthesis said 'FINAL ANSWER'")
    assert run.state.status == "finished"


async def test_continue_keeps_the_history_and_resets_the_conditions():
    team = make_team("bull", "bear", "synthesis",
                     termination={"any": [{"text_mention": "FINAL ANSWER"}, {"max_messages": 4}]})
    run = Run(team, ["b1", "r1", "FINAL ANSWER: hold", "b2", "r2", "s2", "b3"])
    await run.go()
    assert run.state.finished == "synthesis said 'FINAL ANSWER'"
    run.add(RunContinued(by="U1", instructions="Now consider rates."))
    assert await run.go() == Idle("finished")
    # the old FINAL ANSWER does not end the continued run at once; four new messages do
    assert run.speakers == ["bull", "bear", "synthesis", "bull", "bear", "synthesis", "bull"]
    assert run.log[-1] == RunFinished(reason="4 messages reached")
    bull_again = run.model.requests[3]
    assert [m.content for m in bull_again.messages] == [
        "Decide.", "b1", "r1", "FINAL ANSWER: hold", "Now consider rates."]
    assert bull_again.messages[1].role == "assistant"


async def test_continue_without_instructions_just_goes_on():
    team = make_team("bull", "bear", termination={"max_messages": 2})
    run = Run(team, ["b1", "r1", "b2", "r2"])
    await run.go()
    run.add(RunContinued(by="U1"))
    await run.go()
    assert run.speakers == ["bull", "bear", "bull", "bear"]
    assert run.state.messages == 4


async def test_a_timeout_counts_from_the_continue_not_the_start():
    team = make_team("bull", "bear", termination={"timeout": 60})
    run = Run(team, at=START)

    def later(seconds: float, text: str):
        def step(request):
            run.clock = START + seconds  # the model took this long
            return text
        return step

    run.model.add(later(10, "b1"), later(61, "r1"))
    await run.go()
    assert run.speakers == ["bull", "bear"]
    assert run.state.finished == "time limit of 60 s reached"
    run.clock = START + 500
    run.add(RunContinued(by="U1", at=run.clock))
    run.model.add(later(530, "b2"), later(559, "r2"), later(561, "b3"))
    await run.go()
    assert run.speakers == ["bull", "bear", "bull", "bear", "bull"]
    assert run.state.finished == "time limit of 60 s reached"
    run.model.assert_used()


def test_continue_resets_every_child_of_a_combination():
    termination = {"all": [{"text_mention": "AGREED"}, {"max_messages": 3}]}
    state = fold(termination, said("bull", "AGREED"), said("bear"), said("synthesis"),
                 RunFinished(reason="bull said 'AGREED' and 3 messages reached"),
                 RunContinued(by="U1"), said("bull"), said("bear"), said("synthesis"))
    assert finish_reason(state) is None, "the AGREED from before the continue no longer counts"
    state.apply(said("bull", "AGREED"))
    assert finish_reason(state) == "bull said 'AGREED' and 3 messages reached"


def _waiting_for_you(termination) -> RunState:
    """bull spoke, then the person's turn came: the run waits."""
    state = RunState(make_team("bull", agent("you", human=True), termination=termination))
    for e in (TaskStarted(team="team", task="t", by="U1", at=START), said("bull", at=START + 1),
              SpeakerSelected(agent="you", how="order", at=START + 1)):
        state.apply(e)
    assert decide(state).waits
    return state


def test_a_time_limit_ends_a_wait_only_once_it_has_passed():
    state = _waiting_for_you({"any": [{"timeout": "10m"}, {"max_messages": 50}]})
    assert deadline(state) == START + 600
    assert time_passed(state, START + 599) == []
    late = time_passed(state, START + 600)
    assert late == [ClockChecked(at=START + 600)]
    for e in late:
        state.apply(e)
    assert decide(state) == Finish("time limit of 600 s reached")
    assert deadline(state) is None and time_passed(state, START + 9999) == []


def test_a_time_limit_inside_all_waits_for_the_rest_and_wakes_the_run_once():
    state = _waiting_for_you({"all": [{"timeout": 60}, {"text_mention": "AGREED"}]})
    assert deadline(state) == START + 60
    for e in time_passed(state, START + 61):
        state.apply(e)
    assert decide(state).waits and deadline(state) is None  # the other half is still owed


def test_continue_starts_the_clock_again():
    state = _waiting_for_you({"timeout": 60})
    for e in (*time_passed(state, START + 61), RunFinished(reason="x", at=START + 61),
              RunContinued(by="U1", at=START + 500)):
        state.apply(e)
    assert deadline(state) == START + 560


def test_teams_without_a_time_limit_are_never_woken():
    assert deadline(_waiting_for_you({"max_messages": 5})) is None
