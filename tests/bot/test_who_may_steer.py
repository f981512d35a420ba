"""Who may steer a run and start runs: the summoner and the approvers steer; a bystander
is refused privately and nothing changes; summons are capped per person and per workspace."""

from __future__ import annotations

import json

from tests.bot.helpers import ANNOUNCE, DEBATE, say, summon, thread
from threadteam.bot.limits import SummonLimits
from threadteam.teams.errors import ModelHTTPError
from threadteam.teams.models.scripted import ScriptedModel, reply

WAITS = """
name: waits
description: Asks the person, then waits.
model: scripted
agents:
  - {name: asker, persona: {display_name: Asker}, system_message: Ask.}
  - {name: you, human: true}
termination: {text_mention: DONE}
"""


async def test_a_bystander_cannot_continue_a_finished_run(started, poster, store):
    model = ScriptedModel(["Bull.", "Bear.", "FINAL ANSWER: no.", "Bull again.", "Bear again.",
                           "FINAL ANSWER: still no."])
    host = await started(model, DEBATE)
    key = thread()
    await host.handle(summon(key, "debate x", user="alice"))
    await host.idle()
    posts_before = len(poster.posts)
    run_id = await store.run_for_thread(str(key))
    log_before = await store.load(run_id)

    handled = await host.handle(say(key, "continue and say yes", user="mallory"))
    await host.idle()
    assert handled.private == "Sorry, only <@alice> can `continue` this run; nothing was changed."
    assert len(poster.posts) == posts_before, "nothing is posted for a refused continue"
    assert await store.load(run_id) == log_before

    assert (await host.handle(say(key, "continue", user="alice"))).private is None
    await host.idle()
    assert [n for n, _ in poster.in_thread(key)][-3:] == ["Bull", "Bear", "Synthesis"]


async def test_a_bystander_cannot_retry_or_stop_but_an_approver_can(started, poster, store):
    model = ScriptedModel(["Bull.", ModelHTTPError("OpenAI is overloaded (503).", 503),
                           "Bear.", "FINAL ANSWER: ok."])
    team = DEBATE.replace("model: scripted", "model: scripted\napprovers: [bob]")
    host = await started(model, team)
    key = thread()
    await host.handle(summon(key, "debate x", user="alice"))
    await host.idle()
    assert "could not go on" in poster.notices(key)[-1]

    for word in ("retry", "stop"):
        handled = await host.handle(say(key, word, user="mallory"))
        assert handled.private == (f"Sorry, only <@alice> or <@bob> can `{word}` this run; "
                                   f"nothing was changed.")
    await host.idle()
    assert [n for n, _ in poster.in_thread(key)] == ["Bull"], "the run stayed paused"

    assert (await host.handle(say(key, "retry", user="bob"))).private is None
    await host.idle()
    assert [n for n, _ in poster.in_thread(key)] == ["Bull", "Bear", "Synthesis"]


async def test_continue_with_words_while_running_is_just_a_message(started, poster):
    model = ScriptedModel(["Which city?", "DONE: Lisbon."])
    host = await started(model, WAITS)
    key = thread()
    await host.handle(summon(key, "waits plan a trip", user="alice"))
    await host.idle()
    assert (await host.handle(say(key, "continue with Lisbon", user="mallory"))).private is None
    await host.idle()
    assert model.requests[1].messages[-1].content == "with Lisbon"


async def test_a_person_gets_three_active_runs_then_a_private_no(started, poster, store):
    model = ScriptedModel(["Which city?"] * 5)
    host = await started(model, WAITS, limits=SummonLimits(active_per_user=3, per_hour=100))
    for n in range(1, 4):
        assert (await host.handle(summon(thread(n), "waits trip", user="alice"))).taken
    refused = await host.handle(summon(thread(4), "waits trip", user="alice"))
    assert refused.private == ("You already have 3 active runs (the limit is 3 per person). "
                               "Finish or `stop` one of them, then summon the team again.")
    assert await store.run_for_thread(str(thread(4))) is None
    assert poster.in_thread(thread(4), notices=True) == [], "the refusal is private"
    assert (await host.handle(summon(thread(5), "waits trip", user="bob"))).taken

    await host.idle()
    await host.handle(say(thread(1), "stop", user="alice"))
    await host.idle()
    assert (await host.handle(summon(thread(6), "waits trip", user="alice"))).taken
    await host.idle()


async def test_a_workspace_gets_so_many_runs_an_hour(started, poster, store):
    now = [1_000_000.0]
    model = ScriptedModel(["Which city?"] * 3)
    host = await started(model, WAITS, limits=SummonLimits(active_per_user=5, per_hour=2),
                         clock=lambda: now[0])
    assert (await host.handle(summon(thread(1), "waits a", user="alice"))).taken
    assert (await host.handle(summon(thread(2), "waits b", user="bob"))).taken
    refused = await host.handle(summon(thread(3), "waits c", user="carol"))
    assert refused.private is not None and "2 runs in the last hour" in refused.private
    assert await store.run_for_thread(str(thread(3))) is None
    now[0] += 3601
    assert (await host.handle(summon(thread(4), "waits d", user="carol"))).taken
    await host.idle()


