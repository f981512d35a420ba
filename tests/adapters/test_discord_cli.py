"""`threadteam run discord`: the invite URL, sharding, and one clear line for what to fix."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import discord
import pytest

from tests.fakes.discord import ALICE, CHANNEL_ID, FakeDiscord, wait_until
from threadteam.adapters.discord import DiscordAdapter
from threadteam.adapters.discord.cli import application_id
from threadteam.bot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


async def threadteam(*args: str, env: dict[str, str], within: float = 30) -> tuple[int, str, str]:
    """Run the real CLI in a subprocess (the fake keeps serving on this loop meanwhile)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "OPENAI_",
                                                                            "ANTHROPIC_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadteam.adapters.cli", *args, cwd=ROOT, env={**full_env, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), within)
    return proc.returncode or 0, out.decode(), err.decode()


def token_for(app_id: int) -> str:
    head = base64.b64encode(str(app_id).encode()).decode().rstrip("=")
    return f"{head}.GabcDE.secretpart"


async def test_print_invite_has_the_scopes_and_permissions() -> None:
    code, out, _ = await threadteam("run", "discord", "--print-invite",
                                    env={"DISCORD_BOT_TOKEN": token_for(123456789012345678)})
    assert code == 0
    query = parse_qs(urlsplit(out.strip()).query)
    assert query["client_id"] == ["123456789012345678"]
    assert query["scope"] == ["bot applications.commands"]
    perms = discord.Permissions(int(query["permissions"][0]))
    assert perms == discord.Permissions(
        send_messages=True, send_messages_in_threads=True, create_public_threads=True,
        manage_webhooks=True, read_message_history=True, add_reactions=True,
        use_application_commands=True)


@pytest.mark.parametrize("token", ["not-a-token", "bm90LWFuLWlk.GabcDE.secretpart", "Ünïcode.x.y"])
async def test_print_invite_with_a_malformed_token_says_it_is_malformed(token: str) -> None:
    code, out, err = await threadteam("run", "discord", "--print-invite",
                                      env={"DISCORD_BOT_TOKEN": token})
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("threadteam: DISCORD_BOT_TOKEN is malformed: ")
    assert "DISCORD_APPLICATION_ID" in line and token.split(".")[0] not in line


async def test_print_invite_without_a_token_says_what_to_set() -> None:
    code, out, err = await threadteam("run", "discord", "--print-invite", env={})
    assert code == 2 and out == ""
    assert one_line(err).startswith("threadteam: Set DISCORD_APPLICATION_ID")


def test_application_id_prefers_the_variable_and_explains_what_is_missing() -> None:
    assert application_id({"DISCORD_APPLICATION_ID": "42", "DISCORD_BOT_TOKEN": "x"}) == "42"
    assert application_id({"DISCORD_BOT_TOKEN": token_for(987)}) == "987"
    with pytest.raises(ConfigError, match="DISCORD_APPLICATION_ID"):
        application_id({})


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("token", ["", "wrong-token"])
async def test_a_missing_or_wrong_token_is_one_line(fake_discord: FakeDiscord, tmp_path: Path,
                                                    token: str) -> None:
    code, _, err = await threadteam(
        "run", "discord", "--store", f"sqlite:///{tmp_path}/runs.sqlite3",
        env={"DISCORD_BOT_TOKEN": token, "DISCORD_API_BASE": fake_discord.url})
    assert code == 2
    assert one_line(err).startswith("threadteam: DISCORD_BOT_TOKEN ")
    assert "wrong-token" not in err


async def test_a_missing_message_content_intent_is_one_line(fake_discord: FakeDiscord,
                                                            tmp_path: Path) -> None:
    fake_discord.message_content_allowed = False
    code, _, err = await threadteam(
        "run", "discord", "--store", f"sqlite:///{tmp_path}/runs.sqlite3",
        env={"DISCORD_BOT_TOKEN": fake_discord.token, "DISCORD_API_BASE": fake_discord.url})
    assert code == 2
    assert '"Message Content Intent"' in one_line(err)


async def test_sharded_client_serves_the_guild(fake_discord: FakeDiscord) -> None:
    from tests.adapters.test_discord_wire import RecordingHost

    fake_discord.shards = 2
    adapter = DiscordAdapter(fake_discord.token, api_base=fake_discord.url, shards=2)
    host = RecordingHost()
    await adapter.start(host, within=10)
    try:
        assert isinstance(adapter.client, discord.AutoShardedClient)
        # discord.py spaces IDENTIFYs of further shards 5 s apart; the guild is on shard 1.
        await wait_until(lambda: len(fake_discord.identifies) == 2, within=15, what="two shards")
        assert sorted(i["shard"][0] for i in fake_discord.identifies) == [0, 1]
        await wait_until(lambda: adapter.client.get_channel(CHANNEL_ID), what="the guild")
        await fake_discord.slash(ALICE, CHANNEL_ID, "team", team="debate", task="shards")
        await wait_until(lambda: host.seen, what="the summon via the owning shard")
        assert host.seen[0].text == "debate shards"
    finally:
        await adapter.aclose()
