"""A run belongs to the platform that started it: only a worker of that platform drives
it, and the console drives only the run it started or resumed."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.bot.helpers import make_host, summon, thread, write_teams
from tests.fakes.poster import RecordingPoster
from threadteam.bot.shapes import ThreadKey
from threadteam.teams.models.scripted import ScriptedModel

SLOW = """
name: slow
description: One agent, then the person.
model: scripted
agents:
  - {name: asker, persona: {display_name: Asker}, system_message: Ask.}
  - {name: you, human: true}
termination: {text_mention: DONE}
"""


def on(platform: str, n: int = 1) -> ThreadKey:
    return dataclasses.replace(thread(n), platform=platform)


@pytest.fixture
def teams(tmp_path):
    return write_teams(tmp_path / "teams", SLOW)


async def test_a_run_cut_off_mid_turn_is_left_to_its_own_platform(store, teams):
    first = ScriptedModel(["never said"], leftovers_ok=True)
    first.delay = 30  # the model call hangs: the process is stopped mid-turn
    console = make_host(store, RecordingPoster(), first, teams, platform="console", adopt=False)
    await console.start()
    await console.handle(summon(on("console"), "slow plan a trip"))
    await asyncio.sleep(0.1)
    await console.aclose()
    run_id = await store.run_for_thread(str(on("console")))
    assert run_id.startswith("console.")
    assert run_id in await store.active_runs(), "the cut-off run stays active for its platform"

    slack_poster, slack_model = RecordingPoster(), ScriptedModel(["wrong!"] * 3, leftovers_ok=True)
    slack = make_host(store, slack_poster, slack_model, teams, platform="slack", lease_ttl=0.2)
    chat_poster, chat_model = RecordingPoster(), ScriptedModel(["Where to?"])
    chat = make_host(store, chat_poster, chat_model, teams, platform="console", adopt=False,
                     lease_ttl=0.2)
    await slack.start()
    await chat.start()
    try:
        await asyncio.sleep(0.8)  # several sweeps and timer rounds
        assert slack_poster.posts == [] and slack_model.requests == []
        assert chat_poster.posts == [], "a new chat does not show an older run's posts"

        await chat.resume(run_id)  # `chat --resume` takes it up, in this process only
        await chat_poster.wait_for(lambda p: p.in_thread(on("console")))
        assert chat_poster.in_thread(on("console")) == [("Asker", "Where to?")]
        assert slack_poster.posts == []
    finally:
        await slack.aclose()
        await chat.aclose()


async def test_two_platforms_on_one_store_each_drive_only_their_own_runs(store, teams):
    hosts = {}
    for platform in ("slack", "discord"):
        model = ScriptedModel([f"{platform} asks"] * 10)
        hosts[platform] = (make_host(store, RecordingPoster(), model, teams, platform=platform),
                           model)
        await hosts[platform][0].start()
    try:
        for n in range(10):
            for platform, (host, _) in hosts.items():
                await host.handle(summon(on(platform, n), "slow go"))
        for host, _ in hosts.values():
            await host.idle()
        for platform, (host, _) in hosts.items():
            posts = host.poster.posts
            assert {p.key.platform for p in posts} == {platform}
            assert sorted(p.key.thread for p in posts if not p.notice) == sorted(
                str(n) for n in range(10))
            assert all(p.text == f"{platform} asks" for p in posts if not p.notice)
    finally:
        for host, _ in hosts.values():
            await host.aclose()


async def test_open_threads_are_the_platforms_unfinished_runs(store, teams):
    model = ScriptedModel(["Where to?", "Where to?", "DONE."])
    slack = make_host(store, RecordingPoster(), model, teams, platform="slack")
    await slack.start()
    try:
        for n in (1, 2):
            await slack.handle(summon(on("slack", n), "slow go"))
        await slack.idle()
        from tests.bot.helpers import say
        await slack.handle(say(on("slack", 2), "Lisbon"))  # run 2 finishes
        await slack.idle()
        assert await slack.open_threads() == [on("slack", 1)]
    finally:
        await slack.aclose()
