"""`threadteam chat` on a real pseudo-terminal, as a person at a keyboard meets it.

The child gets a pty as its controlling terminal (so Ctrl-C is the terminal's doing,
not a signal the test sends), and its output is read through a small screen model
that understands what the console writes: carriage returns, cursor up, erase below.
A model behind a fake OpenAI server streams its answer and can be held mid-answer,
so "the reply appears while it is being written" is something the test can see.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import struct
import sys
import termios
import uuid
from pathlib import Path

import pytest
from aiohttp import web

from tests.fakes.openai_server import FakeOpenAI, Received

ROOT = Path(__file__).resolve().parents[2]
COLUMNS, ROWS = 100, 30
PROMPT = "\u203a "  # the input line's prompt
_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
_COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|9[0-7]|38;[25];[0-9;]+)(?:;[0-9;]*)?m")

TEAM = """
name: pitch
description: Bull makes the case; then it is your turn.
agents:
  - {name: bull, persona: {display_name: Bull, color: orange}, system_message: Argue.}
  - {name: you, human: true}
termination: {max_messages: 4}
"""

REPLY = ("Here is **the plan**:\n\n- first *step*\n- second\n\n```\nx = 1\n```\n\n"
         "| name | score |\n|------|------:|\n| a | 1 |\n| bob | 100 |\n\nDone.")


class Screen:
    """Enough of a terminal to read what the console leaves on screen (scrollback kept)."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = [[]]
        self.row = self.col = 0
        self.raw = ""
        self._pending = ""

    def feed(self, data: str) -> None:
        self.raw += data
        data, self._pending = self._pending + data, ""
        i = 0
        while i < len(data):
            ch = data[i]
            if ch == "\x1b":
                m = _CSI.match(data, i)
                if m is None:
                    if len(data) - i < 16:  # a sequence cut between two reads
                        self._pending = data[i:]
                        return
                    i += 1
                    continue
                self._csi(m.group(1), m.group(2))
                i = m.end()
                continue
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row += 1
                self.col = 0  # the pty turns \n into \r\n anyway
                while len(self.rows) <= self.row:
                    self.rows.append([])
            elif ch == "\b":
                self.col = max(0, self.col - 1)
            elif ch >= " ":
                if self.col >= COLUMNS:
                    self.row, self.col = self.row + 1, 0
                    while len(self.rows) <= self.row:
                        self.rows.append([])
                line = self.rows[self.row]
                line.extend(" " * (self.col + 1 - len(line)))
                line[self.col] = ch
                self.col += 1
            i += 1

    def _csi(self, params: str, final: str) -> None:
        n = int(params) if params.isdigit() else 1
        if final == "A":
            self.row = max(0, self.row - n)
        elif final == "B":
            self.row += n
        elif final == "C":
            self.col += n
        elif final == "D":
            self.col = max(0, self.col - n)
        elif final == "K":
            del self.rows[self.row][self.col:]
        elif final == "J":
            del self.rows[self.row][self.col:]
            del self.rows[self.row + 1:]

    def lines(self) -> list[str]:
        return ["".join(r).rstrip() for r in self.rows]

    def text(self) -> str:
        return "\n".join(self.lines())


