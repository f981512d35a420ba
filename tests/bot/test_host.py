"""The host end to end on real stores: what people in a thread see and what they can do."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.bot.helpers import ANNOUNCE, DEBATE, make_host, press, say, summon, thread, write_teams
from tests.fakes.waiting import wait_until
from threadteam.bot.runner import LONG_LOG
from threadteam.teams.errors import ModelHTTPError
from threadteam.teams.events import HumanMessage, TaskStarted, from_json, to_json
from threadteam.teams.models.scripted import ScriptedModel, reply


async def test_three_personas_post_in_order_until_final_answer(started, poster):
    model = ScriptedModel(["Growth!", "Risk!", "FINAL ANSWER: do it slowly."])
    host = await started(model, DEBATE)
    key = thread()
    await host.handle(summon(key, "debate Should we migrate billing to Postgres?"))
    await host.idle()
    assert poster.in_thread(key) == [("Bull", "Growth!"), ("Bear", "Risk!"),
                                     ("Synthesis", "FINAL ANSWER: do it slowly.")]
    assert "Finished" in poster.notices(key)[-1]
    assert model.requests[0].messages[0].content == "Should we migrate billing to Postgres?"
    assert [k for k, _ in poster.working_calls] == [key] * 3
    assert [(name, text) for k, name, text in poster.streamed if k == key] == [
        ("Bull", "Growth!"), ("Bear", "Risk!"), ("Synthesis", "FINAL ANSWER: do it slowly.")]
    model.assert_used()


async def test_unknown_team_lists_teams_and_missing_task_explains_usage(started, poster):
    host = await started(ScriptedModel(), DEBATE)
    assert host.check_summon("debat Postgres?").startswith("I don't know a team called `debat`")
    await host.handle(summon(thread(1), "debat Postgres?"))
    await host.handle(summon(thread(2), "debate"))
    [listing] = poster.notices(thread(1))
    assert "`debate`" in listing and "For example" in listing
    [usage] = poster.notices(thread(2))
    assert "debate <task>" in usage
    assert await host.store.run_for_thread(str(thread(1))) is None


async def test_interjection_reaches_the_next_speaker_and_is_kept(started, poster):
    model = ScriptedModel(["Bull opens.", "Bear answers.", "FINAL ANSWER: fine."])
    model.delay = 0.05
    host = await started(model, DEBATE)
    key = thread()
    await host.handle(summon(key, "debate Postgres?"))
    await asyncio.sleep(0.01)  # bull's model call is in flight
    await host.handle(say(key, "What about the migration downtime?"))
    await host.idle()
    seen_by_bear = model.requests[1].messages
    assert any(m.content == "What about the migration downtime?" and m.role == "user"
               for m in seen_by_bear)
    assert poster.in_thread(key)[-1][0] == "Synthesis"


async def test_a_reply_delivered_twice_is_taken_once(started, poster):
    model = ScriptedModel(["One.", "Two.", "FINAL ANSWER: three."])
    host = await started(model, DEBATE)
    key = thread()
    first = summon(key, "debate Postgres?")
    await host.handle(first)
    await host.handle(first)
    await host.idle()
    assert len(poster.in_thread(key)) == 3
    model.assert_used()


async def test_approve_by_reply_runs_the_tool_and_settles_the_request(started, poster):
    model = ScriptedModel([
        reply("Posting now.", ("post_message", '{"channel": "#general", "text": "Hi all"}')),
        "DONE: posted."])
    host = await started(model, ANNOUNCE.format(approvers="[]"))
    key = thread()
    await host.handle(summon(key, "announce the launch", user="alice"))
    await host.idle()
    [request] = [p for p in poster.posts if p.buttons]
    assert request.name == "Announcer" and "post_message" in request.text
    assert "approve 1" in request.text
    assert not any(p.key.channel == "#general" for p in poster.posts)

    assert (await host.handle(say(key, "approve", user="alice"))).private is None
    await host.idle()
    [announcement] = [p for p in poster.posts if p.key.channel == "#general"]
    assert announcement.text == "Hi all" and announcement.name == "Announcer"
    assert request.edited and not request.buttons
    assert request.text.startswith("✅ Approved by <@alice>")
    assert poster.in_thread(key)[-1] == ("Announcer", "DONE: posted.")
    assert "Posted to #general" in model.requests[1].messages[-1].content


async def test_deny_with_reason_goes_back_to_the_agent(started, poster):
    model = ScriptedModel([
        reply("", ("post_message", '{"channel": "#general", "text": "Hi"}')),
        "DONE: not posted, a person said no."])
    host = await started(model, ANNOUNCE.format(approvers="[]"))
    key = thread()
    await host.handle(summon(key, "announce it"))
    await host.idle()
    await host.handle(say(key, "deny wrong channel"))
    await host.idle()
    tool_result = model.requests[1].messages[-1]
    assert tool_result.role == "tool" and "wrong channel" in tool_result.content
    assert not any(p.key.channel == "#general" for p in poster.posts)
    [request] = [p for p in poster.posts if "post_message" in p.text]
    assert request.text.startswith("❌ Denied by <@alice>: wrong channel")


async def test_only_approvers_may_decide_and_agents_cannot(started, poster):
    model = ScriptedModel([
        reply("", ("post_message", '{"channel": "#general", "text": "Hi"}')), "DONE"])
    host = await started(model, ANNOUNCE.format(approvers='[carol, "role:Moderators"]'))
    key = thread()
    await host.handle(summon(key, "announce it", user="alice"))
    await host.idle()
    [request] = [p for p in poster.posts if p.buttons]
    call_id = "call_0_post_message"
    refusal = (await host.handle(press(key, "approve", call_id, user="mallory"))).private
    assert refusal and "only <@carol>, members of Moderators" in refusal
    refusal = (await host.handle(say(key, "approve", user="alice"))).private  # the summoner is not listed
    assert refusal and "nothing was changed" in refusal
    await host.idle()
    assert request.buttons and not request.edited
    assert (await host.handle(press(key, "approve", call_id, user="dan",
                                   roles=("Moderators",)))).private is None
    await host.idle()
    assert request.text.startswith("✅ Approved by <@dan>")
    assert (await host.handle(press(key, "deny", call_id, user="carol"))).private == \
        "That request has already been decided."


async def test_several_pending_approvals_are_picked_by_number(started, poster):
    model = ScriptedModel([
        reply("Two posts.", ("post_message", '{"channel": "#a", "text": "A"}'),
              ("post_message", '{"channel": "#b", "text": "B"}')),
        "DONE"])
    host = await started(model, ANNOUNCE.format(approvers="[]"))
    key = thread()
    await host.handle(summon(key, "announce twice"))
    await host.idle()
    await host.handle(say(key, "approve"))
    assert "Several approvals are pending" in poster.notices(key)[-1]
    await host.handle(say(key, "deny 2 not that one"))
    await host.handle(say(key, "approve 1"))
    await host.idle()
    assert [p.key.channel for p in poster.posts if p.key.thread == ""] == ["#a"]


async def test_model_failure_pauses_and_retry_carries_on(started, poster):
    model = ScriptedModel(["Bull.", ModelHTTPError("OpenAI is overloaded (503).", 503),
                           "Bear.", "FINAL ANSWER: ok."])
    host = await started(model, DEBATE)
    key = thread()
    await host.handle(summon(key, "debate x"))
    await host.idle()
    assert "Bear could not go on: OpenAI is overloaded (503)." in poster.notices(key)[-1]
    assert "retry" in poster.notices(key)[-1]
    await host.handle(say(key, "retry"))
    await host.idle()
    assert [n for n, _ in poster.in_thread(key)] == ["Bull", "Bear", "Synthesis"]


async def test_stop_then_continue_with_instructions(started, poster):
    model = ScriptedModel(["Bull.", "Bear.", "Synthesis, no conclusion yet.",
                           ModelHTTPError("OpenAI is overloaded (503).", 503)])
    host = await started(model, DEBATE)
    key = thread()
    await host.handle(summon(key, "debate x"))
    await host.idle()
    await host.handle(say(key, "stop"))  # after 3 turns the run is paused: it waits on nothing
    await host.idle()
    assert "stopped by alice" in poster.notices(key)[-1]
    assert "already finished" in (await _reply(host, poster, key, "stop"))
    model.add("Bull again.", "Bear again.", "FINAL ANSWER: done.")
    await host.handle(say(key, "continue focus on costs"))
    await host.idle()
    assert any(m.content == "focus on costs" for m in model.requests[-1].messages)
    assert poster.in_thread(key)[-1] == ("Synthesis", "FINAL ANSWER: done.")


async def _reply(host, poster, key, text) -> str:
    await host.handle(say(key, text))
    return poster.notices(key)[-1]


async def test_status_and_help(started, poster):
    model = ScriptedModel([reply("", ("post_message", '{"channel": "#a", "text": "A"}'))])
    host = await started(model, ANNOUNCE.format(approvers="[]"))
    key = thread()
    await host.handle(summon(key, "announce the launch"))
    await host.idle()
    status = await _reply(host, poster, key, "STATUS")
    assert "waiting for approval" in status and "Pending approval #1" in status
    assert "tokens:" in status
    assert "`retry`" in await _reply(host, poster, key, "help")


async def test_waiting_runs_hold_no_task_and_many_runs_overlap(started, poster):
    in_flight = peak = 0
    ten_at_once = asyncio.Event()

    async def slow(request):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if peak >= 10:
            ten_at_once.set()
        # Each call waits until ten are under way at once (they can be only if waiting
        # runs hold nothing up), or gives up after a while so the test fails, not hangs.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ten_at_once.wait(), 5)
        in_flight -= 1
        return reply("FINAL ANSWER: yes" if request.agent == "synthesis" else "point")

    class Concurrent(ScriptedModel):
        async def complete(self, request, on_text=None, *, on_retry=None):
            self.requests.append(request)
            return await slow(request)

    host = await started(Concurrent(), DEBATE)
    keys = [thread(i) for i in range(20)]
    for key in keys:
        await host.handle(summon(key, "debate x"))
    await host.idle()
    assert peak >= 10, "runs waiting on a model must not hold up other runs"
    assert all(len(poster.in_thread(k)) == 3 for k in keys)
    assert host._driving == {}


async def test_a_resumed_run_posts_what_a_crashed_driver_left_out_once(store, poster, tmp_path):
    from threadteam.teams.events import AgentMessage, SpeakerSelected, to_json

    teams_dir = write_teams(tmp_path / "teams", DEBATE)
    model = ScriptedModel(["Bull.", "Bear.", "FINAL ANSWER: x"])
    host = make_host(store, poster, model, teams_dir)
    await host.start()
    key = thread()
    await host.handle(summon(key, "debate x"))
    await host.idle()
    await host.aclose()
    run_id = await store.run_for_thread(str(key))
    before = len(poster.posts)
    # A driver appended a message and died before posting it.
    log = await store.load(run_id)
    await store.append(run_id, len(log), [to_json(SpeakerSelected(agent="bull")),
                                          to_json(AgentMessage(agent="bull", text="Late words."))])
    await store.set_active(run_id, True)
    host2 = make_host(store, poster, ScriptedModel(), teams_dir)
    host3 = make_host(store, poster, ScriptedModel(), teams_dir)
    await host2.start()  # two processes resume it at once: the lease lets one drive
    await host3.start()
    await poster.wait_for(lambda p: len(p.posts) > before)
    async with asyncio.timeout(10):
        while await store.active_runs() or host2._driving or host3._driving:
            await asyncio.sleep(0.01)
    await host2.aclose()
    await host3.aclose()
    assert [p.text for p in poster.posts[before:]] == ["Late words."]


RELAY = """
name: relay
description: An agent and you take turns.
model: scripted
agents:
  - {name: alpha, persona: {display_name: Alpha}, system_message: Say something.}
  - {name: you, human: true}