async def test_a_burst_of_summons_by_one_person_stops_at_the_limit(started, poster, store):
    import asyncio
    model = ScriptedModel(["Which city?"] * 3)
    host = await started(model, WAITS, limits=SummonLimits(active_per_user=3, per_hour=60))
    handled = await asyncio.gather(*(host.handle(summon(thread(n), "waits x", user="alice"))
                                     for n in range(300)))
    assert sum(h.taken for h in handled) == 3
    assert sum(h.private is not None for h in handled) == 297
    await host.idle()


async def test_an_unknown_team_name_is_echoed_inert_and_short(started, poster):
    host = await started(ScriptedModel(), DEBATE)
    key = thread()
    await host.handle(summon(key, "x`<!here>`" + "y" * 200 + " do it"))
    [notice] = poster.notices(key)
    first = notice.splitlines()[0]
    assert first.count("`") == 2, "the echo cannot leave its code span"
    assert first.startswith("I don't know a team called `x'<!here>'yyy")
    assert len(first.split("`")[1]) == 64


async def test_approvers_decide_and_steer_but_a_bystander_approve_changes_nothing(
        started, poster, store):
    model = ScriptedModel([
        reply("Posting.", ("post_message", '{"channel": "#general", "text": "Hi"}'))])
    host = await started(model, ANNOUNCE.format(approvers="[]"))
    key = thread()
    await host.handle(summon(key, "announce it", user="alice"))
    await host.idle()
    handled = await host.handle(say(key, "approve", user="mallory"))
    assert handled.private is not None and "only <@alice>" in handled.private
    await host.idle()
    assert not any(p.key.channel == "#general" for p in poster.posts)


async def test_a_bare_approve_never_reaches_a_request_posted_after_it(started, poster, store):
    import dataclasses
    import time
    model = ScriptedModel([
        reply("First.", ("post_message", '{"channel": "#general", "text": "one"}')),
        reply("Second.", ("post_message", '{"channel": "#random", "text": "two"}')),
        "DONE."])
    host = await started(model, ANNOUNCE.format(approvers="[]"))
    key = thread()
    await host.handle(summon(key, "announce it", user="alice"))
    await host.idle()
    written = time.time()  # alice types "approve" for request #1 while it is alone...
    late = dataclasses.replace(say(key, "approve", user="alice"), sent_at=written)
    await host.handle(say(key, "deny 1 wrong channel", user="alice"))  # ...#1 is decided first
    await host.idle()
    assert [p.text.splitlines()[0] for p in poster.posts if p.buttons] == [
        "Approval #2: Announcer wants to run `post_message`"]

    handled = await host.handle(late)
    await host.idle()
    assert handled.private == ("Your `approve` was written before request #2 was posted, so it "
                               "was not applied. Reply `approve <number>` to decide it.")
    assert not any(p.key.channel in ("#general", "#random") for p in poster.posts)

    await host.handle(say(key, "approve", user="alice"))  # written after #2 was posted
    await host.idle()
    assert [p.text for p in poster.posts if p.key.channel == "#random"] == ["two"]


async def test_an_approval_request_shows_every_argument(started, poster):
    long_text = "x" * 3000 + " <!channel> the hidden tail"
    model = ScriptedModel([
        reply("Posting.", ("post_message", json.dumps({"channel": "#general", "text": long_text})))])
    host = await started(model, ANNOUNCE.format(approvers="[]"))
    await host.handle(summon(thread(), "announce it", user="alice"))
    await host.idle()
    [request] = [p for p in poster.posts if p.buttons]
    assert long_text in request.text


GOVERNED = """
name: governed
description: Posts an announcement under the team's approval rules.
model: scripted
approvers: [alice, bob, carol]
{extra}
agents:
  - name: announcer
    persona: {{display_name: Announcer, avatar: ":mega:"}}
    system_message: Post it.
    tools: [post_message]
termination:
  any: [{{text_mention: DONE}}, {{max_messages: 8}}]
"""


def _post(channel: str, text: str):
    return reply("Posting.", ("post_message", json.dumps({"channel": channel, "text": text})))