class Console:
    """`threadteam chat` with a pty as its terminal."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int, slave: int) -> None:
        self.proc, self.master, self.slave = proc, master, slave
        self.screen = Screen()
        self.changed = asyncio.Event()
        self._decoder = __import__("codecs").getincrementaldecoder("utf-8")()
        asyncio.get_running_loop().add_reader(master, self._read)

    @classmethod
    async def start(cls, *args: str, env: dict[str, str]) -> Console:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("OPENAI_", "ANTHROPIC_", "THREADTEAM_", "OTEL_", "NO_COLOR"))}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "threadteam.adapters.cli", "chat", *args,
            stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, start_new_session=True,
            env={**base, "TERM": "xterm-256color", **env},
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        return cls(proc, master, slave)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.screen.feed(self._decoder.decode(data))
        self.changed.set()

    async def until(self, predicate, timeout: float = 30.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.screen):
                    if self.proc.returncode is not None:
                        raise AssertionError("chat exited early:\n" + self.screen.text())
                    self.changed.clear()
                    waiter = asyncio.ensure_future(self.changed.wait())
                    exited = asyncio.ensure_future(self.proc.wait())
                    await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if exited.done():
                        self._drain()
                        if not predicate(self.screen):
                            raise AssertionError("chat exited early:\n" + self.screen.text())
                    else:
                        exited.cancel()
        except TimeoutError:
            raise AssertionError("screen so far:\n" + self.screen.text()) from None

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def exit_code(self, timeout: float = 30.0) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        self._drain()
        return code

    def _drain(self) -> None:
        os.set_blocking(self.master, False)
        with contextlib.suppress(BlockingIOError, OSError):
            while data := os.read(self.master, 65536):
                self.screen.feed(self._decoder.decode(data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.master)
        if self.proc.returncode is None:
            self.proc.kill()
        os.close(self.master)
        os.close(self.slave)


class HeldOpenAI(FakeOpenAI):
    """Streams each answer one character per chunk, and holds it after `hold_after`
    characters until `go` is set (so a test sees a reply while it is being written)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_after: int | None = None
        self.go = asyncio.Event()
        self.held = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        self.requests.append(Received(request.method, request.path, dict(request.headers), body))
        step = self.steps.popleft()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for n, event in enumerate(self.events(step, body)):
            if self.hold_after is not None and n == 1 + self.hold_after:
                self.held.set()
                await self.go.wait()
            await response.write(event.encode())
        await response.write_eof()
        return response

    def say(self, text: str) -> None:
        self.queue_text(text, chunks=len(text))


@pytest.fixture
async def held_openai():
    fake = HeldOpenAI()
    async with fake:
        yield fake
        fake.go.set()  # a held answer ends, so the server's shutdown does not wait on it


def _env(tmp_path: Path, fake: FakeOpenAI | None = None, **extra: str) -> dict[str, str]:
    teams = tmp_path / "teams"
    teams.mkdir(exist_ok=True)
    (teams / "pitch.yaml").write_text(TEAM)
    env = {"THREADTEAM_STORE": f"sqlite:///{tmp_path / 'runs.sqlite3'}",
           "THREADTEAM_TEAMS_DIR": str(teams), **extra}
    if fake is not None:
        env |= {"OPENAI_API_KEY": "sk-test-" + uuid.uuid4().hex, "OPENAI_BASE_URL": fake.url,
                "THREADTEAM_MODEL": "openai:gpt-4o-mini"}
    return env


def _row_with(screen: Screen, text: str) -> str:
    return next((line for line in screen.lines() if text in line), "")


async def test_a_reply_streams_in_rendered_under_the_persona_colour(tmp_path, held_openai):
    held_openai.say(REPLY)
    held_openai.hold_after = REPLY.index("- second")
    console = await Console.start("--team", "pitch", "Pitch it.", env=_env(tmp_path, held_openai))
    try:
        await held_openai.held.wait()
        await console.until(lambda s: "• first step" in s.text())
        shown = console.screen.lines()
        assert "Bull: Here is the plan:" in shown, "the reply shows while it is being written"
        assert "Done." not in console.screen.text()
        held_openai.go.set()
        await console.until(lambda s: "Done." in s.text())
        lines = console.screen.lines()
        start = lines.index("Bull: Here is the plan:")
        assert lines[start:start + 12] == [
            "Bull: Here is the plan:", "", "  • first step", "  • second", "",
            "  │ x = 1", "", "  name  score", "  ────  ─────", "  a         1", "  bob     100",
            ""], "\n".join(lines)
        assert lines[start + 12] == "  Done."
        assert "**" not in console.screen.text() and "```" not in console.screen.text()
        raw = console.screen.raw
        assert "\x1b[1;38;5;208mBull\x1b[0m" in raw, "Bull's name in its persona's colour"
        assert "\x1b[1mthe plan\x1b[22m" in raw and "\x1b[3mstep\x1b[23m" in raw
        console.type("\x04")
        assert await console.exit_code() == 0
    finally:
        console.close()