termination: {max_messages: 4}
"""


class _SlowAcks:
    """The test's store, its work-queue acks taking a while (as over a slow network)."""

    def __init__(self, store) -> None:
        self._store = store
        self.acking = asyncio.Event()

    async def ack_work(self, receipt: str) -> None:
        self.acking.set()
        await asyncio.sleep(0.05)
        await self._store.ack_work(receipt)
        self.acking.clear()

    def __getattr__(self, name: str):
        return getattr(self._store, name)


async def test_a_reply_arriving_while_the_last_turn_is_acked_is_not_dropped(store, poster, tmp_path):
    slow = _SlowAcks(store)
    host = make_host(slow, poster, ScriptedModel(["First.", "Second."]),
                     write_teams(tmp_path / "teams", RELAY))
    await host.start()
    try:
        key = thread()
        await host.handle(summon(key, "relay Plan the offsite."))
        await wait_until(slow.acking.is_set, what="the first turn's ack")
        await host.handle(say(key, "Keep it cheap."))  # the run is still marked as driven
        await host.idle()
        assert poster.in_thread(key) == [("Alpha", "First."), ("Alpha", "Second.")]
    finally:
        await host.aclose()


TIMED = """
name: timed
description: Asks you, or asks to post; gives up after a second.
model: scripted
agents:
  - name: alpha
    persona: {display_name: Alpha}
    system_message: Ask.
    tools: [post_message]
  - {name: you, human: true}
termination:
  any: [{timeout: 1s}, {max_messages: 10}]
"""


