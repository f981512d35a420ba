"""Starting `threadteam run slack`: one clear line for a missing or refused token, no traceback."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack, wait_until
from threadteam.adapters.slack import SlackAdapter, SlackConfig
from threadteam.bot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("env", "message"), [
    ({}, "SLACK_BOT_TOKEN is not set"),
    ({"SLACK_BOT_TOKEN": "xoxp-" + "user-token"}, "SLACK_BOT_TOKEN must be a bot token"),
    ({"SLACK_BOT_TOKEN": BOT_TOKEN}, "SLACK_SIGNING_SECRET is not set"),
    ({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": "xoxb-wrong"},
     "SLACK_APP_TOKEN must be an app-level token"),
    ({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": "s", "SLACK_API_URL": "localhost"},
     "SLACK_API_URL must be an http(s) URL"),
])
def test_settings_name_the_variable_that_is_wrong(env, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        SlackConfig.from_env(env)


def test_socket_mode_needs_no_signing_secret() -> None:
    config = SlackConfig.from_env({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN})
    assert config.socket_mode


async def test_a_refused_bot_token_says_so(fake_slack: FakeSlack) -> None:
    adapter = SlackAdapter(SlackConfig("xoxb-revoked", SIGNING_SECRET, api_url=fake_slack.api_url))
    with pytest.raises(ConfigError, match=r"^SLACK_BOT_TOKEN was refused by Slack \(invalid_auth\)$"):
        await adapter.connect()


async def test_a_refused_app_token_says_so(fake_slack: FakeSlack) -> None:
    adapter = SlackAdapter(SlackConfig(BOT_TOKEN, app_token="xapp-1-revoked",
                                       api_url=fake_slack.api_url))
    with pytest.raises(ConfigError, match=r"SLACK_APP_TOKEN was refused by Slack \(invalid_auth\)"):
        await adapter.start(host=None, port=0)  # type: ignore[arg-type]
    assert fake_slack.sockets == []


async def _cli(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadteam.adapters.cli", "run", "slack", *args, cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_cli_prints_one_line_for_a_refused_token(fake_slack: FakeSlack, tmp_path) -> None:
    env = {**fake_slack.env(), "SLACK_BOT_TOKEN": "xoxb-revoked",
           "THREADTEAM_STORE": f"sqlite:///{tmp_path / 'runs.sqlite3'}"}
    proc = await _cli(env, "--port", "0")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode().strip() == ("threadteam: SLACK_BOT_TOKEN was refused by Slack "
                                    "(invalid_auth)")


async def test_cli_prints_one_line_for_a_missing_token(tmp_path) -> None:
    proc = await _cli({"THREADTEAM_STORE": f"sqlite:///{tmp_path / 'runs.sqlite3'}"})
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("threadteam: SLACK_BOT_TOKEN is not set")


async def test_cli_serves_http_until_terminated(fake_slack: FakeSlack, tmp_path) -> None:
    import socket

    with socket.socket() as probe:  # a free port for the child to take
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**fake_slack.env(), "THREADTEAM_STORE": f"sqlite:///{tmp_path / 'runs.sqlite3'}",
           "THREADTEAM_MODEL": "rehearsal"}
    proc = await _cli(env, "--port", str(port), "--bind", "127.0.0.1")
    try:
        async def healthy() -> bool:
            try:
                async with aiohttp.ClientSession() as session, \
                        session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        ok = False
        for _ in range(600):  # a cold start on a busy machine can take seconds
            if ok := await healthy():
                break
            await asyncio.sleep(0.05)
        assert ok, "the HTTP endpoint never came up"
        await wait_until(lambda: fake_slack.calls_to("auth.test"))
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "serving Slack as @threadteam (HTTP on port" in err.decode()
    assert "Traceback" not in err.decode()


def test_the_manifest_asks_for_what_the_adapter_uses() -> None:
    import yaml

    manifest = yaml.safe_load((ROOT / "slack_manifest.yaml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "chat:write.customize", "channels:history",
            "groups:history", "im:history", "commands", "reactions:write", "users:read",
            "usergroups:read", "channels:read", "groups:read"} <= scopes
    settings = manifest["settings"]
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "app_mention", "message.channels", "message.groups", "message.im"}
    assert settings["interactivity"]["is_enabled"] and settings["socket_mode_enabled"]
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/team"]
