"""Who speaks next: round robin, selector, swarm, the human participant and interjections."""

from __future__ import annotations

from itertools import pairwise

from threadteam.teams.engine import (
    AwaitApproval,
    AwaitHuman,
    CallModel,
    Idle,
    SelectWithModel,
    decide,
)
from threadteam.teams.errors import ModelError
from threadteam.teams.events import (
    Handoff,
    HumanMessage,
    RunContinued,
    RunPaused,
    RunResumed,
    SpeakerSelected,
    StopRequested,
)
from threadteam.teams.models.base import ToolCall

from .helpers import Run, agent, make_team, says


def debate(messages: int = 7):
    return make_team("bull", "bear", "synthesis", termination={"max_messages": messages})


def triage(messages: int = 20, **selector):
    return make_team(
        agent("dispatcher", description="Reads the report first and classifies it."),
        agent("engineer", description="Diagnoses bugs and outages."),
        agent("billing", persona={"display_name": "Billing Desk"},
              description="Handles invoices, charges and refunds."),
        agent("customer", human=True, description="The person who reported the problem."),
        strategy="selector", termination={"max_messages": messages}, selector=selector)


def swarm(messages: int = 20, termination=None):
    return make_team(
        agent("planner", handoffs=["coder", "you"]),
        agent("coder", handoffs=["planner"]),
        agent("you", human=True),
        strategy="swarm", termination=termination or {"max_messages": messages})


# -- round robin ----------------------------------------------------------------------------
async def test_round_robin_takes_turns_in_the_files_order():
    run = Run(debate(7), [f"m{i}" for i in range(7)])
    await run.go()
    assert run.speakers == ["bull", "bear", "synthesis", "bull", "bear", "synthesis", "bull"]
    assert [r.agent for r in run.model.requests] == run.speakers
    assert {e.how for e in run.of(SpeakerSelected)} == {"order"}
    run.model.assert_used()


async def test_each_agent_sees_its_own_turns_as_its_own_and_the_others_by_name():
    run = Run(debate(4), ["Up.", "Down.", "Flat.", "Still up."], task="Oil?")
    await run.go()
    bull_again = run.model.requests[3]
    assert [(m.role, m.name, m.content) for m in bull_again.messages] == [
        ("user", "task", "Oil?"), ("assistant", None, "Up."), ("user", "bear", "Down."),
        ("user", "synthesis", "Flat.")]
    assert "You are bull (Bull) in a team conversation with: bear, synthesis." in bull_again.system


async def test_an_agents_context_window_trims_in_blocks_and_keeps_the_task():
    team = make_team(agent("bull", context={"messages": 3}), "bear", termination={"max_messages": 9})
    run = Run(team, [f"m{i}" for i in range(9)], task="Oil?")
    await run.go()
    bull = [[m.content for m in r.messages] for r in run.model.requests if r.agent == "bull"]
    # The window grows until the next message would overflow it, then keeps only its
    # newest (a tenth, at least one): each request between cuts extends the one before.
    assert bull == [["Oil?"], ["Oil?", "m0", "m1"], ["Oil?", "m3"], ["Oil?", "m3", "m4", "m5"],
                    ["Oil?", "m6", "m7"]]
    assert len(run.model.requests[7].messages) == 8, "bear's window is the default 40"


async def test_a_long_run_sends_only_the_window_and_changes_its_prefix_once_a_block():
    run = Run(debate(200), [f"m{i}" for i in range(200)], task="Oil?")
    await run.go()
    bear = [r.messages for r in run.model.requests if r.agent == "bear"]
    assert all(len(m) <= 41 and m[0].content == "Oil?" for m in bear)
    assert [m.content for m in bear[-1][-2:]] == ["m197", "m198"]
    cuts = sum(1 for before, after in pairwise(bear)
               if after[:len(before)] != before)
    # 199 messages reach bear's window of 40; a cut keeps 4, so one comes every 37.
    assert cuts == 5


async def test_a_token_limit_trims_the_oldest_messages_first():
    team = make_team(agent("bull", context={"tokens": 30}), "bear", termination={"max_messages": 5})
    run = Run(team, ["a" * 40, "b" * 40, "c" * 40, "d" * 40, "e"], task="Oil?")
    await run.go()
    # each message costs about len/4 + 4 = 14 tokens: two fit in 30
    assert [m.content[:1] for m in run.model.requests[4].messages] == ["O", "c", "d"]


