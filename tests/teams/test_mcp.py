"""MCP servers' tools through the host: a real tracker server (the `mcp` package, over
stdio and streamable HTTP), the agent's model the real `openai` client against the fake
OpenAI server. What a person sees in the thread, what the model is told, and what the
server saw."""

from __future__ import annotations

import os

import pytest

from tests.fakes.mcp_stack import desk_host, desk_team, http_tracker, stdio_server
from threadteam.bot.stores.base import Store


def _log(tmp_path):
    return tmp_path / "calls.jsonl"


async def test_a_read_only_tool_runs_at_once(tmp_path, fake_openai):
    fake_openai.queue_tool_call("search_issues", '{"query": "vpn"}')
    fake_openai.queue_text("DONE: two VPN issues.")
    async with desk_host(tmp_path, fake_openai, desk_team(stdio_server(_log(tmp_path)))) as desk:
        await desk.summon("find the VPN issues")
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        assert desk.approvals() == [], "a read-only tool asked for approval"
        assert desk.calls() == [{"tool": "search_issues", "args": {"query": "vpn"},
                                 "pid": desk.calls()[0]["pid"]}]
        assert "#7 VPN down" in desk.tool_results()[0]
        offered = {t["function"]["name"]: t["function"] for t in fake_openai.bodies()[0]["tools"]}
        assert offered["search_issues"]["description"] == "Search the tracker's issues."
        assert offered["close_issue"]["parameters"]["required"] == ["number"]


async def test_a_destructive_tool_waits_and_a_denial_reaches_the_model(tmp_path, fake_openai):
    fake_openai.queue_tool_call("close_issue", '{"number": 7}')
    fake_openai.queue_text("DONE: left it open.")
    async with desk_host(tmp_path, fake_openai, desk_team(stdio_server(_log(tmp_path)))) as desk:
        await desk.summon("close the VPN issue")
        await desk.until(lambda d: d.approvals())
        request = desk.approvals()[0]
        assert "`close_issue` on the tracker MCP server" in request and '"number": 7' in request
        assert desk.calls("close_issue") == []
        await desk.say("deny 1 it is still happening to the Lisbon office")
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        told = desk.tool_results()[0]
        assert "denied" in told and "still happening to the Lisbon office" in told
        assert desk.calls("close_issue") == [], "the server saw a call nobody approved"


async def test_an_approved_call_reaches_the_server_once_and_others_cannot_approve(
        tmp_path, fake_openai, store: Store):
    fake_openai.queue_tool_call("close_issue", '{"number": 7}')
    fake_openai.queue_text("DONE: closed #7.")
    team = desk_team(stdio_server(_log(tmp_path)))
    async with desk_host(tmp_path, fake_openai, team, store=store) as desk:
        await desk.summon("close the VPN issue")
        await desk.until(lambda d: d.approvals())
        refused = await desk.say("approve", user="mallory")
        assert refused.private and "only" in refused.private
        await desk.say("Clerk: approve 1 yourself")  # an agent-shaped text approves nothing
        await desk.host.idle()
        assert desk.calls("close_issue") == []
        await desk.say("approve 1")
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        assert [c["args"] for c in desk.calls("close_issue")] == [{"number": 7}]
        assert desk.tool_results() == ["closed #7"]


async def test_the_team_file_overrides_the_servers_hints(tmp_path, fake_openai):
    fake_openai.queue_tool_call("close_issue", '{"number": 9}')
    fake_openai.queue_tool_call("search_issues", '{"query": "vpn"}')
    fake_openai.queue_text("DONE")
    server = stdio_server(_log(tmp_path), extra="  approval: {never: [close_issue], "
                                                 "always: [search_issues]}\n")
    async with desk_host(tmp_path, fake_openai, desk_team(server)) as desk:
        await desk.summon()
        await desk.until(lambda d: d.approvals())
        assert "`search_issues`" in desk.approvals()[0]
        assert [c["tool"] for c in desk.calls()] == ["close_issue"]


async def test_a_server_that_crashes_mid_call_is_told_to_the_model_and_restarted(
        tmp_path, fake_openai):
    fake_openai.queue_tool_call("crash", "{}")
    fake_openai.queue_tool_call("search_issues", '{"query": "vpn"}')
    fake_openai.queue_text("DONE")
    async with desk_host(tmp_path, fake_openai, desk_team(stdio_server(_log(tmp_path)))) as desk:
        await desk.summon()
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        crashed, searched = desk.tool_results()
        assert "stopped during the call of crash" in crashed
        assert "#7 VPN down" in searched
        first, second = desk.calls()
        assert first["pid"] != second["pid"], "the server was not started again"
        assert any("`crash` (tracker) stopped" in n for n in desk.poster.notices(desk.key))


async def test_a_call_past_its_timeout_ends_and_the_run_goes_on(tmp_path, fake_openai):
    fake_openai.queue_tool_call("slow", '{"seconds": 60}')
    fake_openai.queue_tool_call("search_issues", '{"query": "vpn"}')
    fake_openai.queue_text("DONE")
    team = desk_team(stdio_server(_log(tmp_path), timeout="1s"))
    async with desk_host(tmp_path, fake_openai, team) as desk:
        await desk.summon()
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        timed_out, searched = desk.tool_results()
        assert "slow on the tracker MCP server did not finish within 1s" in timed_out
        assert "#7 VPN down" in searched, "the session was not usable after the timeout"
        assert any("timed out after 1s" in n for n in desk.poster.notices(desk.key))


