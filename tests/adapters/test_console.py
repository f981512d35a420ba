"""`threadteam chat` in a pipe: plain `Name: text`, no Markdown or mrkdwn markers, words
for a terminal; and the Markdown renderer the console uses on a TTY."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from threadteam.adapters.console.markdown import Style, render_inline, render_markdown

ROOT = Path(__file__).resolve().parents[2]
ANSI = Style(ansi=True, color=True)

TEAM = """
name: pitch
description: Bull makes the case; then it is your turn.
agents:
  - {name: bull, persona: {display_name: Bull}, system_message: Argue.}
  - {name: you, human: true}
termination: {max_messages: 4}
"""

REPLY = ("Here is **the plan**:\n\n- first *step*\n- second\n\n```python\nx = 1\n```\n\n"
         "| name | score |\n|------|------:|\n| a | 1 |\n| bob | 100 |\n\nDone.")


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("OPENAI_", "ANTHROPIC_", "THREADTEAM_", "OTEL_"))}
    return {**base, **extra}


def chat(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "threadteam.adapters.cli", "chat", *args],
                          input=stdin, text=True, capture_output=True, timeout=60, cwd=ROOT,
                          env=_env(**env))


def test_a_piped_chat_is_plain_text_in_a_terminal_s_words(tmp_path):
    result = chat("--store", f"sqlite:///{tmp_path}/s.db", "Tabs or spaces?")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "threadteam: debate is on it: Bull, Bear, Synthesis. Type a message to join in; "
        "`stop` ends the run, `help` lists the commands.",
        "  No model is configured (set OPENAI_API_KEY or ANTHROPIC_API_KEY, or "
        "THREADTEAM_MODEL), so the agents answer with rehearsal text."]
    assert lines[-1] == ("threadteam: Finished: synthesis said 'FINAL ANSWER'. Type `continue` "
                         "(with instructions, if you like) to keep going.")
    for marker in ("*debate*", "_No model", "in this thread", "Reply `", "\x1b["):
        assert marker not in result.stdout


def test_an_approval_request_in_a_pipe_shows_its_arguments_without_fences(tmp_path):
    result = chat("--store", f"sqlite:///{tmp_path}/s.db", "--team", "announce",
                  "Announce v2 in #general", stdin="y\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "```" not in out
    assert ("Announcer: Approval #1: Announcer wants to run `post_message`\n"
            "    {\n"
            '      "channel": "rehearsal channel",\n'
            '      "text": "rehearsal text"\n'
            "    }\n"
            "  Type `y` (or `approve 1`) to approve, `n` (or `deny 1 <reason>`) to deny.\n") in out
    assert "Announcer: ✅ Approved by " in out


async def test_an_agent_s_markdown_comes_out_plain_in_a_pipe(tmp_path, fake_openai):
    teams = tmp_path / "teams"
    teams.mkdir()
    (teams / "pitch.yaml").write_text(TEAM)
    fake_openai.queue_text(REPLY)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "threadteam.adapters.cli", "chat", "--team", "pitch", "Pitch it.",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env=_env(OPENAI_API_KEY="sk-test-" + uuid.uuid4().hex, OPENAI_BASE_URL=fake_openai.url,
                 THREADTEAM_MODEL="openai:gpt-4o-mini", THREADTEAM_TEAMS_DIR=str(teams),
                 THREADTEAM_STORE=f"sqlite:///{tmp_path}/s.db"))
    stdout, stderr = await asyncio.wait_for(proc.communicate(b""), 60)
    assert proc.returncode == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    start = lines.index("Bull: Here is the plan:")
    assert lines[start:start + 13] == [
        "Bull: Here is the plan:", "", "  • first step", "  • second", "",
        "    x = 1", "", "  name  score", "  ────  ─────", "  a         1", "  bob     100", "",
        "  Done."]
    assert "**" not in stdout.decode() and "```" not in stdout.decode()


def test_hints_name_the_team_flag(tmp_path):
    result = chat("--store", f"sqlite:///{tmp_path}/s.db", "--team", "triage")
    assert result.returncode == 2
    assert result.stderr.strip() == ("threadteam: tell triage what to work on: "
                                     "`threadteam chat --team triage TASK`.")
    nothing = chat("--store", f"sqlite:///{tmp_path}/s.db", "--resume")
    assert nothing.returncode == 2
    assert "`threadteam chat --team TEAM TASK`" in nothing.stderr


def test_resume_at_a_pending_approval_shows_the_request_again(tmp_path):
    store = f"sqlite:///{tmp_path}/s.db"
    first = chat("--store", store, "--team", "announce", "Announce v2 in #general")
    assert "Approval #1" in first.stdout and "waiting for approval" in first.stderr
    again = chat("--store", store, "--resume")
    assert again.returncode == 0, again.stderr
    assert "Resuming run console." in again.stderr
    assert ("Announcer: Approval #1: Announcer wants to run `post_message`\n"
            "    {\n"
            '      "channel": "rehearsal channel",\n') in again.stdout


def test_resume_at_a_plan_waiting_for_review_shows_the_plan_again(tmp_path):
    research = (ROOT / "teams" / "builtin" / "research.yaml").read_text()
    assert "plan_review: false" in research
    teams = tmp_path / "teams"
    teams.mkdir()
    (teams / "reviewed.yaml").write_text(research.replace("name: research", "name: reviewed")
                                         .replace("plan_review: false", "plan_review: true"))
    store = f"sqlite:///{tmp_path}/s.db"
    first = chat("--store", store, "--teams-dir", str(teams), "--team", "reviewed", "2+2?")
    assert first.returncode == 0, first.stderr
    assert "reply `approve` to start" in first.stdout
    again = chat("--store", store, "--teams-dir", str(teams), "--resume")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Orchestrator: Plan 1\n")
    assert "reply `approve` to start" in again.stdout


# -- the renderer ------------------------------------------------------------------------------
def test_markdown_renders_to_ansi_and_strips_to_plain():
    source = ("# Title\nSome **bold**, *it*, _it2_, ~~gone~~, `code`, snake_case_name, 2 * 3 * 4\n"
              "- [x] done\n- [ ] todo\n1. first\n> quoted\n---\n[docs](https://x.test/a) and "
              "<https://y.test|why>")
    assert render_markdown(source) == [
        "Title", "Some bold, it, it2, gone, `code`, snake_case_name, 2 * 3 * 4",
        "☑ done", "☐ todo", "1. first", "│ quoted", "─" * 40,
        "docs (https://x.test/a) and why (https://y.test)"]
    styled = render_markdown(source, ANSI)
    assert styled[0] == "\x1b[1;4mTitle\x1b[22;24m"
    assert styled[1] == ("Some \x1b[1mbold\x1b[22m, \x1b[3mit\x1b[23m, \x1b[3mit2\x1b[23m, "
                         "\x1b[9mgone\x1b[29m, \x1b[36mcode\x1b[39m, snake_case_name, 2 * 3 * 4")


def test_host_notices_read_as_mrkdwn():
    text = "*debate* is on it. _No model is configured._ ~old~ `stop`"
    assert render_inline(text, mrkdwn=True) == "debate is on it. No model is configured. old `stop`"
    assert render_inline(text, ANSI, mrkdwn=True).startswith("\x1b[1mdebate\x1b[22m is on it. "
                                                             "\x1b[3mNo model")


def test_tables_align_and_code_keeps_its_lines():
    lines = render_markdown("| a | long header |\n|:-:|---|\n| wide cell | x |\n\n"
                            "```\n  indented\n| not a table |\n```")
    assert lines == ["    a      long header", "─────────  ───────────", "wide cell  x", "",
                     "    indented", "  | not a table |"]


@pytest.mark.parametrize("text", ["*" * 100_000, "_a" * 50_000, "`" * 1000 + "``x" * 30_000,
                                  "[" * 100_000, "[a](" * 30_000, "** a" * 30_000,
                                  "| a " * 30_000 + "|", ("x" * 50 + "\n") * 4000])
def test_rendering_is_linear_on_pathological_text(text):
    started = time.perf_counter()
    render_markdown(text, ANSI)
    render_markdown(text)
    assert time.perf_counter() - started < 3.0


async def test_a_post_names_its_persona_with_an_emoji_avatar_and_colour():
    import io

    from threadteam.adapters.console.poster import ConsolePoster
    from threadteam.adapters.console.terminal import Terminal
    from threadteam.bot.shapes import Outbound, ThreadKey
    from threadteam.teams.persona import Persona

    key = ThreadKey("console", "local", "terminal", "t1")
    bull = Persona("Bull", avatar="🐂", color="#ff8800")
    out = io.StringIO()
    plain = ConsolePoster(Terminal(out, live=False), Style(), env={})
    await plain.post(Outbound(key, "**Up** we go\n- one", "k1", persona=bull, meta={"agent": "bull"}))
    assert out.getvalue() == "🐂 Bull: Up we go\n  • one\n"
    styled_out = io.StringIO()
    styled = ConsolePoster(Terminal(styled_out, live=False), ANSI, env={"COLORTERM": "truecolor"})
    await styled.post(Outbound(key, "Up", "k2", persona=bull, meta={"agent": "bull"}))
    assert styled_out.getvalue() == "\x1b[1;38;2;255;136;0m🐂 Bull\x1b[0m: Up\n"


async def test_a_notice_said_again_reads_the_same_under_whoever_says_it():
    import io

    from threadteam.adapters.console.poster import ConsolePoster
    from threadteam.adapters.console.terminal import Terminal
    from threadteam.bot.shapes import Outbound, ThreadKey
    from threadteam.teams.persona import Persona

    key = ThreadKey("console", "local", "terminal", "t1")
    out = io.StringIO()
    poster = ConsolePoster(Terminal(out, live=False), Style(), env={})
    said = "*trio* is on it: Bull, Bear. Reply in this thread to join in;\n`stop` ends the run."
    await poster.post(Outbound(key, said, "k1", notice=True))
    await poster.post(Outbound(key, said, "k2", persona=Persona("Bull"), notice=True))
    await poster.post(Outbound(ThreadKey("console", "local", "general", ""), said, "k3",
                               notice=True))
    body = "trio is on it: Bull, Bear. Type a message to join in;\n  `stop` ends the run.\n"
    assert out.getvalue() == f"threadteam: {body}Bull: {body}[general] threadteam: {body}"


@pytest.mark.parametrize("word", ["exit", "Quit "])
def test_exit_or_quit_leaves_the_chat_with_the_run_saved_not_said_to_the_team(tmp_path, word):
    teams = tmp_path / "teams"
    teams.mkdir()
    (teams / "pitch.yaml").write_text(TEAM)
    store = f"sqlite:///{tmp_path}/s.db"
    left = chat("--store", store, "--team", "pitch", "Sell me this pen", stdin=f"{word}\n",
                THREADTEAM_TEAMS_DIR=str(teams))
    assert left.returncode == 0, left.stderr
    assert "Run saved (waiting for you); pick it up with `threadteam chat --resume`." \
        in left.stderr
    # The word reached no one: resumed, the run still waits for the person, and what they
    # type now is what the team hears.
    again = chat("--store", store, "--resume", stdin="Make it blue\n",
                 THREADTEAM_TEAMS_DIR=str(teams))
    assert again.returncode == 0, again.stderr
    assert word.strip().lower() not in (left.stdout + again.stdout).lower()
    assert again.stdout.startswith("Bull: [rehearsal] bull on 'Make it blue'\n"), again.stdout


class _KeepFails:
    """A store that fails to keep the person's next `times` messages (a full disk, say),
    and then to read which run a thread has, once."""

    def __init__(self, store, times: int) -> None:
        self._store, self.times, self.reads = store, times, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _fail(self):
        from threadteam.bot.errors import StoreError

        raise StoreError("The SQLite store at '/data/s.db' failed: database or disk is full.")

    async def append_external(self, run_id, events, *, key=None):
        if self.times:
            self.times -= 1
            self.reads = 1
            self._fail()
        return await self._store.append_external(run_id, events, key=key)

    async def run_for_thread(self, thread):
        if self.reads:
            self.reads -= 1
            self._fail()
        return await self._store.run_for_thread(thread)


async def test_a_message_the_store_fails_to_keep_is_said_back_and_the_chat_goes_on(
        sqlite_store, tmp_path):
    import io

    from tests.bot.helpers import make_host, write_teams
    from threadteam.adapters.console.cli import _Console, _converse
    from threadteam.adapters.console.poster import ConsolePoster
    from threadteam.adapters.console.terminal import Terminal
    from threadteam.bot.shapes import Inbound, ThreadKey
    from threadteam.teams.models.scripted import ScriptedModel

    out = io.StringIO()
    poster = ConsolePoster(Terminal(out, live=False), Style(), user="me", env={})
    model = ScriptedModel(["Which colour?", "Blue it is."])
    store = _KeepFails(sqlite_store, times=1)  # then the chat's look at the run fails too
    host = make_host(store, poster, model, write_teams(tmp_path / "teams", TEAM.replace(
        "model: ", "").replace("agents:", "model: scripted\nagents:")))
    await host.start()
    try:
        key = ThreadKey("console", "local", "terminal", "t1")
        console = _Console(Terminal(out, live=False), poster, asyncio.Queue(), "me")
        console.key = key
        await host.handle(Inbound(key, "me", "pitch Paint the shed", "summon", "e1",
                                  display_name="me"))
        for line in ["Blue, please", "Blue, please", None]:
            console.lines.put_nowait(line)
        assert await asyncio.wait_for(_converse(host, console, interactive=False), 10) == 0
    finally:
        await host.aclose()
    shown = out.getvalue()
    assert ("threadteam: your message was not sent, as the store failed (The SQLite store at "
            "'/data/s.db' failed: database or disk is full). Send it again once the store "
            "works: Blue, please\n") in shown
    assert "Bull: Blue it is." in shown
    said = " | ".join(str(m.content) for m in model.requests[1].messages)
    assert said.count("Blue, please") == 1
    assert store.reads == 0  # the failed look at the run was passed over
