"""Bursts and failures around the host's work: nothing a person wrote is dropped after it
was taken, and one failure in the work loop never stops the loop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.bot.helpers import make_host, say, summon, thread, write_teams
from tests.fakes.poster import RecordingPoster
from threadteam.bot.errors import StoreError
from threadteam.bot.retry import RetryPolicy
from threadteam.teams.events import HumanMessage, from_json
from threadteam.teams.models.scripted import ScriptedModel

WAITS = """
name: waits
description: Asks the person, then waits.
model: scripted
agents:
  - {name: asker, persona: {display_name: Asker}, system_message: Ask.}
  - {name: you, human: true}
termination: {text_mention: DONE}
"""


async def test_two_hundred_replies_at_once_are_all_kept_in_order(store, poster, tmp_path):
    model = ScriptedModel(["Which city?"] + ["Noted."] * 400, leftovers_ok=True)
    host = make_host(store, poster, model, write_teams(tmp_path / "teams", WAITS))
    await host.start()
    try:
        key = thread()
        await host.handle(summon(key, "waits plan a trip", user="alice"))
        await host.idle()
        users = [f"u{i % 7}" for i in range(200)]
        handled = await asyncio.gather(*(host.handle(say(key, f"reply {i}", user=u))
                                         for i, u in enumerate(users)))
        assert all(h.taken for h in handled)
        run_id = await store.run_for_thread(str(key))
        kept = [e.text for e in map(from_json, await store.load(run_id))
                if isinstance(e, HumanMessage)]
        assert sorted(kept, key=lambda t: int(t.split()[1])) == [f"reply {i}" for i in range(200)]
        for u in set(users):  # one person's replies keep the order they were sent in
            mine = [t for t in kept if users[int(t.split()[1])] == u]
            assert mine == sorted(mine, key=lambda t: int(t.split()[1]))
        await host.idle()
    finally:
        await host.aclose()


class AckFails:
    """The test's store, whose first few queue acknowledgements fail (a store hiccup)."""

    def __init__(self, store, times: int) -> None:
        self._store, self.times, self.failed = store, times, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def ack_work(self, receipt: str) -> None:
        if self.failed < self.times:
            self.failed += 1
            raise ConnectionError("store unreachable for a moment")
        await self._store.ack_work(receipt)


async def test_the_work_loop_survives_a_failed_ack(store, poster, tmp_path):
    model = ScriptedModel(["Which city?", "Which month?", "DONE."])
    model.delay = 0.2
    flaky = AckFails(store, times=3)
    host = make_host(flaky, poster, model, write_teams(tmp_path / "teams", WAITS))
    await host.start()
    try:
        key = thread()
        await host.handle(summon(key, "waits plan a trip", user="alice"))
        await asyncio.sleep(0.05)  # the first turn is being driven: more work for it queues
        await host.handle(say(key, "somewhere warm, please"))
        await poster.wait_for(lambda p: len(poster.in_thread(key)) == 1)
        await host.handle(say(key, "Lisbon"))
        await poster.wait_for(lambda p: len(poster.in_thread(key)) == 2)
        assert flaky.failed >= 2
        await host.handle(say(key, "May"))
        await poster.wait_for(lambda p: len(poster.in_thread(key)) == 3)
        assert [t for _, t in poster.in_thread(key)] == ["Which city?", "Which month?", "DONE."]
    finally:
        await host.aclose()


