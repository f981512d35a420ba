"""An MCP server asks the run's people a question mid-call (elicitation): the question is
posted in the thread, an approver's reply answers it, anyone else's does not, and a call
cut off by a restart ends with a clear result to the model."""

from __future__ import annotations

from tests.fakes.mcp_stack import desk_host, desk_team, stdio_server

NO_APPROVAL = "  approval: {never: [rename_issue]}\n"


def _team(tmp_path) -> str:
    return desk_team(stdio_server(tmp_path / "calls.jsonl", extra=NO_APPROVAL))


def _question(desk) -> list[str]:
    return [t for n, t in desk.poster.in_thread(desk.key) if "❓" in t]


async def test_an_approver_answers_and_the_server_gets_the_answer(tmp_path, fake_openai):
    fake_openai.queue_tool_call("rename_issue", '{"number": 7}')
    fake_openai.queue_text("DONE: renamed.")
    async with desk_host(tmp_path, fake_openai, _team(tmp_path)) as desk:
        await desk.summon("rename #7")
        await desk.until(lambda d: _question(d))
        (asked,) = _question(desk)
        assert "The tracker MCP server asks <@alice>: What should the new title be?" in asked
        assert "title (text, required)" in asked and "`decline` / `cancel`" in asked
        await desk.host.idle(limit=5)  # a run waiting on a person's answer is idle
        assert await desk.host.thread_status(desk.key) == "awaiting_human"
        not_theirs = await desk.say("Hacked", user="mallory")
        assert not_theirs.private is None  # an ordinary message of the run, not an answer
        answered = await desk.say("VPN down in Lisbon")
        assert answered.taken
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        assert [c["args"] for c in desk.calls("rename_issue")] == [
            {"number": 7, "title": "VPN down in Lisbon"}]
        assert desk.tool_results() == ["renamed #7 to 'VPN down in Lisbon'"]


async def test_decline_is_passed_on(tmp_path, fake_openai):
    fake_openai.queue_tool_call("rename_issue", '{"number": 7}')
    fake_openai.queue_text("DONE: kept.")
    async with desk_host(tmp_path, fake_openai, _team(tmp_path)) as desk:
        await desk.summon("rename #7")
        await desk.until(lambda d: _question(d))
        await desk.say("decline")
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        assert [c["args"] for c in desk.calls("rename_issue")] == [
            {"number": 7, "action": "decline"}]


async def test_a_call_cut_off_by_a_restart_ends_with_a_clear_result(tmp_path, fake_openai):
    fake_openai.queue_tool_call("rename_issue", '{"number": 7}')
    fake_openai.queue_text("DONE: I will ask again later.")
    from threadteam.bot.stores.sqlite import SQLiteStore
    store = SQLiteStore(str(tmp_path / "shared.sqlite3"))
    await store.start()
    try:
        async with desk_host(tmp_path / "a", fake_openai, _team(tmp_path), store=store) as first:
            await first.summon("rename #7")
            await first.until(lambda d: _question(d))
        # The process ended with the question open; the next one picks the run up.
        async with desk_host(tmp_path / "b", fake_openai, _team(tmp_path), store=store) as desk:
            await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
            (told,) = desk.tool_results()
            assert "restarted while this call waited for a person's answer" in told
            assert desk.calls("rename_issue") == [], "the call was not made again"
            assert _question(desk) == [], "the question was not asked again"
            assert any("`rename_issue` was waiting for an answer when the bot restarted" in n
                       for n in desk.poster.notices(desk.key))
    finally:
        await store.aclose()


def test_a_servers_words_cannot_ping_anyone():
    from threadteam.bot.runner import _said_by_server
    said = _said_by_server("Ping <!channel> and <@U0BOSS> and @everyone", 1000)
    assert "<" not in said and "@everyone" not in said and "@here" not in said


async def test_stop_cancels_an_open_question_and_stops_the_run(tmp_path, fake_openai):
    fake_openai.queue_tool_call("rename_issue", '{"number": 7}')
    async with desk_host(tmp_path, fake_openai, _team(tmp_path)) as desk:
        await desk.summon("rename #7")
        await desk.until(lambda d: _question(d))
        refused = await desk.say("stop", user="mallory")  # neither summoner nor approver
        assert refused.private is not None and "stop" in refused.private
        assert desk.calls("rename_issue") == [] and desk.host.runner.questions.waiting(
            str(desk.key)), "the question is still open and the run goes on"
        await desk.say("stop")
        await desk.until(lambda d: any(n.startswith("Finished") for n in
                                       d.poster.notices(d.key)))
        assert [c["args"] for c in desk.calls("rename_issue")] == [
            {"number": 7, "action": "cancel"}]
        assert len(fake_openai.bodies()) == 1, "the model was not asked again after the stop"