def _timed_out(key):
    return lambda p: any("time limit of 1 s reached" in n for n in p.notices(key))


async def test_a_run_waiting_for_a_person_ends_when_its_time_limit_passes(started, poster):
    model = ScriptedModel(["Which venue?"])
    host = await started(model, TIMED)
    key = thread()
    await host.handle(summon(key, "timed Plan the offsite."))
    await host.idle()
    assert (await host.runner.load(await host.store.run_for_thread(str(key)))).state.status \
        == "awaiting_human"
    await poster.wait_for(_timed_out(key), timeout=10)  # nobody answered
    await host.idle()
    assert poster.notices(key)[-1].startswith("Finished: time limit of 1 s reached")
    assert len(model.requests) == 1  # no one was asked again
    model.assert_used()


async def test_an_approval_pending_at_the_time_limit_is_denied_and_its_buttons_go(started, poster):
    model = ScriptedModel([reply("May I?", ("post_message", '{"channel": "#general", "text": "Hi"}'))])
    host = await started(model, TIMED)
    key = thread()
    await host.handle(summon(key, "timed Announce it."))
    await host.idle()
    [request] = [p for p in poster.posts if p.buttons]
    await poster.wait_for(_timed_out(key), timeout=10)
    await host.idle()
    assert request.edited and not request.buttons
    assert request.text.startswith("❌ Denied: the run's time limit was reached")
    assert not any(p.key.channel == "#general" for p in poster.posts)
    state = (await host.runner.load(await host.store.run_for_thread(str(key)))).state
    [call_id] = state.calls
    late = (await host.handle(press(key, "approve", call_id))).private  # a click after the limit
    assert late == "That request has already been decided."
    assert state.status == "finished" and len(model.requests) == 1