class RefusesAgentMessages:
    """The test's store, refusing for good to store what one agent says (a value the
    store cannot take, a corrupt file: an error no retry cures)."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def append(self, run_id: str, expected: int, events: list[str]) -> int:
        from threadteam.bot.errors import PermanentStoreError
        if any('"agent_message"' in e for e in events):
            raise PermanentStoreError("the store cannot take this value")
        return await self._store.append(run_id, expected, events)


async def test_a_store_error_no_retry_cures_pauses_the_run_with_a_notice(store, poster, tmp_path):
    model = ScriptedModel(["Which city?"])
    host = make_host(RefusesAgentMessages(store), poster, model,
                     write_teams(tmp_path / "teams", WAITS), lease_ttl=0.3)
    await host.start()
    try:
        key = thread()
        await host.handle(summon(key, "waits plan a trip", user="alice"))
        await poster.wait_for(lambda p: len(p.notices(key)) == 2)
        assert poster.notices(key)[-1].startswith(
            "This run hit a storage error that trying again will not fix")
        run_id = await store.run_for_thread(str(key))
        assert run_id not in await store.active_runs()
        await asyncio.sleep(1.0)  # three sweeps: none drives it again
        assert len(model.requests) == 1 and len(poster.notices(key)) == 2
    finally:
        await host.aclose()


class RefusingPoster(RecordingPoster):
    """A platform that refuses agents' posts (say, a permission missing) until fixed."""

    refusing: bool = True

    async def post(self, out):
        from threadteam.bot.errors import PlatformError
        if self.refusing and not out.notice:
            raise PlatformError("Slack refused chat.postMessage (not_in_channel): invite the "
                                "bot to the channel.")
        return await super().post(out)


async def test_a_platform_refusal_pauses_the_run_with_a_notice_and_retry_goes_on(store,
                                                                                  tmp_path):
    poster = RefusingPoster()
    model = ScriptedModel(["Which city?"])
    host = make_host(store, poster, model, write_teams(tmp_path / "teams", WAITS),
                     lease_ttl=0.3)
    await host.start()
    try:
        key = thread()
        await host.handle(summon(key, "waits plan a trip", user="alice"))
        await poster.wait_for(lambda p: len(p.notices(key)) == 2)
        assert poster.notices(key)[-1] == (
            "The team could not go on: Slack refused chat.postMessage (not_in_channel): invite "
            "the bot to the channel.\nReply `retry` to try again.")
        await asyncio.sleep(1.0)  # sweeps: nothing is tried again behind the person's back
        assert len(model.requests) == 1 and len(poster.notices(key)) == 2

        poster.refusing = False
        await host.handle(say(key, "retry", user="alice"))
        await poster.wait_for(lambda p: p.in_thread(key))
        assert poster.in_thread(key) == [("Asker", "Which city?")]
    finally:
        await host.aclose()


class AppendFails:
    """The test's store, whose driver appends fail a few times (a full disk, say); with
    `landing`, each failed append lands first (the store's answer is what was lost)."""

    def __init__(self, store, times: int, landing: bool = False,
                 records: bool = False) -> None:
        self._store, self.times, self.failed, self.landing = store, times, 0, landing
        self.records = records  # the word about the outage cannot be looked up or kept either

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _down_for(self, key: str) -> bool:
        return self.records and ":store-failed:" in key and self.failed < self.times

    async def get_post(self, key: str) -> str | None:
        if self._down_for(key):
            raise StoreError("get_post failed: Connection refused")
        return await self._store.get_post(key)

    async def put_post(self, key: str, message_id: str) -> None:
        if self._down_for(key):
            raise StoreError("put_post failed: Connection refused")
        await self._store.put_post(key, message_id)

    async def append(self, run_id: str, expected: int, events: list[str]) -> int:
        if self.failed < self.times:
            self.failed += 1
            if self.landing:
                await self._store.append(run_id, expected, events)
            raise StoreError("append failed: database or disk is full")
        return await self._store.append(run_id, expected, events)


async def _asked_for_a_city(host, poster):
    """Start `host`, summon `waits` and wait until its question is posted; its thread."""
    await host.start()
    key = thread()
    await host.handle(summon(key, "waits plan a trip", user="alice"))
    await poster.wait_for(lambda p: p.in_thread(key) == [("Asker", "Which city?")], 5)
    await host.idle()
    return key


@pytest.mark.parametrize("landing", [False, True], ids=["lost", "landed"])
async def test_a_turn_the_store_fails_to_save_for_a_moment_is_saved_once_on_a_second_try(
        store, poster, tmp_path, caplog, landing):
    """A blip (a failover, a busy file): the turn is saved again after a pause, and its
    model answer is not paid for twice; if the failed try had landed, it is not doubled."""
    model = ScriptedModel(["Which city?"])
    flaky = AppendFails(store, times=1, landing=landing)
    host = make_host(flaky, poster, model, write_teams(tmp_path / "teams", WAITS))
    try:
        key = await _asked_for_a_city(host, poster)
        run_id = await store.run_for_thread(str(key))
        asked = [e for e in map(from_json, await store.load(run_id))
                 if getattr(e, "text", None) == "Which city?"]
    finally:
        await host.aclose()
    assert flaky.failed == 1 and len(model.requests) == 1 and len(asked) == 1
    assert WAITING_FOR_THE_STORE not in poster.notices(key)
    assert "stepping back" not in caplog.text and "Traceback" not in caplog.text


