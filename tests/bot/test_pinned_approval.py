"""A tool pinned to asking every time (run_code under the local executor) cannot be
approved for the rest of the run: not by `approve always`, not by a button."""

from __future__ import annotations

import json

import pytest

from tests.bot.helpers import say, summon, thread
from threadteam.teams.models.scripted import ScriptedModel, reply

CODER = """
name: coder
description: Runs code.
model: scripted
agents:
  - {name: coder, persona: {display_name: Coder}, system_message: Run it., tools: [run_code]}
termination: {text_mention: DONE}
"""


def code(n: int) -> object:
    return reply("", ("run_code", json.dumps({"code": f"print({n})"})))


@pytest.fixture
def local_code(tmp_path, monkeypatch):
    monkeypatch.setenv("THREADTEAM_CODE_DIR", str(tmp_path / "code"))
    monkeypatch.setenv("THREADTEAM_CODE_EXECUTOR", "local")


async def test_run_code_under_local_asks_every_time_even_after_approve_always(
        local_code, started, poster, store):
    host = await started(ScriptedModel([code(1), code(2), "DONE"]), CODER)
    key = thread()
    await host.handle(summon(key, "coder go"))
    await host.idle()
    first = [p for p in poster.posts if p.buttons]
    assert len(first) == 1 and "Approval #1" in first[0].text

    refused = await host.handle(say(key, "approve always 1"))
    assert refused.private is not None and "each use needs its own approval" in refused.private
    await host.idle()
    run_id = await store.run_for_thread(str(key))
    assert not any('"tool_always_approved"' in e for e in await store.load(run_id))

    await host.handle(say(key, "approve 1"))
    await host.idle()
    second = [p for p in poster.posts if p.buttons]
    assert len(second) == 1 and "Approval #2" in second[0].text, "the next run asks again"
    await host.handle(say(key, "approve 2"))
    await host.idle()
    assert poster.notices(key)[-1].startswith("Finished:")


def test_its_request_offers_no_approve_for_this_run_button(local_code, monkeypatch):
    from threadteam.bot.render import render
    from threadteam.bot.shapes import ThreadKey
    from threadteam.teams.events import TaskStarted, ToolCallRequested
    from threadteam.teams.spec import parse_team
    from threadteam.teams.state import RunState

    def prompt():
        state = RunState(parse_team(CODER, "coder.yaml"))
        state.apply(TaskStarted(team="coder", task="go", by="alice"))
        request = ToolCallRequested(agent="coder", call_id="c1", tool="run_code",
                                    args={"code": "print(1)"}, needs_approval=True)
        state.apply(request)
        out = render(state, request, 1, ThreadKey("t", "W", "C", "1"), "t.run", str)
        assert out is not None and out.approval is not None
        return out.approval

    assert prompt().always is False
    monkeypatch.setenv("THREADTEAM_CODE_EXECUTOR", "docker")  # there, a person may waive it
    assert prompt().always is True
