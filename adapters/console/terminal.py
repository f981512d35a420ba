"""The person's terminal: finished output scrolls up; what is in progress stays at the bottom.

On a TTY the bottom rows are a footer the console redraws as things change: the line
of a reply still being written, who is thinking, and the line the person is typing.
Output is always written above the footer (erase it, write, draw it again), so what a
person types is never glued onto a status or a reply, and a reply never lands in the
middle of their typing. In a pipe there is no footer: lines are written as they come.

`Keyboard` reads keys in cbreak mode (no echo; Ctrl-C still interrupts) and edits the
footer's input line; whole lines go to a queue, Ctrl-D on an empty line ends the input.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import signal
import sys
import termios
from collections.abc import Callable
from typing import TextIO

from .markdown import unstyled, visible_width

__all__ = ["Keyboard", "Terminal"]

_ERASE_BELOW = "\033[J"


class Terminal:
    """Output above a redrawn footer (`live`), or plain lines (not `live`)."""

    def __init__(self, out: TextIO, err: TextIO | None = None, *, live: bool,
                 size: Callable[[], os.terminal_size] | None = None) -> None:
        self.out = out
        self.err = err or out
        self.live = live
        self._size = size or (lambda: shutil.get_terminal_size((80, 24)))
        self._preview: list[str] = []  # the unfinished end of a reply being written
        self._status = ""
        self._prompt: str | None = None  # the input line is shown while this is set
        self._buffer = ""
        self._rows = 0  # rows the footer takes now; the cursor is on its last one

    # -- output -------------------------------------------------------------------------------
    def emit(self, lines: list[str], *, err: bool = False) -> None:
        """Write finished lines above the footer."""
        if not lines:
            return
        stream = self.err if err else self.out
        if not self.live:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
            return
        self._erase()
        if stream is not self.out:  # the same terminal: what is erased goes first
            self.out.flush()
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        else:
            self.out.write("\n".join(lines) + "\n")
        self._draw()  # one flush for erase, lines and footer: no flicker

    def status(self, text: str) -> None:
        """Who is working ("Bull is thinking…"); empty to clear it."""
        if self.live and text != self._status:
            self._status = text
            self._redraw()

    def preview(self, lines: list[str]) -> None:
        """The unfinished end of a reply, shown until it is emitted for good."""
        if self.live and lines != self._preview:
            self._preview = lines
            self._redraw()

    def prompt(self, prompt: str | None) -> None:
        """Show the input line with `prompt` (None: no input line)."""
        if self.live and prompt != self._prompt:
            self._prompt = prompt
            self._redraw()

    @property
    def prompt_text(self) -> str | None:
        """The input line's prompt, while it is shown."""
        return self._prompt if self.live else None

    @property
    def typing(self) -> bool:
        """An input line is shown."""
        return self.live and self._prompt is not None

    def edit(self, buffer: str) -> None:
        """What the person has typed so far, on the input line."""
        self._buffer = buffer
        self._redraw()

    def close(self) -> None:
        """Take the footer down (leaving): the terminal is left at the start of a line."""
        if self.live:
            self._erase()
            self._preview, self._status, self._prompt, self._buffer = [], "", None, ""
            self.out.flush()

    def suspend(self) -> None:
        """Take the footer down for now (Ctrl-Z); `resume` draws it again."""
        if self.live:
            self._erase()
            self.out.flush()

    def resume(self) -> None:
        """Draw the footer again."""
        if self.live:
            self._draw()

    # -- the footer ----------------------------------------------------------------------------
    def _footer(self, columns: int, rows: int) -> list[str]:
        lines = list(self._preview)
        # A footer taller than the screen could not be erased: keep the end of the preview.
        room = max(1, rows - 3)
        while sum(_rows(line, columns) for line in lines) > room and len(lines) > 1:
            lines.pop(0)
        if lines and _rows(lines[0], columns) > room:
            lines[0] = _tail(lines[0], room * columns - 1)
        if self._status:
            lines.append(_tail(self._status, columns - 1))
        if self._prompt is not None:
            room_for_text = max(1, columns - 1 - visible_width(self._prompt))
            lines.append(self._prompt + _tail(self._buffer, room_for_text))
        return lines

    def _redraw(self) -> None:
        self._erase()
        self._draw()

    def _erase(self) -> None:
        if self._rows:
            up = f"\033[{self._rows - 1}A" if self._rows > 1 else ""
            self.out.write(f"\r{up}{_ERASE_BELOW}")
            self._rows = 0

    def _draw(self) -> None:
        size = self._size()
        columns, rows = max(10, size.columns), max(5, size.lines)
        lines = self._footer(columns, rows)
        if lines:
            self.out.write("\n".join(lines))
            self._rows = sum(_rows(line, columns) for line in lines)
        self.out.flush()


