"""A person who writes while the team's last agent is still writing is not ignored in silence."""

from __future__ import annotations

import asyncio

from tests.bot.helpers import DEBATE, say, summon, thread
from threadteam.teams.models.scripted import ScriptedModel


class Held(ScriptedModel):
    """Answers in order, but holds the final answer until `release` is set."""

    def __init__(self, replies: list[str]) -> None:
        super().__init__(replies)
        self.writing_final = asyncio.Event()
        self.release = asyncio.Event()

    async def complete(self, request, on_text=None, *, on_retry=None):
        if request.agent == "synthesis":
            self.writing_final.set()
            await self.release.wait()
        return await super().complete(request, on_text, on_retry=on_retry)


async def test_a_reply_written_during_the_final_turn_is_kept_and_the_notice_says_so(
        started, poster, store):
    model = Held(["Bull.", "Bear.", "FINAL ANSWER: yes"])
    host = await started(model, DEBATE)
    key = thread()
    await host.handle(summon(key, "debate x"))
    await asyncio.wait_for(model.writing_final.wait(), 10)
    handled = await host.handle(say(key, "Wait, what about rates?", user="bob"))
    assert handled.taken
    model.release.set()
    await host.idle()

    finished = poster.notices(key)[-1]
    assert finished.startswith("Finished:")
    assert "no agent has read it" in finished and "`continue`" in finished
    run_id = await store.run_for_thread(str(key))
    assert any("Wait, what about rates?" in raw for raw in await store.load(run_id))


async def test_a_reply_the_final_agent_read_gets_the_usual_notice(started, poster):
    host = await started(ScriptedModel(["Bull.", "Bear.", "FINAL ANSWER: yes"]), DEBATE)
    key = thread()
    await host.handle(summon(key, "debate x"))
    await host.idle()
    finished = poster.notices(key)[-1]
    assert finished.startswith("Finished:") and "no agent has read it" not in finished


async def test_continue_after_an_unread_reply_has_the_team_answer_it(started, poster):
    model = Held(["Bull.", "Bear.", "FINAL ANSWER: yes", "Rates are fine.", "Agreed.",
                  "FINAL ANSWER: still yes"])
    host = await started(model, DEBATE)
    key = thread()
    await host.handle(summon(key, "debate x"))
    await asyncio.wait_for(model.writing_final.wait(), 10)
    await host.handle(say(key, "What about rates?", user="alice"))
    model.release.set()
    await host.idle()
    await host.handle(say(key, "continue", user="alice"))
    await host.idle()
    first_after_continue = model.requests[3]
    assert any("What about rates?" in str(m) for m in first_after_continue.messages)
    assert "no agent has read it" not in poster.notices(key)[-1]
