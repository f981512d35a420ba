"""The hub on its own against the real tracker server: the pre-2026 protocol, where a
server asks its question from the session's task rather than the call's."""

from __future__ import annotations

import sys

from tests.fakes.mcp_stack import TRACKER
from threadteam.teams.mcp import McpHub, McpServer
from threadteam.teams.tools import Answer, Question


async def test_a_legacy_servers_question_reaches_the_call_that_is_running():
    hub = McpHub(mode="legacy")
    server = McpServer("tracker", command=(sys.executable, str(TRACKER)), timeout=20)
    asked: list[Question] = []

    async def ask(question: Question) -> Answer:
        asked.append(question)
        return Answer("accept", {"title": "Printer on fire"}, by="alice")
    try:
        outcome = await hub.call(server, "rename_issue", {"number": 3}, ask=ask)
    finally:
        await hub.aclose()
    assert outcome.text == "renamed #3 to 'Printer on fire'" and not outcome.error
    assert [q.text for q in asked] == ["What should the new title be?"]
    assert asked[0].asker == "the tracker MCP server"


async def test_a_question_with_nobody_to_ask_is_declined():
    hub = McpHub()
    server = McpServer("tracker", command=(sys.executable, str(TRACKER)), timeout=20)
    try:
        outcome = await hub.call(server, "rename_issue", {"number": 3})
    finally:
        await hub.aclose()
    assert outcome.text == "kept #3 as it was (decline)"


async def test_an_http_server_that_went_away_is_reached_again_once_it_is_back(tmp_path):
    from tests.fakes.mcp_stack import http_tracker
    hub = McpHub()
    try:
        async with http_tracker(tmp_path / "calls.jsonl") as url:
            server = McpServer("tracker", url=url, timeout=10)
            first = await hub.call(server, "search_issues", {"query": "a"})
        # The server is gone: the next call fails in words, and nothing hangs.
        try:
            await hub.call(server, "search_issues", {"query": "b"})
        except Exception as exc:
            gone = str(exc)
        else:
            gone = ""
        port = url.rsplit(":", 1)[1].split("/")[0]
        async with http_tracker(tmp_path / "calls.jsonl", port=int(port)):
            again = await hub.call(server, "search_issues", {"query": "c"})
    finally:
        await hub.aclose()
    assert "#7 VPN down" in first.text and "#7 VPN down" in again.text
    # Said as a failed call, or as a server that would not start again: whichever the
    # hub saw first, the closed stream or the refused connection.
    assert "the tracker MCP server" in gone and ("failed" in gone or "would not start" in gone)