WAITING_FOR_THE_STORE = (
    "This run is held up: the bot's store failed (the details are in the bot's log). "
    "Everything up to here is kept, and the run goes on by itself once the store works "
    "again.")


@pytest.mark.parametrize("records", [False, True], ids=["writes", "everything"])
async def test_a_run_the_store_fails_under_says_so_once_and_goes_on_when_it_works(
        store, poster, tmp_path, caplog, records):
    """`everything`: the store cannot even look up or keep the word about the outage (Redis
    gone): the word is still said, once."""
    model = ScriptedModel(default="Which city?")
    flaky = AppendFails(store, times=3, records=records)
    host = make_host(flaky, poster, model, write_teams(tmp_path / "teams", WAITS),
                     store_retry=RetryPolicy(first_backoff=0.05, max_backoff=0.1))
    host.runner.save_again = ()  # each failure ends the turn at once
    try:
        key = await _asked_for_a_city(host, poster)
        assert flaky.failed == 3
        said = poster.notices(key)
        assert said.count(WAITING_FOR_THE_STORE) == 1  # told once, not once a try
        assert said[-1].startswith("Your turn, <@alice>")
        tries = [r.getMessage() for r in caplog.records if "trying the run again" in r.getMessage()]
        delays = [float(t.rsplit(" in ", 1)[1].removesuffix(" s")) for t in tries]
        assert len(delays) == 3  # backing off (jittered by up to a fifth), up to the most
        for delay, base in zip(delays, [0.05, 0.1, 0.1], strict=True):
            assert 0.8 * base - 0.005 <= delay <= 1.2 * base + 0.005
        assert "database or disk is full" in tries[0]
        assert "Traceback" not in caplog.text and "driving failed" not in caplog.text
        await host.handle(say(key, "Lisbon"))  # and the run goes on as ever
        await poster.wait_for(lambda p: len(p.in_thread(key)) == 2)
    finally:
        await host.aclose()


class QueueDown:
    """The test's store, unreachable for its work queue and timers until `up` is set."""

    def __init__(self, store) -> None:
        self._store, self.up, self.tries = store, asyncio.Event(), 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def next_work(self, *args, **kwargs):
        if not self.up.is_set():
            self.tries += 1
            raise StoreError("Could not reach Redis at 10.0.0.5:6379: Connection refused")
        return await self._store.next_work(*args, **kwargs)

    async def due_runs(self, now: float) -> list[str]:
        if not self.up.is_set():
            raise StoreError("Could not reach Redis at 10.0.0.5:6379: Connection refused")
        return await self._store.due_runs(now)


async def test_a_store_outage_is_logged_once_when_it_begins_and_once_when_it_ends(
        store, poster, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="threadteam.host")
    down = QueueDown(store)
    host = make_host(down, poster, ScriptedModel(["Which city?"]),
                     write_teams(tmp_path / "teams", WAITS))
    await host.start()
    try:
        async with asyncio.timeout(10):
            while down.tries < 3:  # a try a second
                await asyncio.sleep(0.05)
        down.up.set()
        key = thread()
        await host.handle(summon(key, "waits plan a trip", user="alice"))
        await poster.wait_for(lambda p: p.in_thread(key) == [("Asker", "Which city?")])
    finally:
        await host.aclose()
    said = [r.getMessage() for r in caplog.records if r.name == "threadteam.host"]
    assert said.count("reading the work queue failed (Could not reach Redis at "
                      "10.0.0.5:6379: Connection refused); trying again every 1 s until the "
                      "store works") == 1
    assert said.count("checking run time limits failed (Could not reach Redis at "
                      "10.0.0.5:6379: Connection refused); trying again every 1 s until the "
                      "store works") == 1
    assert any(m.startswith("reading the work queue works again, after ") for m in said)
    assert "Traceback" not in caplog.text
