"""`threadteam chat`: the terminal is the thread and the person at the keyboard is the human."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import io
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from threadteam.bot.app import Runtime
from threadteam.bot.config import Settings
from threadteam.bot.errors import StoreError, transient
from threadteam.bot.host import Host
from threadteam.bot.shapes import Inbound, Outbound, ThreadKey

from .markdown import Style
from .poster import ConsolePoster
from .terminal import Keyboard, Terminal

__all__ = ["add_arguments", "run", "terminal_style"]

_YES, _NO = {"y", "yes"}, {"n", "no"}
_LEAVE = {"exit", "quit"}  # a line of just this leaves the chat (the run is saved), as Ctrl-D
_STATUS = {"running": "running", "awaiting_human": "waiting for you",
           "awaiting_approval": "waiting for approval", "paused": "paused",
           "finished": "finished"}
_PROMPT = "\u203a "  # a single right-pointing angle quote


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", help="team to summon (default: debate; see `threadteam teams list`)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN",
                        help="pick up the most recent console run (or run RUN, as `threadteam "
                             "runs list` shows it) where it left off")
    parser.add_argument("task", nargs="*", help="what the team should work on (asked for if omitted)")


def terminal_style(stream: object, env: Mapping[str, str]) -> Style:
    """Styled on a terminal (not TERM=dumb); coloured too unless NO_COLOR is set."""
    isatty = getattr(stream, "isatty", None)
    tty = bool(isatty and isatty()) and env.get("TERM", "") != "dumb"
    return Style(ansi=tty, color=tty and not env.get("NO_COLOR"))


@dataclass
class _Console:
    """One chat: the screen, the keyboard, and the run once there is one."""

    terminal: Terminal
    poster: ConsolePoster
    lines: asyncio.Queue[str | None]
    user: str
    key: ThreadKey | None = None

    def prompt(self, text: str | None) -> None:
        self.terminal.prompt(self.poster.style.sgr("2", "22", text) if text else text)


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one console chat; return the exit code (130 after Ctrl-C)."""
    user = _user()
    style = terminal_style(sys.stdout, settings.env)
    typing = style.ansi and sys.stdin.isatty()
    terminal = Terminal(sys.stdout, sys.stderr, live=style.ansi)
    poster = ConsolePoster(terminal, style, user=user, env=settings.env)
    console = _Console(terminal, poster, asyncio.Queue(), user)
    interrupted = _interruptible()
    keyboard: Keyboard | None = None
    reader: asyncio.Task[None] | None = None
    logs = _LogsAbove(terminal) if terminal.live else None
    if typing:
        keyboard = Keyboard(terminal, console.lines, echo=lambda line: _echo(console, line))
        keyboard.start()
    else:
        reader = asyncio.create_task(_read_lines(console.lines))
    runtime: Runtime | None = None
    try:
        runtime = await Runtime.open(settings)
        host = await runtime.start_host(poster, platform="console", shared=False)
        console.key = await _open_run(host, args, console)
        if console.key is None:
            return 2
        return await _converse(host, console, interactive=sys.stdin.isatty())
    except asyncio.CancelledError:
        if not interrupted.is_set():
            raise
        _uncancel()
        poster.finish()
        status: str | None = None
        unread = False  # the store could not say (it is failing): a run may exist
        if runtime is not None and runtime.host is not None and console.key is not None:
            try:
                status = await runtime.host.thread_status(console.key)
            except StoreError:
                unread = True
        terminal.close()
        after = "" if terminal.live else "\n"  # off the line where the terminal echoed ^C
        if unread:
            print(f"{after}Stopped. The store cannot be read just now; once it works, "
                  f"`threadteam chat --resume` picks up the run as far as it was saved.",
                  file=sys.stderr)
        elif status is None:
            print(f"{after}Stopped; nothing was started.", file=sys.stderr)
        else:
            print(f"{after}Stopped; the run is saved ({_STATUS.get(status, status)}). "
                  f"`threadteam chat --resume` picks it up.", file=sys.stderr)
        return 130
    finally:
        poster.finish()
        terminal.close()
        if keyboard is not None:
            keyboard.stop()
        if logs is not None:
            logs.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        _restore_signals()
        if runtime is not None:
            await runtime.aclose()


class _LogsAbove(io.TextIOBase):
    """Where log records go while the footer is up: whole lines, written above it, so a
    warning never lands in the middle of the line the person is typing."""

    def __init__(self, terminal: Terminal) -> None:
        super().__init__()
        self.terminal = terminal
        self._partial = ""
        self._handlers = [h for h in logging.getLogger().handlers
                          if isinstance(h, logging.StreamHandler) and h.stream is sys.stderr]
        for handler in self._handlers:
            handler.setStream(self)  # type: ignore[arg-type]

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        self.terminal.emit(lines, err=True)
        return len(text)

    def isatty(self) -> bool:
        return True

    def close(self) -> None:
        for handler in self._handlers:
            handler.setStream(sys.stderr)
        if self._partial:
            self.terminal.emit([self._partial], err=True)
            self._partial = ""
        super().close()