# -- selector -------------------------------------------------------------------------------
async def test_the_selector_reads_the_roles_and_names_the_next_speaker():
    run = Run(triage(2), ["dispatcher", "Sounds like a billing problem.",
                          "The Engineer should look at this.", "Restart the sync job."])
    await run.go()
    assert run.speakers == ["dispatcher", "engineer"]
    ask = run.model.requests[0]
    assert ask.purpose == "select"
    assert "- engineer: Diagnoses bugs and outages." in ask.system
    assert [c.name for c in ask.candidates] == ["dispatcher", "engineer", "billing", "customer"]
    assert [c.human for c in ask.candidates] == [False, False, False, True]
    second = run.model.requests[2]
    assert "dispatcher" not in [c.name for c in second.candidates], "no one speaks twice running"
    assert "dispatcher" not in second.system.split("one of:")[1]
    assert ("dispatcher", "Sounds like a billing problem.") in [(m.name, m.content)
                                                                 for m in second.messages]
    assert [e.how for e in run.of(SpeakerSelected)] == ["model", "model"]


async def test_the_selector_may_answer_with_a_display_name():
    run = Run(triage(1), ["Billing Desk, please.", "Refund issued."])
    await run.go()
    assert run.speakers == ["billing"]


async def test_an_answer_naming_nobody_falls_back_to_the_next_in_order():
    run = Run(triage(2), ["I am not sure, honestly.", "Classified: bug.",
                          "the dispatcher again!", "Looking at it."])
    await run.go()
    # nobody named: the first in order; then the dispatcher may not repeat: the next in order
    assert run.speakers == ["dispatcher", "engineer"]
    assert [e.how for e in run.of(SpeakerSelected)] == ["fallback", "fallback"]


async def test_repeats_are_allowed_when_the_team_says_so():
    run = Run(triage(2, allow_repeated_speaker=True), ["engineer", "Step one.", "engineer", "Two."])
    await run.go()
    assert run.speakers == ["engineer", "engineer"]
    assert "engineer" in [c.name for c in run.model.requests[2].candidates]


async def test_the_selector_can_hand_the_turn_to_the_person():
    run = Run(triage(3), ["dispatcher", "What is your account id?", "customer"])
    assert await run.go() == AwaitHuman("customer")
    assert run.state.status == "awaiting_human"
    assert decide(run.state) == AwaitHuman("customer"), "waiting does not change on its own"
    run.model.add("engineer", "Found it: your sync token expired.")
    await run.say("It is 4411.", display_name="Alice")
    assert run.speakers == ["dispatcher", "human", "engineer"]
    assert ("Alice", "It is 4411.") in [(m.name, m.content) for m in run.model.requests[-1].messages]
    run.model.assert_used()


async def test_a_mention_makes_that_agent_speak_next_without_asking_the_selector():
    run = Run(triage(3), ["dispatcher", "Classified: billing."])
    await run.step()
    await run.step()
    run.model.add("Nothing wrong on our side.")
    await run.say("@engineer what about the sync job?")
    assert run.speakers == ["dispatcher", "human", "engineer"]
    assert [r.purpose for r in run.model.requests] == ["select", "reply", "reply"]
    assert run.of(SpeakerSelected)[-1].how == "mention"


async def test_a_mention_in_round_robin_jumps_the_queue_then_the_order_goes_on():
    run = Run(debate(4), ["b1", "s1", "b2"])
    await run.step()
    await run.say("@Synthesis, sum up please")  # the display name works too
    assert run.speakers == ["bull", "human", "synthesis", "bull"]


async def test_an_email_address_is_not_a_mention():
    run = Run(debate(3), ["b1", "r1"])
    await run.step()
    await run.say("mail ops@synthesis.example about it")
    assert run.speakers == ["bull", "human", "bear"]


# -- swarm ----------------------------------------------------------------------------------
async def test_swarm_agents_pass_the_turn_with_handoff_tools():
    run = Run(swarm(3), [says("Plan: write it.", ("transfer_to_coder", "{}")), "Written.", "More."])
    await run.go()
    assert run.speakers == ["planner", "coder", "coder"], "without a handoff the coder keeps the turn"
    tools = [t.name for t in run.model.requests[0].tools]
    assert tools == ["transfer_to_coder", "transfer_to_you"]
    assert run.of(Handoff) == [Handoff(source="planner", target="coder")]
    assert run.result_of("call_transfer_to_coder").output == "Transferred to coder."
    assert run.of(SpeakerSelected)[1].how == "handoff"


