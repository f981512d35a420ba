"""A run the bot cannot load (its team file is gone, its log was written by a newer
version): what people typing in its thread see, and that nothing they typed is lost."""

from __future__ import annotations

import asyncio

import pytest

from tests.bot.helpers import DEBATE, press, say, summon, thread
from threadteam.teams.events import (
    AgentMessage,
    HumanMessage,
    SpeakerSelected,
    TaskStarted,
    from_json,
    to_json,
)
from threadteam.teams.models.scripted import ScriptedModel

PAIR = """
name: pair
description: One planner.
model: scripted
agents:
  - {name: planner, persona: {display_name: Planner}, system_message: Plan it.}
termination:
  any: [{text_mention: DONE}, {max_messages: 4}]
"""

GONE = ("This run cannot go on: its team `pair` is not loaded on this bot. Your message is "
        "kept: once the bot's operator has fixed that, your next message here picks the run "
        "up again, this one with it.")


async def test_messages_to_a_run_whose_team_is_gone_are_kept_and_read_once_it_is_back(
        started, store, poster):
    key = thread("offsite")
    started_at = TaskStarted(team="pair", task="Plan the offsite", by="alice", at=1.0)
    assert await store.create_run("test.offsite", str(key), [to_json(started_at)])
    host = await started(ScriptedModel(), DEBATE)  # the `pair` team file was removed

    asked = say(key, "are you there?")
    handled = await host.handle(asked)
    assert handled.taken and handled.private is None
    await host.handle(asked)  # the platform delivers it again (or the bot died before the notice)
    assert (await host.handle(say(key, "budget is 5k", user="bob"))).taken
    assert poster.notices(key) == [GONE]  # told once, not once a message
    assert poster.in_thread(key) == []  # no agent spoke
    refused = await host.handle(say(key, "stop"))
    assert refused.private == ("This run cannot go on: its team `pair` is not loaded on this "
                               "bot. Nothing was changed.")
    pressed = await host.handle(press(key, "approve", "call_1", user="bob"))
    assert pressed.private == refused.private
    await host.handle(say(key, "status", user="bob"))
    assert poster.notices(key)[-1] == ("This run cannot go on: its team `pair` is not loaded "
                                       "on this bot.")
    kept = [from_json(raw) for raw in await store.load("test.offsite", 0)]
    assert [(e.user, e.text) for e in kept if isinstance(e, HumanMessage)] == [
        ("alice", "are you there?"), ("bob", "budget is 5k")]
    assert len(kept) == 3  # the refused stop, the button and the status left no trace
    await host.aclose()

    # The operator puts the team file back: the next message picks the run up, with the
    # two that were kept meanwhile.
    model = ScriptedModel(["A plan within 5k. DONE"])
    again = await started(model, DEBATE, PAIR)
    await again.handle(say(key, "so?"))
    await again.idle()
    assert poster.in_thread(key) == [("Planner", "A plan within 5k. DONE")]
    said = " | ".join(str(m.content) for m in model.requests[0].messages)
    assert "are you there?" in said and "budget is 5k" in said and "so?" in said
    assert poster.notices(key).count(GONE) == 1



@pytest.mark.parametrize("scout", [AgentMessage(agent="scout", text="I looked around.", at=2.0),
                                   SpeakerSelected(agent="scout", how="order", at=2.0)],
                         ids=["spoke", "chosen"])