async def test_a_time_limit_passing_while_the_bot_is_down_ends_the_run_on_start(
        store, poster, tmp_path):
    teams = write_teams(tmp_path / "teams", TIMED)
    first = make_host(store, poster, ScriptedModel(["Which venue?"]), teams)
    await first.start()
    key = thread()
    await first.handle(summon(key, "timed Plan the offsite."))
    await first.idle()
    await first.aclose()
    await asyncio.sleep(1.2)  # the limit passes while no process runs
    second = make_host(store, poster, ScriptedModel([]), teams)
    await second.start()
    try:
        await poster.wait_for(_timed_out(key), timeout=10)
    finally:
        await second.aclose()


class _Watched:
    """The test's store, marking when a run's log has been read."""

    def __init__(self, store) -> None:
        self._store, self.read = store, False

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def load(self, run_id: str, start: int = 0) -> list[str]:
        raw = await self._store.load(run_id, start)
        self.read = True
        return raw


async def test_a_long_run_is_folded_while_the_bot_goes_on_serving_others(started, store):
    """A run of thousands of events is parsed and folded off the event loop: meanwhile
    the loop keeps turning (other runs, acks); folded on it, it would not turn at all
    between the log's arrival and the fold's end."""
    host = await started(ScriptedModel([]), DEBATE)
    events = [TaskStarted(team="debate", task="a long day", by="alice", at=1.0)]
    events += [HumanMessage(user="alice", text=f"note {i}", at=2.0 + i) for i in range(5000)]
    assert await store.create_run("long-run", str(thread("long")), [to_json(e) for e in events])
    host.runner.store = watched = _Watched(store)
    turns = 0

    async def turning() -> None:
        nonlocal turns
        while True:
            turns += watched.read
            await asyncio.sleep(0)

    ticker = asyncio.create_task(turning())
    try:
        loaded = await host.runner.load("long-run")
    finally:
        ticker.cancel()
    assert loaded is not None and loaded.key == thread("long")
    assert loaded.state.length == 5001 and loaded.events[-1] == events[-1]
    # On the loop: at most the pass that hands the log over. Off it: the loop has the
    # interpreter a switch interval at a time while the fold runs.
    assert turns > 20, turns