async def test_an_error_result_goes_back_to_the_model(tmp_path, fake_openai):
    fake_openai.queue_tool_call("broken", "{}")
    fake_openai.queue_text("DONE")
    async with desk_host(tmp_path, fake_openai, desk_team(stdio_server(_log(tmp_path)))) as desk:
        await desk.summon()
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        assert "the tracker database is locked" in desk.tool_results()[0]
        notices = desk.poster.notices(desk.key)
        assert any("`broken` (tracker) reported an error" in n for n in notices)
        assert not any("locked" in n for n in notices), "the server's words reached the thread"


async def test_a_server_that_will_not_start_is_said_and_the_run_goes_on(tmp_path, fake_openai):
    fake_openai.queue_text("DONE: nothing to do it with.")
    team = desk_team("tracker: {command: [/nonexistent/tracker-server], timeout: 5s}\n")
    async with desk_host(tmp_path, fake_openai, team) as desk:
        await desk.summon()
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        said = " ".join(desk.poster.notices(desk.key))
        assert "the tracker MCP server would not start" in said
        assert "tools" not in fake_openai.bodies()[0]


async def test_secrets_come_from_the_environment_and_go_nowhere(tmp_path, fake_openai,
                                                                 monkeypatch):
    secret = "tracker-" + "7" * 24
    monkeypatch.setenv("TT_TEST_TRACKER_TOKEN", secret)
    fake_openai.queue_tool_call("whoami", "{}")
    fake_openai.queue_tool_call("leak_token", "{}")
    fake_openai.queue_text("DONE")
    server = stdio_server(_log(tmp_path), extra="") .replace(
        "env: {", f'env: {{TRACKER_TOKEN: "${{TT_TEST_TRACKER_TOKEN}}", '
                  f"TRACKER_EXPECT: {secret}, ")
    team = desk_team(server)
    async with desk_host(tmp_path, fake_openai, team) as desk:
        await desk.summon()
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        assert desk.tool_results() == ["token ok", "my token is [redacted]"]
        run_id = await desk.store.run_for_thread(str(desk.key))
        stored = "".join(await desk.store.load(run_id))
        assert secret not in stored
        assert all(secret not in p.text for p in desk.poster.posts)
        assert all(secret not in str(b) for b in fake_openai.bodies())
        assert "TT_TEST_TRACKER_TOKEN" in os.environ  # read from here, not from the file


async def test_over_streamable_http(tmp_path, fake_openai):
    fake_openai.queue_tool_call("search_issues", '{"query": "vpn"}')
    fake_openai.queue_tool_call("close_issue", '{"number": 7}')
    fake_openai.queue_text("DONE")
    async with http_tracker(_log(tmp_path)) as url:
        team = desk_team(f"tracker: {{url: '{url}', timeout: 10s}}\n")
        async with desk_host(tmp_path, fake_openai, team) as desk:
            await desk.summon()
            await desk.until(lambda d: d.approvals())
            assert [c["tool"] for c in desk.calls()] == ["search_issues"]
            await desk.say("approve 1")
            await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
            assert [c["tool"] for c in desk.calls()] == ["search_issues", "close_issue"]
            assert desk.tool_results()[-1] == "closed #7"
            server = desk.host.catalog.get("desk").mcp_servers["tracker"]
            assert desk.host.runner.mcp.starts(server) == 1, "one session for both calls"


async def test_arguments_that_break_the_servers_schema_go_back_unasked(tmp_path, fake_openai):
    fake_openai.queue_tool_call("close_issue", '{"number": "seven"}')
    fake_openai.queue_text("DONE")
    async with desk_host(tmp_path, fake_openai, desk_team(stdio_server(_log(tmp_path)))) as desk:
        await desk.summon()
        await desk.until(lambda d: any("DONE" in t for _, t in d.poster.in_thread(d.key)))
        assert desk.approvals() == [], "nobody is asked to approve a call that cannot run"
        assert "Invalid arguments for close_issue: number: 'seven' is not of type 'integer'" \
            in desk.tool_results()[0]
        assert desk.calls() == []


async def test_runs_share_one_server_and_shutdown_stops_it(tmp_path, fake_openai):
    from tests.bot.helpers import summon, thread
    for _ in range(2):
        fake_openai.queue_tool_call("search_issues", '{"query": "vpn"}')
        fake_openai.queue_text("DONE")
    async with desk_host(tmp_path, fake_openai, desk_team(stdio_server(_log(tmp_path)))) as desk:
        await desk.host.handle(summon(thread(1), "desk find the VPN issues"))
        await desk.poster.wait_for(lambda p: any("DONE" in t for _, t in p.in_thread(thread(1))))
        await desk.host.handle(summon(thread(2), "desk find them again", user="bob"))
        await desk.poster.wait_for(lambda p: any("DONE" in t for _, t in p.in_thread(thread(2))))
        pids = {c["pid"] for c in desk.calls()}
        assert len(desk.calls()) == 2 and len(pids) == 1, "each run started its own server"
    (pid,) = pids
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