async def test_a_handoff_to_the_person_waits_for_them_then_returns_to_the_agent():
    run = Run(swarm(4), [says("Which language?", ("transfer_to_you", "{}"))])
    assert await run.go() == AwaitHuman("you")
    assert run.state.status == "awaiting_human"
    run.model.add(says("Rust it is.", ("transfer_to_coder", "{}")), "fn main() {}")
    await run.say("Rust, please.")
    assert run.speakers == ["planner", "human", "planner", "coder"]
    back = run.model.requests[1]
    assert back.agent == "planner"
    assert [(m.role, m.content) for m in back.messages][-3:] == [
        ("assistant", "Which language?"), ("tool", "Transferred to you."), ("user", "Rust, please.")]


async def test_only_the_first_handoff_of_a_reply_counts():
    reply = says("Both!", ToolCall("h1", "transfer_to_coder", "{}"), ToolCall("h2", "transfer_to_you", "{}"))
    run = Run(swarm(2), [reply, "Coding."])
    await run.go()
    assert run.speakers == ["planner", "coder"]
    assert run.of(Handoff) == [Handoff(source="planner", target="coder")]
    assert run.result_of("h2").error and "only the first handoff counts" in run.result_of("h2").output


async def test_a_handoff_the_agent_was_not_given_is_refused_back_to_it():
    run = Run(swarm(3), [says("", ToolCall("h1", "transfer_to_coder", "{}")),
                         says("", ToolCall("h2", "transfer_to_you", "{}")), "I will ask planner."])
    await run.go()
    assert run.speakers == ["planner", "coder", "coder"]
    refused = run.result_of("h2")
    assert refused.error and "There is no tool named 'transfer_to_you'" in refused.output
    assert ("tool", refused.output) in [(m.role, m.content) for m in run.model.requests[2].messages]
    assert run.of(Handoff) == [Handoff(source="planner", target="coder")]


async def test_a_swarm_can_end_when_the_turn_reaches_the_person():
    run = Run(swarm(termination={"handoff": "you"}), [says("Over to you.", ("transfer_to_you", "{}"))])
    assert await run.go() == Idle("finished")
    assert run.state.finished == "planner handed off to you"


async def test_one_reply_is_enough_after_a_swarm_ends_by_handing_the_turn_to_the_person():
    run = Run(swarm(termination={"handoff": "you"}),
              [says("Which language?", ("transfer_to_you", "{}"))])
    assert await run.go() == Idle("finished")
    run.model.add(says("Rust it is. Anything else?", ToolCall("h2", "transfer_to_you", "{}")))
    # The host's answer to a reply in a run that ended by handing the person the turn:
    run.add(RunContinued(by="U1"), HumanMessage(user="U1", text="Rust, please."))
    assert await run.go() == Idle("finished")
    assert run.speakers == ["planner", "human", "planner"], "the one reply reached the planner"
    back = run.model.requests[1]
    assert back.agent == "planner" and back.messages[-1].content == "Rust, please."
    assert run.state.finished == "planner handed off to you"


# -- the human participant ----------------------------------------------------------------
async def test_the_human_in_round_robin_pauses_the_run_until_they_reply():
    team = make_team("bull", agent("you", human=True), "bear", termination={"max_messages": 4})
    run = Run(team, ["Buy."])
    assert await run.go() == AwaitHuman("you")
    assert run.speakers == ["bull"] and run.state.status == "awaiting_human"
    assert run.of(SpeakerSelected)[-1] == SpeakerSelected(agent="you", how="order")
    run.model.add("Sell.", "Buy more.")
    assert await run.say("Why buy?", user="U5", display_name="Bo") == Idle("finished")
    assert run.speakers == ["bull", "human", "bear", "bull"]
    assert ("user", "Bo", "Why buy?") in [(m.role, m.name, m.content)
                                          for m in run.model.requests[1].messages]


async def test_stop_while_waiting_for_the_person_ends_the_run():
    team = make_team("bull", agent("you", human=True), termination={"max_messages": 9})
    run = Run(team, ["Buy."])
    await run.go()
    run.add(StopRequested(by="U1"))
    assert await run.go() == Idle("finished")
    assert run.state.finished == "stopped by U1"