def _rows(line: str, columns: int) -> int:
    return max(1, -(-visible_width(line) // columns))


def _tail(text: str, width: int) -> str:
    """`text` cut from the left to at most `width` columns, marked with an ellipsis."""
    if visible_width(text) <= width:
        return text
    plain = unstyled(text)  # styling cannot survive a cut: the tail is plain
    kept, used = [], 1
    for ch in reversed(plain):
        used += visible_width(ch)
        if used > width:
            break
        kept.append(ch)
    return "…" + "".join(reversed(kept))


class Keyboard:
    """The person's keys, in cbreak mode: edits the terminal's input line; whole lines (and
    None at Ctrl-D on an empty line) go to `lines`. `echo` shows a sent line above."""

    def __init__(self, terminal: Terminal, lines: asyncio.Queue[str | None],
                 echo: Callable[[str], None], fd: int | None = None) -> None:
        self.terminal = terminal
        self.lines = lines
        self.echo = echo
        self.fd = sys.stdin.fileno() if fd is None else fd
        self._saved: list | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._escape = ""  # an escape sequence (arrow keys, ...) being skipped
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Take the keyboard: cbreak mode, keys read by the event loop; Ctrl-Z suspends cleanly."""
        self._loop = asyncio.get_running_loop()
        self._saved = termios.tcgetattr(self.fd)
        self._cbreak()
        self._loop.add_reader(self.fd, self._ready)
        for sig, handler in ((signal.SIGTSTP, self._suspend), (signal.SIGCONT, self._continue)):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, handler)

    def stop(self) -> None:
        """Give the keyboard back as it was."""
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            for sig in (signal.SIGTSTP, signal.SIGCONT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    self._loop.remove_signal_handler(sig)
            self._loop = None
        self._restore()

    def _cbreak(self) -> None:
        mode = termios.tcgetattr(self.fd)
        mode[3] &= ~(termios.ICANON | termios.ECHO)  # lflags; ISIG stays: Ctrl-C interrupts
        mode[6] = list(mode[6])
        mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)

    def _restore(self) -> None:
        if self._saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)

    def _suspend(self) -> None:
        self.terminal.suspend()
        self._restore()
        os.kill(os.getpid(), signal.SIGSTOP)

    def _continue(self) -> None:
        with contextlib.suppress(termios.error):
            self._cbreak()
        self.terminal.resume()

    def _ready(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the terminal went away (hang-up): as the end of input
            data = b""
        if not data:
            self._end()
            return
        for ch in self._decoder.decode(data):
            self.key(ch)

    def _end(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
        self.lines.put_nowait(None)

    def key(self, ch: str) -> None:
        """One character typed."""
        if self._escape:
            self._escape += ch
            if len(self._escape) == 2 and ch not in "[O":
                self._escape = ""  # Alt+key: dropped
            elif len(self._escape) > 2 and "\x40" <= ch <= "\x7e":
                self._escape = ""
            return
        if ch == "\x1b":
            self._escape = ch
        elif ch in "\r\n":
            line, self._buffer = self._buffer, ""
            self.terminal.edit("")
            self.echo(line)
            self.lines.put_nowait(line)
        elif ch in "\x7f\x08":
            self._set(self._buffer[:-1])
        elif ch == "\x15":  # Ctrl-U: the whole line
            self._set("")
        elif ch == "\x17":  # Ctrl-W: the last word
            words = self._buffer.rstrip()
            self._set(words[:words.rfind(" ") + 1])
        elif ch == "\x04":  # Ctrl-D: the end, on an empty line
            if not self._buffer:
                self._end()
        elif ch == "\t":
            self._set(self._buffer + " ")
        elif ch >= " ":
            self._set(self._buffer + ch)

    def _set(self, buffer: str) -> None:
        self._buffer = buffer
        self.terminal.edit(buffer)
