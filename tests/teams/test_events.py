"""The run log's events survive the store: JSON and back, losslessly, for every kind."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from threadteam.teams.events import (
    EVENT_TYPES,
    AgentMessage,
    ApprovalDecided,
    ApprovalExpired,
    ClockChecked,
    Event,
    Handoff,
    HumanMessage,
    Instructed,
    PlanReviewed,
    PlanWritten,
    ProgressAssessed,
    RunContinued,
    RunFinished,
    RunPaused,
    RunResumed,
    SpeakerSelected,
    StopRequested,
    TaskStarted,
    ToolAlwaysApproved,
    ToolCallRequested,
    ToolResult,
    from_json,
    to_dict,
    to_json,
)
from threadteam.teams.models.base import ToolCall, Usage

text = st.text(max_size=40)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=12)
at = st.floats(min_value=0, max_value=4e9, allow_nan=False)
tokens = st.integers(min_value=0, max_value=10**7)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12)
tool_calls = st.lists(st.builds(ToolCall, id=names, name=names, arguments=text), max_size=3).map(tuple)

EVENTS: dict[type[Event], st.SearchStrategy[Event]] = {
    TaskStarted: st.builds(TaskStarted, team=names, task=text, by=names,
                           approvers=st.lists(names, max_size=3).map(tuple), at=at),
    HumanMessage: st.builds(HumanMessage, user=names, text=text, display_name=text, at=at),
    SpeakerSelected: st.builds(SpeakerSelected, agent=names, how=text,
                               usage=st.builds(Usage, tokens, tokens), at=at),
    AgentMessage: st.builds(AgentMessage, agent=names, text=text, tool_calls=tool_calls,
                            usage=st.builds(Usage, tokens, tokens), model=text, at=at),
    ToolCallRequested: st.builds(ToolCallRequested, agent=names, call_id=names, tool=names,
                                 args=st.dictionaries(text, json_values, max_size=4),
                                 needs_approval=st.booleans(), problem=text, at=at),
    ApprovalDecided: st.builds(ApprovalDecided, call_id=names, approved=st.booleans(), by=names,
                               reason=text, at=at),
    ApprovalExpired: st.builds(ApprovalExpired, call_id=names, at=at),
    ToolAlwaysApproved: st.builds(ToolAlwaysApproved, tool=names, by=names, at=at),
    ToolResult: st.builds(ToolResult, call_id=names, output=text, error=st.booleans(), at=at),
    Handoff: st.builds(Handoff, source=names, target=names, at=at),
    StopRequested: st.builds(StopRequested, by=names, at=at),
    RunPaused: st.builds(RunPaused, reason=text, agent=names, at=at),
    RunResumed: st.builds(RunResumed, by=names, at=at),
    RunFinished: st.builds(RunFinished, reason=text, at=at),
    RunContinued: st.builds(RunContinued, by=names, instructions=text, at=at),
    ClockChecked: st.builds(ClockChecked, at=at),
    PlanWritten: st.builds(PlanWritten, revision=st.integers(1, 9), facts=text, plan=text,
                           cause=st.sampled_from(["start", "review", "replan"]), reason=text,
                           usage=st.builds(Usage, tokens, tokens), model=text, at=at),
    ProgressAssessed: st.builds(ProgressAssessed,
                                ledger=st.dictionaries(names, st.fixed_dictionaries(
                                    {"reason": text, "answer": st.booleans() | text}), max_size=5),
                                problem=text, reply=text, usage=st.builds(Usage, tokens, tokens),
                                model=text, hands_on=st.booleans(), at=at),
    Instructed: st.builds(Instructed, agent=names, text=text, at=at),
    PlanReviewed: st.builds(PlanReviewed, revision=st.integers(1, 9), by=names,
                            approved=st.booleans(), changes=text, display_name=text, at=at),
}
any_event = st.one_of(*EVENTS.values())


def test_every_kind_of_event_has_a_generator_here():
    assert set(EVENTS) == set(EVENT_TYPES.values()), "a new event type needs a round-trip test"


@settings(max_examples=400)
@given(any_event)
def test_json_round_trip_is_lossless(event):
    stored = to_json(event)
    back = from_json(stored)
    assert back == event
    assert type(back) is type(event)
    assert to_json(back) == stored, "serialising again gives the same text"


@given(st.lists(any_event, max_size=20))
def test_a_whole_log_round_trips(log):
    assert [from_json(to_json(e)) for e in log] == log


def test_the_kind_tag_names_the_event():
    data = json.loads(to_json(Handoff(source="bull", target="you", at=12.5)))
    assert data == {"kind": "handoff", "source": "bull", "target": "you", "at": 12.5}


def test_tool_calls_and_usage_come_back_as_their_types():
    message = AgentMessage(agent="a", text="", tool_calls=(ToolCall("c1", "calc", '{"x": 1}'),),
                           usage=Usage(3, 4))
    back = from_json(to_json(message))
    assert isinstance(back.tool_calls, tuple) and isinstance(back.tool_calls[0], ToolCall)
    assert back.usage.total == 7


def test_text_keeps_every_character():
    message = HumanMessage(user="U1", text="naïve — 你好 👋 \"quoted\"\n\ttab \\ back", display_name="Zoë")
    assert from_json(to_json(message)) == message
    assert "你好" in to_json(message), "stored as readable UTF-8, not escapes"


def test_a_log_written_before_a_field_existed_still_loads():
    old = '{"kind":"tool_call_requested","agent":"a","call_id":"c","tool":"t","args":{},' \
          '"needs_approval":false,"at":1.0}'
    assert from_json(old) == ToolCallRequested(agent="a", call_id="c", tool="t", args={},
                                               needs_approval=False, at=1.0)


def test_a_speaker_chosen_before_selector_usage_was_recorded_still_loads():
    old = '{"kind":"speaker_selected","agent":"bull","how":"model","at":1.0}'
    assert from_json(old) == SpeakerSelected(agent="bull", how="model", at=1.0)


def test_fields_from_a_newer_writer_are_ignored():
    newer = '{"kind":"run_finished","reason":"done","at":2.0,"summary":"from the future"}'
    assert from_json(newer) == RunFinished(reason="done", at=2.0)


def _subclasses(cls: type) -> set[type]:
    # slots=True rebuilds each class; only the one its module names is the real one.
    import sys

    found = {c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))}
    return {c for c in found if getattr(sys.modules[c.__module__], c.__name__, None) is c}


def test_every_kind_of_event_is_stored_and_folded_by_an_explicit_table():
    from threadteam.teams.state import HANDLERS

    kinds = _subclasses(Event)
    assert kinds == set(EVENT_TYPES.values()), "every Event type can be read back from a store"
    assert kinds == set(HANDLERS), "every Event type has a handler in the fold's table"


@settings(max_examples=200)
@given(any_event)
def test_a_log_the_stdlib_encoder_wrote_reads_back_the_same(event):
    # Stores hold text written before events were encoded with orjson.
    before = json.dumps(to_dict(event), separators=(",", ":"), ensure_ascii=False)
    assert from_json(before) == event
    assert json.loads(to_json(event)) == json.loads(before), "the same JSON, however spelled"


def test_what_orjson_cannot_write_losslessly_is_written_as_before():
    nan = float("nan")
    odd = ToolCallRequested(agent="a", call_id="c", tool="t", needs_approval=True, args={
        "big": 2**80, "small": -(2**70), "inf": float("inf"), "nested": [{"x": -float("inf")}]})
    back = from_json(to_json(odd))
    assert back == odd and back.args["big"] == 2**80 and isinstance(back.args["big"], int)
    with_nan = ToolCallRequested(agent="a", call_id="c", tool="t", needs_approval=True,
                                 args={"x": nan})
    value = from_json(to_json(with_nan)).args["x"]
    assert isinstance(value, float) and value != value, "a NaN stays a NaN, not null"
    stamped = ClockChecked(at=float("inf"))
    assert from_json(to_json(stamped)) == stamped
    # A lone surrogate (a stream cut mid-pair) is written as it was; the store cleans it.
    cut = HumanMessage(user="U1", text="half \ud83d")
    assert to_json(cut) == json.dumps({"at": 0.0, "user": "U1", "text": "half \ud83d",
                                       "display_name": "", "kind": "human_message"},
                                      separators=(",", ":"), ensure_ascii=False)
    assert from_json(to_json(cut)) == cut, "a log from before the store cleaned it still reads"
    assert to_json(ProgressAssessed(ledger={"q": {"answer": nan, "reason": ""}})).count("NaN") == 1