@pytest.mark.parametrize("length", [3, LONG_LOG + 10], ids=["short", "long"])
async def test_a_run_whose_log_this_version_cannot_read_is_left_alone(
        started, store, poster, caplog, length):
    """An event of a kind this version does not know (a newer threadteam wrote it, then
    the bot was downgraded): the run is reported and left as it is, folded on the loop or
    off it, and the bot goes on serving everyone else."""
    model = ScriptedModel(["Growth!", "Risk!", "FINAL ANSWER: do it slowly."])
    host = await started(model, DEBATE)
    events = [TaskStarted(team="debate", task="from the future", by="alice", at=1.0)]
    events += [HumanMessage(user="alice", text=f"note {i}", at=2.0 + i) for i in range(length - 2)]
    raw = [to_json(e) for e in events] + ['{"kind":"from_the_future","at":9999.0}']
    assert await store.create_run("future-run", str(thread("future")), raw)
    await host.handle(say(thread("future"), "are you there?"))
    await host.handle(summon(thread("today"), "debate Should we migrate?"))
    await host.idle()
    assert await host.runner.load("future-run") is None
    assert [r.getMessage() for r in caplog.records if "cannot read" in r.getMessage()][-1] == (
        "run future-run: its log holds an event this version cannot read "
        "(KeyError: 'from_the_future'); the run is left as it is")
    assert poster.in_thread(thread("future")) == []
    # The thread is told why in its own words, with none of the log's detail.
    assert poster.notices(thread("future")) == [
        "This run cannot go on: its history holds an event this version of threadteam cannot "
        "read. Your message is kept: once the bot's operator has fixed that, your next message "
        "here picks the run up again, this one with it."]
    assert from_json((await store.load("future-run", length))[0]).text == "are you there?"
    assert poster.in_thread(thread("today"))[-1] == ("Synthesis", "FINAL ANSWER: do it slowly.")