async def test_what_a_person_types_is_never_glued_to_the_output(tmp_path, held_openai):
    held_openai.say("The case is strong.")
    held_openai.hold_after = 0
    console = await Console.start("--team", "pitch", "Pitch it.", env=_env(tmp_path, held_openai))
    try:
        await held_openai.held.wait()
        await console.until(lambda s: "Bull is thinking…" in s.text())
        console.type("@synthesis weigh in")
        await console.until(lambda s: s.lines()[-1] == f"{PROMPT}@synthesis weigh in")
        assert _row_with(console.screen, "thinking") == "Bull is thinking…"
        held_openai.go.set()
        await console.until(lambda s: "Bull: The case is strong." in s.lines())
        await console.until(lambda s: "Your turn" in s.text() and s.lines()[-1].startswith(PROMPT))
        lines = console.screen.lines()
        assert lines[-1] == f"{PROMPT}@synthesis weigh in", "\n".join(lines)
        assert sum("@synthesis" in line for line in lines) == 1, "\n".join(lines)
        assert "thinking" not in console.screen.text(), "the status went once the reply came"
        console.type("\r")
        await console.until(lambda s: f"{PROMPT}@synthesis weigh in" in s.lines()[:-1])
        console.type("\x04")
        assert await console.exit_code() == 0
        assert "Run saved" in console.screen.text()
        said = [m["content"] for m in held_openai.requests[-1].body["messages"]
                if m["role"] == "user"] if len(held_openai.requests) > 1 else []
        assert len(held_openai.requests) == 1 or "@synthesis weigh in" in said
    finally:
        console.close()


async def test_ctrl_c_at_the_task_prompt_saves_nothing_and_gives_the_terminal_back(tmp_path):
    console = await Console.start(env=_env(tmp_path))
    try:
        await console.until(lambda s: "What should debate work on?" in s.text())
        before = termios.tcgetattr(console.slave)
        assert not before[3] & termios.ECHO, "the console echoes what is typed itself"
        console.type("half a ta")
        await console.until(lambda s: "half a ta" in s.text())
        console.type("\x03")
        assert await console.exit_code() == 130
        text = console.screen.text()
        assert text.rstrip().splitlines()[-1] == "Stopped; nothing was started."
        assert "saved" not in text and "--resume" not in text
        assert "Traceback" not in text
        after = termios.tcgetattr(console.slave)
        assert after[3] & termios.ECHO and after[3] & termios.ICANON, "terminal mode restored"
    finally:
        console.close()


async def test_no_color_keeps_the_rendering_without_colour(tmp_path):
    console = await Console.start("--team", "debate", "Tabs or spaces?",
                                  env=_env(tmp_path, NO_COLOR="1"))
    try:
        await console.until(lambda s: "Finished:" in s.text())
        console.type("\x04")
        assert await console.exit_code() == 0
        text = console.screen.text()
        assert "threadteam: debate is on it: Bull, Bear, Synthesis. Type a message to join in" \
            in text
        assert "*debate*" not in text and "_No model" not in text
        assert "\x1b[1mBull\x1b[0m" in console.screen.raw, "names still stand out (bold)"
        assert not _COLOUR.search(console.screen.raw), "no colour codes under NO_COLOR"
    finally:
        console.close()


async def test_ctrl_c_while_an_agent_writes_keeps_what_came_and_the_run(tmp_path, held_openai):
    held_openai.say("The case is strong because demand is steady.")
    held_openai.hold_after = len("The case is strong")
    env = _env(tmp_path, held_openai)
    console = await Console.start("--team", "pitch", "Pitch it.", env=env)
    try:
        await held_openai.held.wait()
        await console.until(lambda s: "Bull: The case is strong" in s.lines())
        console.type("\x03")
        assert await console.exit_code() == 130
        lines = console.screen.text().rstrip().splitlines()
        assert lines[-2:] == [
            "Bull: The case is strong",
            "Stopped; the run is saved (running). `threadteam chat --resume` picks it up."]
        assert "Traceback" not in console.screen.text()
    finally:
        console.close()