# -- interjections --------------------------------------------------------------------------
async def test_an_interjection_reaches_the_next_speaker_and_everyone_after():
    run = Run(debate(5), ["b1", "r1", "s1", "b2"])
    await run.step()  # bull speaks
    run.add(HumanMessage(user="U2", text="Mind the interest rates.", display_name="Cy"))
    await run.go()
    assert run.speakers == ["bull", "human", "bear", "synthesis", "bull"]
    for request in run.model.requests[1:]:
        assert ("Cy", "Mind the interest rates.") in [(m.name, m.content) for m in request.messages]


async def test_an_interjection_during_a_model_call_is_seen_by_the_next_speaker():
    run = Run(debate(3))

    def bull_thinks(request):
        # the host appends a person's message while the model is still answering
        run.add(HumanMessage(user="U2", text="Consider rates."))
        return "b1"

    run.model.add(bull_thinks, "r1")
    await run.go()
    assert "Consider rates." not in [m.content for m in run.model.requests[0].messages]
    assert "Consider rates." in [m.content for m in run.model.requests[1].messages]


async def test_an_interjection_while_an_approval_waits_is_kept_and_comes_after_the_result():
    team = make_team(agent("announcer", tools=["post_message"]), "bear", termination={"max_messages": 4})
    post = ToolCall("p1", "post_message", '{"channel": "#general", "text": "Hi"}')
    run = Run(team, [says("Posting.", post)])
    assert isinstance(await run.go(), AwaitApproval)
    run.add(HumanMessage(user="U2", text="Add an emoji?"))
    assert isinstance(decide(run.state), AwaitApproval), "a remark does not skip the approval"
    run.model.add("Posted; emoji next time.", "Looks fine.")
    await run.decide_call(True)
    after = run.model.requests[1]
    assert after.agent == "announcer"
    # a model expects a call's result straight after the call: the remark follows it
    assert [(m.role, m.content[:12]) for m in after.messages][-3:] == [
        ("assistant", "Posting."), ("tool", "This chat do"), ("user", "Add an emoji")]
    assert "Add an emoji?" in [m.content for m in run.model.requests[2].messages]


async def test_the_next_action_names_who_speaks():
    action = decide(Run(debate()).state)
    assert isinstance(action, CallModel) and action.agent == "bull"
    assert decide(Run(triage()).state) == SelectWithModel(
        ("dispatcher", "engineer", "billing", "customer"))


async def test_a_remark_made_after_the_run_finished_reaches_the_team_on_continue():
    run = Run(debate(1), ["b1", "r1"])
    await run.go()
    run.add(HumanMessage(user="U2", text="You forgot the fees."), RunContinued(by="U1"))
    await run.go()
    assert "You forgot the fees." in [m.content for m in run.model.requests[1].messages]


# -- failures pause the run; retry picks up where it stopped ----------------------------------
async def test_a_failed_model_call_pauses_and_retry_asks_the_same_agent_again():
    run = Run(debate(2), ["b1", ModelError("429 rate limited"), "r1"])
    assert await run.go() == Idle("paused")
    assert run.state.status == "paused"
    assert run.log[-1] == RunPaused(reason="429 rate limited", agent="bear")
    run.add(RunResumed(by="U1"))
    assert await run.go() == Idle("finished")
    assert run.speakers == ["bull", "bear"]
    assert [e.agent for e in run.of(SpeakerSelected)] == ["bull", "bear"], "bear is not re-chosen"


async def test_a_failed_selector_call_pauses_and_retry_chooses_again():
    run = Run(triage(1), [ModelError("timed out"), "engineer", "Rebooted."])
    assert await run.go() == Idle("paused")
    assert "choosing the next speaker failed: timed out" in run.state.paused
    run.add(RunResumed(by="U1"))
    await run.go()
    assert run.speakers == ["engineer"]


async def test_a_garbled_choice_falls_back_to_an_agent_not_the_person():
    run = Run(triage(2), ["billing", "Charged twice: refunding.", "uh, hmm", "Refund noted."])
    await run.go()
    # after billing the file's order reaches the customer, but a garbled answer skips people
    assert run.speakers == ["billing", "dispatcher"]
    chosen = run.of(SpeakerSelected)[-1]
    assert (chosen.agent, chosen.how) == ("dispatcher", "fallback")


def test_every_action_that_does_not_wait_has_a_performer():
    from threadteam.teams import engine

    def subclasses(cls: type) -> set[type]:
        return {c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))}

    waiting = {engine.Idle, engine.AwaitHuman, engine.AwaitApproval, engine.AwaitPlanReview}
    assert subclasses(engine.Action) - waiting == set(engine._PERFORMERS)