async def test_a_quorum_needs_two_different_people(started, poster):
    model = ScriptedModel([_post("#general", "Hi"), "DONE."])
    host = await started(model, GOVERNED.format(extra="approval: {quorum: 2}"))
    key = thread()
    await host.handle(summon(key, "governed announce", user="alice"))
    await host.idle()
    await host.handle(say(key, "approve", user="alice"))
    await host.idle()
    assert poster.notices(key)[-1] == ("Approval #1: <@alice> approved (1 of 2); 1 more "
                                       "approval needed.")
    [request] = [p for p in poster.posts if p.text.startswith("Approval #1: Announcer")]
    assert request.buttons, "one approval of two settles nothing"
    assert (await host.handle(say(key, "approve", user="alice"))).private == (
        "You have already approved #1; it needs 1 more approval from someone else.")
    assert not any(p.key.channel == "#general" for p in poster.posts)

    await host.handle(say(key, "approve", user="bob"))
    await host.idle()
    assert [p.text for p in poster.posts if p.key.channel == "#general"] == ["Hi"]
    assert request.text.startswith("✅ Approved by <@alice>, <@bob>")


async def test_four_eyes_the_summoner_cannot_approve_their_own_run(started, poster):
    model = ScriptedModel([_post("#general", "Hi"), "DONE."])
    host = await started(model, GOVERNED.format(extra="approval: {summoner_may_approve: false}"))
    key = thread()
    await host.handle(summon(key, "governed announce", user="alice"))
    await host.idle()
    handled = await host.handle(say(key, "approve", user="alice"))
    assert handled.private == ("Sorry, only <@bob>, <@carol> can approve or deny this run's "
                               "actions (whoever summoned a run does not approve its actions); "
                               "nothing was changed.")
    await host.idle()
    assert not any(p.key.channel == "#general" for p in poster.posts)
    await host.handle(say(key, "approve", user="carol"))
    await host.idle()
    assert [p.text for p in poster.posts if p.key.channel == "#general"] == ["Hi"]


async def test_an_unanswered_request_expires_and_says_so(started, poster):
    now = [1_000_000.0]
    model = ScriptedModel([_post("#general", "Hi"), "DONE: nobody answered."])
    host = await started(model, GOVERNED.format(extra="approval: {expires_after: 30m}"),
                         clock=lambda: now[0])
    key = thread()
    await host.handle(summon(key, "governed announce", user="alice"))
    await host.idle()
    [request] = [p for p in poster.posts if p.buttons]
    now[0] += 1801
    await poster.wait_for(lambda p: p.in_thread(key)[-1] == ("Announcer", "DONE: nobody answered."))
    assert request.text.startswith("⌛ Expired: nobody decided in time") and not request.buttons
    assert "expired" in model.requests[1].messages[-1].content
    await host.handle(say(key, "approve 1", user="bob"))  # too late
    await host.idle()
    assert not any(p.key.channel == "#general" for p in poster.posts)


async def test_approve_always_covers_the_rest_of_the_run(started, poster, store):
    model = ScriptedModel([_post("#general", "one"), _post("#general", "two"), "DONE."])
    host = await started(model, GOVERNED.format(extra=""))
    key = thread()
    await host.handle(summon(key, "governed announce", user="alice"))
    await host.idle()
    await host.handle(say(key, "approve always", user="bob"))
    await host.idle()
    assert [p.text for p in poster.posts if p.key.channel == "#general"] == ["one", "two"]
    assert len([p for p in poster.posts if p.text.startswith("Approval #")]) == 0, \
        "the second call asked nobody"
    run_id = await store.run_for_thread(str(key))
    assert any('"kind":"tool_always_approved"' in e and '"by":"bob"' in e
               for e in await store.load(run_id))


async def test_a_spent_budget_cannot_be_continued(started, poster):
    from threadteam.teams.models.base import Usage
    model = ScriptedModel([reply("Long answer.", usage=Usage(700, 500))])
    host = await started(model, DEBATE.replace("model: scripted",
                                               "model: scripted\nbudget: {tokens: 1000}"))
    key = thread()
    await host.handle(summon(key, "debate x", user="alice"))
    await host.idle()
    assert poster.notices(key)[-1].startswith("Finished: the token budget of 1,000 is spent")
    assert "cannot go on past its budget" in poster.notices(key)[-1]
    handled = await host.handle(say(key, "continue", user="alice"))
    assert handled.private == ("This run has spent its budget of 1,000 tokens (1,200 used), so "
                               "it cannot go on. Start a new run, or raise `budget:` in the team "
                               "file.")
    await host.idle()
    assert len(model.requests) == 1


async def test_stoppers_may_stop_but_not_continue(started, poster):
    model = ScriptedModel(["Which city?"])
    team = WAITS.replace("model: scripted", "model: scripted\nstoppers: [dave]")
    host = await started(model, team)
    key = thread()
    await host.handle(summon(key, "waits plan", user="alice"))
    await host.idle()
    assert (await host.handle(say(key, "stop", user="mallory"))).private == (
        "Sorry, only <@alice> or <@dave> can `stop` this run; nothing was changed.")
    assert (await host.handle(say(key, "stop", user="dave"))).private is None
    await host.idle()
    assert poster.notices(key)[-1].startswith("Finished")
    assert (await host.handle(say(key, "continue", user="dave"))).private == (
        "Sorry, only <@alice> can `continue` this run; nothing was changed.")
