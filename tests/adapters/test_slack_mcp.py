"""An MCP server's question mid-call, answered in a Slack thread: the real slack_bolt /
slack_sdk against the fake Slack, a real tracker MCP server over stdio, the agent's model
the real `openai` client against the fake OpenAI server."""

from __future__ import annotations

import json

from tests.fakes.mcp_stack import desk_team, stdio_server
from tests.fakes.slack import ALICE, BOT_USER, MALLORY, wait_until

BOT = f"<@{BOT_USER}>"


async def test_a_servers_question_is_answered_by_an_approver_in_the_thread(
        stack_factory, fake_openai, tmp_path) -> None:
    log = tmp_path / "calls.jsonl"
    team = desk_team(stdio_server(log, extra="  approval: {never: [rename_issue]}\n"))
    fake_openai.queue_tool_call("rename_issue", '{"number": 7}')
    fake_openai.queue_text("DONE: renamed #7.")
    s = await stack_factory("http", teams={"desk": team}, model_env={
        "OPENAI_API_KEY": "sk-test-" + "0" * 16, "OPENAI_BASE_URL": fake_openai.url})
    ts = await s.fake.say(ALICE, f"{BOT} desk rename issue 7")
    question = await wait_until(
        lambda: [m for m in s.thread(ts) if "What should the new title be?" in m["text"]],
        20, "the server's question in the thread")
    assert question[0].get("username") == "Clerk"
    assert question[0]["text"].startswith(
        f"❓ The tracker MCP server asks <@{ALICE}>: What should the new title be?")

    await s.fake.say(MALLORY, "Pwned by mallory", thread_ts=ts)  # not an approver of this run
    await s.adapter.settle()
    await s.fake.say(ALICE, "VPN down in the Lisbon office", thread_ts=ts)
    await s.finished(ts, within=20)

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["args"] for c in calls if c["tool"] == "rename_issue"] == [
        {"number": 7, "title": "VPN down in the Lisbon office"}]
    told = [m["content"] for m in fake_openai.bodies()[-1]["messages"] if m["role"] == "tool"]
    assert told == ["renamed #7 to 'VPN down in the Lisbon office'"]