def _interruptible() -> asyncio.Event:
    """Ctrl-C and SIGTERM cancel this task (so `finally` runs) and set the event returned."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupted = asyncio.Event()

    def interrupt() -> None:
        if not interrupted.is_set() and task is not None:
            interrupted.set()
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, interrupt)
    return interrupted


def _restore_signals() -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "you"


def _echo(console: _Console, line: str) -> None:
    """What the person sent stays above, as they typed it."""
    console.terminal.emit([(console.terminal.prompt_text or "") + line])


async def _open_run(host: Host, args: argparse.Namespace, console: _Console) -> ThreadKey | None:
    poster = console.poster
    if args.resume:
        wanted = None if args.resume is True else str(args.resume)
        run = await host.latest_run("console", wanted)
        if run is not None and run.status == "unloadable":
            print(f"Cannot resume run {run.run_id} ({run.task}): {run.headline}.",
                  file=sys.stderr)
            return None
        if run is not None:
            poster.note(f"Resuming run {run.run_id} of {run.team}: {run.task} ({run.headline})")
            pending: tuple[Outbound, ...] = getattr(run, "pending", ())
            for request in pending:  # shown again: the screen they were on is gone
                await poster.post(request)
            await host.resume(run.run_id)
            return run.key
        if wanted is not None:
            poster.note(f"There is no console run {wanted!r}; `threadteam runs list` shows the runs.")
        else:
            poster.note("There is no console run to resume; start one with "
                        "`threadteam chat --team TEAM TASK`.")
        return None
    team = args.team or "debate"
    names = [name for name, _ in host.team_choices()]
    if team.lower() not in {name.lower() for name in names}:
        # A team file of that name that could not be loaded: say why, not just "no team".
        problems = host.catalog.problems
        broken = [p for p in problems if Path(p.file).stem.lower() == team.lower()]
        if broken:
            poster.note(f"threadteam: there is no team called {team!r}: its file could not "
                        f"be loaded. Fix it and run again:\n" + "\n".join(map(str, broken)))
            return None
        skipped = f" Team files that could not be loaded: {', '.join(p.file for p in problems)} " \
            f"(`threadteam teams check FILE` says why)." if problems else ""
        poster.note(f"threadteam: there is no team called {team!r}. Choose one with "
                    f"`--team NAME`: {', '.join(names)} (`threadteam teams list` says what each "
                    f"does).{skipped}")
        return None
    task = " ".join(args.task).strip()
    while not task:
        if not sys.stdin.isatty():
            task = (await console.lines.get() or "").strip()
            if not task:
                poster.note(f"threadteam: tell {team} what to work on: "
                            f"`threadteam chat --team {team} TASK`.")
                return None
            break
        console.prompt(f"What should {team} work on? ")
        if not console.terminal.typing:
            print(f"What should {team} work on? ", end="", file=sys.stderr, flush=True)
        line = _unless_leaving(await console.lines.get())
        if line is None:
            poster.note("Nothing was started.")
            return None
        task = line.strip()
    console.prompt(_PROMPT)
    key = ThreadKey("console", "local", "terminal", uuid.uuid4().hex[:12])
    handled = await host.handle(Inbound(key, console.user, f"{team} {task}", "summon",
                                        uuid.uuid4().hex, display_name=console.user))
    if handled.private:
        poster.note(handled.private)
    return key


async def _converse(host: Host, console: _Console, *, interactive: bool) -> int:
    """Feed the person's lines to the run until they stop, the input ends, or it finishes."""
    key, lines, poster = console.key, console.lines, console.poster
    assert key is not None
    while True:
        # Piped input is read only when the run waits, so a script's lines answer turns in order.
        if interactive:
            idle = asyncio.create_task(host.idle(limit=3600))
            got = asyncio.create_task(lines.get())
            try:
                done, _ = await asyncio.wait({idle, got}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                idle.cancel()
                if not got.done():
                    got.cancel()
            if got not in done:
                if await _status(host, key) == "finished" and lines.empty():
                    poster.note("(Type `continue` to go on, or `exit` to leave.)")
                line = _unless_leaving(await lines.get())
            else:
                line = _unless_leaving(got.result())
        else:
            await host.idle(limit=3600)
            status = await _status(host, key)
            line = _unless_leaving(await lines.get())
            if line is None and status == "finished":
                return 0
        if line is None:
            status = await _status(host, key)
            shown = f" ({_STATUS.get(status, status)})" if status is not None else ""
            poster.note(f"Run saved{shown}; pick it up with `threadteam chat --resume`.")
            return 0
        text = line.strip()
        if not text:
            continue
        try:
            if await _status(host, key) == "awaiting_approval" and text.lower() in _YES | _NO:
                text = "approve" if text.lower() in _YES else "deny"
            private = (await host.handle(Inbound(key, console.user, text, "reply",
                                                 uuid.uuid4().hex,
                                                 display_name=console.user))).private
        except StoreError as exc:
            if not transient(exc):
                raise
            # The chat goes on: the person still has their words, and the store may be back
            # in a moment (a full disk, a Redis restart).
            poster.note(f"threadteam: your message was not sent, as the store failed "
                        f"({str(exc).rstrip('.')}). Send it again once the store works: {text}")
            continue
        if private:
            poster.note(private)
        if text.lower() == "stop":
            await host.idle(limit=60)
            return 0


def _unless_leaving(line: str | None) -> str | None:
    """The line, or None (the end of the input, as Ctrl-D) for a line that is just `exit`
    or `quit`: what a terminal's user types to leave; the run is saved, not stopped."""
    return None if line is None or line.strip().lower() in _LEAVE else line


async def _status(host: Host, key: ThreadKey) -> str | None:
    """The run's status; None while the store cannot say (it failed for a while)."""
    try:
        return await host.thread_status(key) or "finished"
    except StoreError as exc:
        if not transient(exc):
            raise
        return None


async def _read_lines(queue: asyncio.Queue[str | None]) -> None:
    """Read stdin on a daemon thread so neither the loop nor exit ever waits on the keyboard."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def pump() -> None:
        for line in iter(sys.stdin.readline, ""):
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=pump, name="threadteam-stdin", daemon=True).start()
    await done.wait()
