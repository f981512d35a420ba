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


async def test_a_new_runs_first_post_is_looked_for_only_where_another_may_have_posted_it(
        store, poster, tmp_path):
    """Looking a post up costs a rate-limited platform call (Slack allows some apps one a
    minute): only a run an earlier driver may have posted for needs it."""
    from tests.bot.helpers import make_host, write_teams

    teams_dir = write_teams(tmp_path / "teams", DEBATE)
    host = make_host(store, poster, ScriptedModel(["Bull.", "Bear.", "FINAL ANSWER: yes"]),
                     teams_dir)
    await host.start()
    key = thread(1)
    await host.handle(summon(key, "debate x"))
    await host.idle()
    await host.aclose()
    # On a store other processes share, one of them may have taken the run first and
    # died after posting: only a store of this process alone makes the first drive sure.
    assert poster.posts and any(p.unsure for p in poster.posts if p.key == key) == store.shared

    # A run whose driver died before recording its first post: the next one is not sure.
    other = thread(2)
    from threadteam.teams.events import TaskStarted, to_json
    await store.create_run("console.crashed", str(other), [to_json(TaskStarted(
        team="debate", task="y", by="alice", approvers=("alice",), at=1.0))])
    host2 = make_host(store, poster, ScriptedModel(["Bull.", "Bear.", "FINAL ANSWER: no"]),
                      teams_dir)
    await host2.start()
    await poster.wait_for(lambda p: any(s.key == other and s.notice for s in p.posts))
    await host2.idle()
    await host2.aclose()
    is_on_it = next(p for p in poster.posts if p.key == other)
    assert "is on it" in is_on_it.text and is_on_it.unsure
