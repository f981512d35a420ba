"""`threadteam chat`: the terminal is the thread and the person at the keyboard is the human."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys
import threading
import uuid

from threadteam.bot.app import Runtime
from threadteam.bot.config import Settings
from threadteam.bot.host import Host
from threadteam.bot.shapes import Inbound, ThreadKey

from .poster import ConsolePoster

__all__ = ["add_arguments", "run"]

_YES, _NO = {"y", "yes"}, {"n", "no"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", help="team to summon (default: debate; see `threadteam teams list`)")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN",
                        help="pick up the most recent console run (or run RUN, as `threadteam "
                             "runs list` shows it) where it left off")
    parser.add_argument("task", nargs="*", help="what the team should work on (asked for if omitted)")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one console chat; return the exit code."""
    user = _user()
    poster = ConsolePoster(user=user)
    runtime = await Runtime.open(settings)
    host = await runtime.start_host(poster, platform="console", shared=False)
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    reader = asyncio.create_task(_read_lines(lines))
    try:
        key = await _open_run(host, args, user, lines)
        if key is None:
            return 2
        return await _converse(host, key, user, lines, interactive=sys.stdin.isatty())
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await runtime.aclose()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "you"


async def _open_run(host: Host, args: argparse.Namespace, user: str,
                    lines: asyncio.Queue[str | None]) -> ThreadKey | None:
    if args.resume:
        wanted = None if args.resume is True else str(args.resume)
        run = await host.latest_run("console", wanted)
        if run is not None:
            print(f"Resuming run {run.run_id} of {run.team}: {run.task} ({run.headline})",
                  file=sys.stderr)
            await host.resume(run.run_id)
            return run.key
        if wanted is not None:
            print(f"There is no console run {wanted!r}; `threadteam runs list` shows the runs.",
                  file=sys.stderr)
        else:
            print("There is no console run to resume; start one with `threadteam chat TASK`.",
                  file=sys.stderr)
        return None
    team = args.team or "debate"
    task = " ".join(args.task).strip()
    if not task:
        if sys.stdin.isatty():
            print(f"What should {team} work on? ", end="", file=sys.stderr, flush=True)
        task = (await lines.get() or "").strip()
    problem = host.check_summon(f"{team} {task}")
    if problem:
        print(problem, file=sys.stderr)
        return None
    key = ThreadKey("console", "local", "terminal", uuid.uuid4().hex[:12])
    await host.handle(Inbound(key, user, f"{team} {task}", "summon", uuid.uuid4().hex,
                              display_name=user))
    return key


async def _converse(host: Host, key: ThreadKey, user: str, lines: asyncio.Queue[str | None],
                    *, interactive: bool) -> int:
    """Feed the person's lines to the run until they stop, the input ends, or it finishes."""
    while True:
        # Piped input is read only when the run waits, so a script's lines answer turns in order.
        if interactive:
            idle = asyncio.create_task(host.idle(limit=3600))
            got = asyncio.create_task(lines.get())
            done, _ = await asyncio.wait({idle, got}, return_when=asyncio.FIRST_COMPLETED)
            if got not in done:
                got.cancel()
                status = await _status(host, key)
                if status == "finished" and lines.empty():
                    print("(Type `continue` to go on, or press Ctrl-D to leave.)", file=sys.stderr)
                line = await lines.get()
            else:
                idle.cancel()
                line = got.result()
        else:
            await host.idle(limit=3600)
            status = await _status(host, key)
            line = await lines.get()
            if line is None and status == "finished":
                return 0
        if line is None:
            status = await _status(host, key)
            print(f"Run saved ({status}); pick it up with `threadteam chat --resume`.",
                  file=sys.stderr)
            return 0
        text = line.strip()
        if not text:
            continue
        if await _status(host, key) == "awaiting_approval" and text.lower() in _YES | _NO:
            text = "approve" if text.lower() in _YES else "deny"
        private = (await host.handle(Inbound(key, user, text, "reply", uuid.uuid4().hex,
                                             display_name=user))).private
        if private:
            print(private, file=sys.stderr)
        if text.lower() == "stop":
            await host.idle(limit=60)
            return 0


async def _status(host: Host, key: ThreadKey) -> str:
    return await host.thread_status(key) or "finished"


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
