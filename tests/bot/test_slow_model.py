"""A slow model is visible in the thread: before a retry the agent says its model is slow,
through the real `openai` client against the fake OpenAI server."""

from __future__ import annotations

from tests.bot.helpers import say, summon, thread, write_teams
from tests.fakes.poster import RecordingPoster
from threadteam.bot.host import Host
from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.models import ModelPool

ASKS = """
name: asks
description: One agent on OpenAI, then the person.
model: openai:gpt-4o-mini
agents:
  - {name: asker, persona: {display_name: Asker}, system_message: Ask.}
  - {name: you, human: true}
termination: {text_mention: DONE}
"""


async def test_a_hung_attempt_is_said_in_the_thread_then_the_retry_answers(
        store, fake_openai, tmp_path):
    fake_openai.queue_hang()
    fake_openai.queue_text("Which city?")
    fake_openai.queue_text("DONE: Lisbon in May.")
    pool = ModelPool(env={"OPENAI_API_KEY": "sk-test-0123456789abcdef",
                          "OPENAI_BASE_URL": fake_openai.url,
                          "THREADTEAM_MODEL_TIMEOUT": "0.3"}, retry_base=0.001)
    poster = RecordingPoster()
    host = Host(store=store, catalog=TeamCatalog.load(write_teams(tmp_path / "t", ASKS),
                                                      strict=True),
                models=pool, poster=poster)
    await host.start()
    try:
        key = thread()
        await host.handle(summon(key, "asks plan a trip"))
        await poster.wait_for(lambda p: p.in_thread(key))
        slow = [n for n in poster.notices(key) if n.startswith("Asker: ")]
        assert len(slow) == 1 and "trying again (2 of" in slow[0], poster.notices(key)
        assert "127.0.0.1" not in slow[0]
        assert poster.in_thread(key) == [("Asker", "Which city?")]
        await host.handle(say(key, "Lisbon"))
        await poster.wait_for(lambda p: len(p.in_thread(key)) == 2)
    finally:
        await host.aclose()
        await pool.aclose()
