"""The rehearsal model: deterministic, labelled, and enough to drive a team to its end."""

from __future__ import annotations

import json

import pytest

from threadteam.teams.models import Candidate, ToolCall, ToolSpec
from threadteam.teams.models.rehearsal import RehearsalModel

from .helpers import SEARCH, Collector, ask, me, result, user

model = RehearsalModel()
TEAM = (Candidate("planner", "plans"), Candidate("human", "a person", human=True),
        Candidate("writer", "writes"), Candidate("critic", "critiques"))
HANDOFF = ToolSpec("transfer_to_critic", "Hand over.", {"type": "object", "properties": {}})


async def test_same_request_same_answer():
    request = ask(user("Plan a picnic for twelve people", "ana"), tools=(SEARCH,))
    first, second = Collector(), Collector()

    a = await model.complete(request, first)
    b = await model.complete(request, second)

    assert a == b
    assert first.deltas == second.deltas
    assert len(first.deltas) > 1 and first.text == a.text


async def test_reply_is_labelled_and_quotes_the_last_message():
    answer = await model.complete(ask(user("Plan a picnic", "ana"), agent="planner"))
    assert answer.text == "[rehearsal] planner on 'Plan a picnic'"
    assert answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0


async def test_long_messages_are_cut_to_sixty_characters():
    answer = await model.complete(ask(user("word " * 50, "ana"), agent="planner"))
    quoted = answer.text.split("'")[1]
    assert len(quoted) == 60 and quoted.endswith("…")


@pytest.mark.parametrize(("system", "ending"), [
    ("Reply 'FINAL ANSWER:' when done.", "\n\nFINAL ANSWER: rehearsal conclusion."),
    ('Say "RESOLVED" once the ticket is fixed.', "\n\nRESOLVED: rehearsal conclusion."),
    ("When finished write “APPROVED”.", "\n\nAPPROVED: rehearsal conclusion."),
])
async def test_a_marker_phrase_in_the_system_prompt_ends_the_reply(system, ending):
    answer = await model.complete(ask(user("go", "ana"), system=system))
    assert answer.text.endswith(ending)


async def test_no_marker_no_conclusion():
    answer = await model.complete(ask(user("go", "ana"), system="You are 'Bob', be NICE."))
    assert "conclusion" not in answer.text


@pytest.mark.parametrize(("last_speaker", "expected"), [
    ("planner", "writer"),   # skips the human after the planner
    ("writer", "critic"),
    ("critic", "planner"),   # wraps around
    ("ana", "planner"),      # not a candidate: start from the top
])
async def test_select_picks_the_next_non_human_in_order(last_speaker, expected):
    request = ask(user("hello", "ana"), user("my turn", last_speaker), me("mine"),
                  purpose="select", candidates=TEAM)
    assert (await model.complete(request)).text == expected


async def test_select_falls_back_to_a_human_when_only_humans_remain():
    people = (Candidate("ana", "", human=True), Candidate("bo", "", human=True))
    request = ask(user("hi", "ana"), purpose="select", candidates=people)
    assert (await model.complete(request)).text == "bo"


async def test_first_turn_with_tools_calls_the_first_non_handoff_tool():
    answer = await model.complete(ask(user("find otters", "ana"), tools=(HANDOFF, SEARCH)))
    assert answer.text.startswith("[rehearsal] ")
    assert [(c.name, json.loads(c.arguments)) for c in answer.tool_calls] == [
        ("search", {"q": "rehearsal q"})]


async def test_only_handoffs_means_the_first_handoff():
    answer = await model.complete(ask(user("over to you", "ana"), tools=(HANDOFF,)))
    assert answer.tool_calls[0].name == "transfer_to_critic"
    assert json.loads(answer.tool_calls[0].arguments) == {}


async def test_arguments_follow_the_schema():
    tool = ToolSpec("book", "Book a table.", {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string"}, "size": {"type": "string", "enum": ["small", "large"]},
        "guests": {"type": "integer"}, "budget": {"type": "number"},
        "outdoor": {"type": "boolean"}, "dishes": {"type": "array", "items": {"type": "string"}},
        "extras": {"type": "object"}, "note": {"type": ["string", "null"]},
        "tip": {"type": "number", "default": 10}}})

    answer = await model.complete(ask(user("book it", "ana"), tools=(tool,)))

    assert json.loads(answer.tool_calls[0].arguments) == {
        "city": "rehearsal city", "size": "small", "guests": 1, "budget": 1.0, "outdoor": True,
        "dishes": [], "extras": {}, "note": "rehearsal note"}


async def test_a_tool_result_is_acknowledged_and_no_second_call_follows():
    call = ToolCall("rehearsal_1", "search", '{"q": "otters"}')
    after_result = ask(user("find otters", "ana"), me("", call), result("rehearsal_1", "3 otters"),
                       tools=(SEARCH,), agent="scout")
    answer = await model.complete(after_result)
    assert answer.tool_calls == ()
    assert answer.text == "[rehearsal] scout notes that search returned '3 otters'"

    later = ask(*after_result.messages, me(answer.text), user("thanks", "ana"), tools=(SEARCH,),
                agent="scout", system="Say 'DONE' at the end.")
    final = await model.complete(later)
    assert final.tool_calls == ()
    assert final.text.endswith("DONE: rehearsal conclusion.")
