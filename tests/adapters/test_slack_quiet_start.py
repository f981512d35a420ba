"""`threadteam run slack` starts quietly, and a bad token is one line naming it (subprocesses)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.fakes.slack import FakeSlack, wait_until

ROOT = Path(__file__).resolve().parents[2]


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadteam.adapters.cli", "run", "slack", "--port", "0",
        "--bind", "127.0.0.1", cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
             "THREADTEAM_MODEL": "rehearsal", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _fails(env: dict[str, str]) -> str:
    """The one line `run slack` prints before it exits 2 (asserted)."""
    proc = await _start(env)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, err.decode()
    assert out == b""
    return lines[0]


@pytest.mark.parametrize("socket_mode", [True, False])
async def test_a_start_says_only_that_it_serves(fake_slack: FakeSlack, tmp_path: Path,
                                               socket_mode: bool) -> None:
    env = {**fake_slack.env(socket_mode=socket_mode), "THREADTEAM_LOG_LEVEL": "WARNING",
           "THREADTEAM_STORE": f"sqlite:///{tmp_path / 'runs.sqlite3'}"}
    proc = await _start(env)
    assert proc.stderr is not None
    try:
        first = await asyncio.wait_for(proc.stderr.readline(), 60)
        if socket_mode:
            await wait_until(lambda: fake_slack.sockets, what="the Socket Mode connection")
    finally:
        proc.terminate()
        _, rest = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, rest.decode()
    mode = "Socket Mode" if socket_mode else "HTTP on port"
    assert first.decode().startswith(f"threadteam: serving Slack as @threadteam ({mode}")
    # Nothing before it (bolt's "As you gave `client` as well, `token` will be unused" was
    # logged at every start), and nothing after it but a clean stop.
    assert "As you gave" not in rest.decode() and "Traceback" not in rest.decode()
    assert rest.decode().strip() == ""


async def test_a_refused_app_token_is_one_line(fake_slack: FakeSlack, tmp_path: Path) -> None:
    junk = "xapp-" + "1-" + "J" * 12  # Slack's shape, but no token Slack issued
    line = await _fails({**fake_slack.env(), "SLACK_APP_TOKEN": junk,
                         "THREADTEAM_STORE": f"sqlite:///{tmp_path / 'runs.sqlite3'}"})
    assert line == "threadteam: SLACK_APP_TOKEN was refused by Slack (invalid_auth)"
    assert fake_slack.calls_to("apps.connections.open") and fake_slack.sockets == []


@pytest.mark.parametrize(("token", "problem"), [
    ("xoxb-" + "1-" + "A" * 10, "must be an app-level token starting with xapp-"),
    ("xapp-" + "1-A" * 4 + " copied with a note", "is malformed"),
    ("xapp-" + "1-Ä" * 4, "is malformed"),
])
async def test_a_malformed_app_token_is_one_line_naming_it(fake_slack: FakeSlack, tmp_path: Path,
                                                           token: str, problem: str) -> None:
    line = await _fails({**fake_slack.env(), "SLACK_APP_TOKEN": token,
                         "THREADTEAM_STORE": f"sqlite:///{tmp_path / 'runs.sqlite3'}"})
    assert line.startswith(f"threadteam: SLACK_APP_TOKEN {problem}")
    assert token not in line and token.split("-", 1)[1] not in line
    assert fake_slack.calls == []  # not sent anywhere


async def test_a_malformed_bot_token_is_one_line_naming_it(fake_slack: FakeSlack,
                                                           tmp_path: Path) -> None:
    token = "xoxb-" + "1-" + "A" * 10 + "\tpasted twice"
    line = await _fails({**fake_slack.env(), "SLACK_BOT_TOKEN": token,
                         "THREADTEAM_STORE": f"sqlite:///{tmp_path / 'runs.sqlite3'}"})
    assert line.startswith("threadteam: SLACK_BOT_TOKEN is malformed")
    assert "pasted" not in line and fake_slack.calls == []
