"""The rehearsal model: deterministic, labelled, and enough to drive a team to its end."""

from __future__ import annotations

import json

import pytest

from threadteam.teams.models import Candidate, ToolCall, ToolSpec
from threadteam.teams.models.rehearsal import RehearsalModel
from threadteam.teams.prompts import SELECTOR_PROMPT

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


@pytest.mark.parametrize(("spoken", "expected"), [
    ((), "planner"),                                  # the first in order opens
    (("planner",), "human"),                          # then whoever has not spoken yet,
    (("planner", "ana"), "writer"),                   # the person included (ana, here)
    (("planner", "writer", "critic"), "human"),       # and before anyone speaks again
    (("planner", "writer", "ana", "critic"), "planner"),  # ana is the person: everyone spoke
    (("critic", "writer", "ana", "planner"), "writer"),   # then the next agent in order
])
async def test_select_hears_everyone_once_then_goes_round_the_agents(spoken, expected):
    said = [user(f"{name} here", name) for name in spoken]
    roles = "\n".join(f"- {c.name}: {c.description}" for c in TEAM)
    request = ask(user("the task", "task"), *said, purpose="select", candidates=TEAM,
                  system=SELECTOR_PROMPT.replace("{roles}", roles))
    assert (await model.complete(request)).text == expected


async def test_select_without_the_roles_in_its_prompt_takes_the_last_speaker_for_an_agent():
    # allow_repeated_speaker: false leaves the last speaker out of the candidates
    rest = tuple(c for c in TEAM if c.name != "writer")
    request = ask(user("the task", "task"), user("p", "planner"), user("w", "writer"),
                  purpose="select", candidates=rest, system="Pick one.")
    assert (await model.complete(request)).text == "human"
    request = ask(*request.messages, user("a", "ana"), user("c", "critic"), purpose="select",
                  candidates=tuple(c for c in TEAM if c.name != "critic"), system="Pick one.")
    assert (await model.complete(request)).text == "planner"


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


def _system(marker: str = "", mates: str = "") -> str:
    """An agent's system prompt as teams.prompts builds it: instructions, then the team."""
    return f"Help. {marker}\n\nYou are scout (Scout) in a team conversation with: {mates}."


async def test_a_reply_answers_rehearsal_text_without_quoting_it():
    answer = await model.complete(ask(
        user("Tabs or spaces?", "task"), user("[rehearsal] bull on 'Tabs or spaces?'", "bull"),
        agent="bear"))
    assert answer.text == "[rehearsal] bear answers bull on 'Tabs or spaces?'"
    later = await model.complete(ask(
        user("Tabs or spaces?", "task"), user("[rehearsal] bull on 'Tabs or spaces?'", "bull"),
        user("Spaces, surely.", "Ana"), me("[rehearsal] bear answers bull on 'Tabs or spaces?'"),
        user("[rehearsal] synthesis answers bear on 'Spaces, surely.'", "synthesis"),
        agent="bear"))
    assert later.text == "[rehearsal] bear answers synthesis on 'Spaces, surely.'"


async def test_each_tool_is_called_once_in_turn_then_the_agent_answers_in_words():
    ticket = ToolSpec("ticket", "Open a ticket.", {"type": "object", "properties": {
        "title": {"type": "string"}}, "required": ["title"]})
    first = await model.complete(ask(user("go", "task"), tools=(SEARCH, ticket), agent="scout"))
    assert [c.name for c in first.tool_calls] == ["search"]
    so_far = (user("go", "task"), me(first.text, *first.tool_calls),
              result(first.tool_calls[0].id, "3 otters"))
    second = await model.complete(ask(*so_far, tools=(SEARCH, ticket), agent="scout"))
    assert second.text == "[rehearsal] scout notes that search returned '3 otters', then calls ticket"
    assert [c.name for c in second.tool_calls] == ["ticket"]
    so_far = (*so_far, me(second.text, *second.tool_calls),
              result(second.tool_calls[0].id, "T-1", error=True))
    third = await model.complete(ask(*so_far, tools=(SEARCH, ticket), agent="scout"))
    assert third.text == "[rehearsal] scout notes that ticket failed 'T-1'" and not third.tool_calls


async def test_a_text_argument_takes_the_example_the_tool_describes():
    calc = ToolSpec("calculate", "Evaluate an arithmetic expression such as '(1200 * 0.15) / 12'.",
                    {"type": "object", "properties": {"expression": {"type": "string"}},
                     "required": ["expression"]})
    answer = await model.complete(ask(user("sum it", "task"), tools=(calc,)))
    assert json.loads(answer.tool_calls[0].arguments) == {"expression": "(1200 * 0.15) / 12"}


async def test_the_conclusion_waits_until_the_whole_team_was_heard():
    system = _system("Say 'RESOLVED' when done.", "engineer, customer")
    alone = await model.complete(ask(user("printer jam", "task"), system=system, agent="scout"))
    assert "RESOLVED" not in alone.text
    heard = await model.complete(ask(
        user("printer jam", "task"), me(alone.text), user("[rehearsal] engineer on 'x'", "engineer"),
        user("It is the tray.", "Ana"), system=system, agent="scout"))
    assert heard.text == ("[rehearsal] scout on 'It is the tray.'\n\n"
                          "RESOLVED: rehearsal conclusion.")
    # the people in the thread speak under their own names: one counts for 'customer'
    first_turn = await model.complete(ask(
        user("printer jam", "task"), user("[rehearsal] engineer on 'x'", "engineer"),
        user("It is the tray.", "Ana"), system=system, agent="scout"))
    assert first_turn.text.endswith("RESOLVED: rehearsal conclusion.")


async def test_a_swarm_agent_hands_over_to_whoever_was_heard_least_recently():
    to_coder = ToolSpec("transfer_to_coder", "Hand over.", {"type": "object", "properties": {}})
    to_you = ToolSpec("transfer_to_you", "Hand over.", {"type": "object", "properties": {}})
    tools, system = (to_coder, to_you), _system(mates="coder, you")
    first = await model.complete(ask(user("build it", "task"), tools=tools, system=system))
    assert first.text == "[rehearsal] writer on 'build it', then hands over to coder"
    assert [c.name for c in first.tool_calls] == ["transfer_to_coder"]
    after_coder = await model.complete(ask(
        user("build it", "task"), user("[rehearsal] coder on 'build it'", "coder"),
        tools=tools, system=system))
    assert [c.name for c in after_coder.tool_calls] == ["transfer_to_you"]
    after_person = await model.complete(ask(
        user("build it", "task"), user("[rehearsal] coder on 'build it'", "coder"),
        user("In Rust.", "Ana"), tools=tools, system=system))
    assert [c.name for c in after_person.tool_calls] == ["transfer_to_coder"], \
        "the person (Ana, speaking for 'you') was heard after the coder"
