"""The terminal as a thread: posts print as `Display Name: text`, coloured on a TTY."""

from __future__ import annotations

import itertools
import sys
from typing import TextIO

from threadteam.bot.shapes import Outbound, ThreadKey
from threadteam.teams.persona import Persona

__all__ = ["ConsolePoster"]

_COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m", "\033[34m", "\033[31m"]
_RESET, _BOLD, _DIM = "\033[0m", "\033[1m", "\033[2m"


class ConsolePoster:
    """Implements the host's Poster for a terminal (or a pipe, in plain text)."""

    def __init__(self, out: TextIO | None = None, *, color: bool | None = None,
                 user: str = "you") -> None:
        self.out = out or sys.stdout
        self.color = self.out.isatty() if color is None else color
        self.user = user
        self._ids = itertools.count(1)
        self._palette: dict[str, str] = {}
        self._status_shown = False

    def _name(self, persona: Persona, notice: bool) -> str:
        name = persona.display_name
        if not self.color:
            return name
        if notice:
            return f"{_DIM}{name}{_RESET}"
        col = self._palette.setdefault(name, _COLORS[len(self._palette) % len(_COLORS)])
        return f"{_BOLD}{col}{name}{_RESET}"

    def _write(self, text: str) -> None:
        if self._status_shown:
            self.out.write("\r\033[K")
            self._status_shown = False
        self.out.write(text)
        self.out.flush()

    async def post(self, out: Outbound) -> str:
        where = f"[{out.key.channel}] " if not out.key.thread else ""
        hint = " (or just y / n)" if out.approval is not None else ""
        self._write(f"{where}{self._name(out.persona, out.notice)}: {out.text}{hint}\n")
        return f"console-{next(self._ids)}"

    async def edit(self, out: Outbound, message_id: str) -> None:
        first = out.text.splitlines()[0] if out.text else ""
        self._write(f"{self._name(out.persona, True)}: {first}\n")

    async def working(self, key: ThreadKey, persona: Persona) -> None:
        if self.color:
            self._write(f"{_DIM}{persona.display_name} is thinking…{_RESET}")
            self._status_shown = True

    def mention(self, user: str) -> str:
        return user