async def test_a_run_whose_team_lost_one_of_its_agents_says_so_instead_of_failing_each_turn(
        started, store, poster, caplog, scout):
    """The team file was edited under a waiting run: the agent `scout`, who spoke in the
    run (or was chosen to speak next), is gone from it. The run is stuck, and its thread
    says why; it no longer fails with a traceback in the log every time someone writes."""
    key = thread("edited")
    history = [TaskStarted(team="debate", task="Migrate?", by="alice", at=1.0), scout]
    assert await store.create_run("test.edited", str(key), [to_json(e) for e in history])
    host = await started(ScriptedModel(), DEBATE)
    assert (await host.handle(say(key, "and then?"))).taken
    await host.idle()
    assert poster.notices(key) == [
        "This run cannot go on: its team `debate` was changed in a way that no longer fits "
        "what the run has done so far. Your message is kept: once the bot's operator has "
        "fixed that, your next message here picks the run up again, this one with it."]
    assert "its history has agent 'scout', which the team no longer has" in caplog.text
    assert "Traceback" not in caplog.text and "driving failed" not in caplog.text
    kept = [from_json(raw) for raw in await store.load("test.edited", 0)]
    assert isinstance(kept[-1], HumanMessage) and kept[-1].text == "and then?"


async def test_a_reconnecting_adapter_still_hears_of_open_threads_beside_an_unreadable_run(
        started, store, poster):
    """On every reconnect an adapter asks which threads have unfinished runs (to read what
    people wrote meanwhile); a run whose last event a newer threadteam wrote must not make
    that fail for every other thread."""
    host = await started(ScriptedModel(), DEBATE)
    waiting = TaskStarted(team="pair", task="Plan", by="alice", at=1.0)
    assert await store.create_run("test.waiting", str(thread("waiting")), [to_json(waiting)])
    future = [to_json(TaskStarted(team="debate", task="Later", by="bob", at=2.0)),
              '{"kind":"from_the_future","at":3.0}']
    assert await store.create_run("test.future", str(thread("future")), future)
    assert sorted(k.thread for k in await host.open_threads()) == ["future", "waiting"]


async def test_the_latest_run_is_named_even_when_its_first_event_is_unreadable(started, store):
    """`chat --resume` must not quietly resume an older run because the latest one's first
    event is one a newer threadteam wrote: it names the latest, and why it cannot go on."""
    host = await started(ScriptedModel(), DEBATE)
    older = TaskStarted(team="debate", task="Older", by="alice", at=1.0)
    assert await store.create_run("test.older", str(thread("older")), [to_json(older)])
    assert await store.create_run("test.newer", str(thread("newer")),
                                  ['{"kind":"from_the_future","at":5.0}'])
    latest = await host.latest_run("test")
    assert latest is not None and (latest.run_id, latest.status, latest.headline) == (
        "test.newer", "unloadable",
        "its history holds an event this version of threadteam cannot read")


class _Held(ScriptedModel):
    """A scripted model that answers only once `release` is set (`called`: it was asked)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.called, self.release = asyncio.Event(), asyncio.Event()

    async def complete(self, request, on_text=None, **kwargs):
        self.called.set()
        await self.release.wait()
        return await super().complete(request, on_text, **kwargs)


async def test_a_driver_steps_back_when_a_newer_version_adds_to_its_run_mid_turn(
        started, store, poster, caplog):
    """In a rolling upgrade a newer threadteam may take a message in the thread while an
    older one waits on the model: the older one cannot read what was added, so it steps
    back (the newer one drives from there) without posting its reply or a traceback, and
    a later message here says why this version cannot go on."""
    model = _Held(["A plan. DONE"])
    host = await started(model, DEBATE, PAIR)
    key = thread("upgrade")
    assert (await host.handle(summon(key, "pair Plan the offsite"))).taken
    await asyncio.wait_for(model.called.wait(), 10)
    run_id = (await host.latest_run("test")).run_id
    await store.append_external(run_id, ['{"kind":"from_the_future","at":3.0}'])
    model.release.set()
    await host.idle()
    assert poster.in_thread(key) == []  # the reply was not posted over the newer event
    assert f"run {run_id}: an event this version cannot read was added to it (KeyError: " \
           "'from_the_future'); stepping back" in caplog.text
    assert "driving failed" not in caplog.text and "Traceback" not in caplog.text
    assert (await host.handle(say(key, "so?"))).taken
    assert poster.notices(key)[-1].startswith(
        "This run cannot go on: its history holds an event this version of threadteam "
        "cannot read. Your message is kept")
