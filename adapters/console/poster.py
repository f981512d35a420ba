"""The terminal as a thread: each post is `Display Name: text`.

On a TTY an agent's Markdown is rendered (bold, lists, code, tables) under its name in
its persona's colour, and a reply streams in as the model writes it; in a pipe the same
text comes out plain, with no Markdown or mrkdwn markers. Host notices are worded for a
thread; here they say "type" where a thread would say "reply in this thread".
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from threadteam.bot.shapes import Outbound, ThreadKey
from threadteam.teams.persona import Persona

from .markdown import MarkdownLines, Style, render_markdown
from .terminal import Terminal

__all__ = ["PREVIEW_EVERY", "ConsolePoster", "console_words", "persona_color"]

_PALETTE = ("36", "33", "35", "32", "34", "31")
_NAMED = {"black": "30", "red": "31", "green": "32", "yellow": "33", "blue": "34",
          "magenta": "35", "purple": "35", "cyan": "36", "white": "37", "gray": "90",
          "grey": "90", "orange": "38;5;208", "pink": "38;5;211", "teal": "38;5;30"}
_HEX = re.compile(r"#?([0-9a-fA-F]{6})")
_INDENT = "  "
# Rendered notices kept for reuse; the cache starts over when full.
_NOTICES_KEPT = 256
PREVIEW_EVERY = 0.03  # seconds between redraws of a reply's unfinished line
_PREVIEW_CHARS = 4000  # more than a screen holds

#: Host wording meant for a chat thread, and what it says in a terminal.
_WORDS = (
    ("Reply in this thread to join in", "Type a message to join in"),
    ("your reply in this thread", "your reply"),
    ("write in this thread to", "type a message to"),
    (" (or anyone in the thread)", ""),
    ("Thread commands (reply with just the word):", "Commands (type just the word):"),
    ("Reply `", "Type `"),
    ("reply `", "type `"),
)


_APPROVAL_HINT = re.compile(r"Reply `approve (\d+)` or `deny \1 <reason>`\.")


def console_words(text: str) -> str:
    """A host notice worded for a terminal instead of a chat thread."""
    text = _APPROVAL_HINT.sub(r"Type `y` (or `approve \1`) to approve, `n` (or `deny \1 <reason>`) "
                              r"to deny.", text)
    for thread, terminal in _WORDS:
        text = text.replace(thread, terminal)
    return text


def persona_color(persona: Persona, fallback: str, *, truecolor: bool = False) -> str:
    """The SGR colour of a persona: its `color` (a name or #rrggbb), else `fallback`."""
    wanted = persona.color.strip().lower()
    if wanted in _NAMED:
        return _NAMED[wanted]
    if m := _HEX.fullmatch(wanted):
        r, g, b = (int(m.group(1)[i:i + 2], 16) for i in (0, 2, 4))
        if truecolor:
            return f"38;2;{r};{g};{b}"
        return f"38;5;{16 + 36 * round(r / 51) + 6 * round(g / 51) + round(b / 51)}"
    return fallback


@dataclass(eq=False)
class _Live:
    """A reply being written: all of it so far, its unfinished last line, what is shown."""

    key: ThreadKey
    persona: Persona
    head: str
    lines: MarkdownLines
    text: str = ""
    pending: str = ""
    emitted: int = 0
    shown: list[str] = field(default_factory=list)


class ConsolePoster:
    """Implements the host's Poster (with streaming) for a terminal, or plain text for a pipe."""

    def __init__(self, terminal: Terminal, style: Style, *, user: str = "you",
                 env: Mapping[str, str] | None = None) -> None:
        self.terminal = terminal
        self.style = style
        self.user = user
        env = os.environ if env is None else env
        self._truecolor = env.get("COLORTERM", "").lower() in ("truecolor", "24bit")
        self._ids = itertools.count(1)
        self._palette: dict[str, str] = {}
        self._heads: dict[tuple[Persona, bool], str] = {}  # (persona, notice) -> its head
        self._notices: dict[str, list[str]] = {}  # a notice's text -> its rendered body
        self._live: _Live | None = None
        self._previewed = 0.0  # loop time of the last preview drawn
        self._preview_timer: asyncio.TimerHandle | None = None

    # -- the Poster protocol ---------------------------------------------------------------
    async def post(self, out: Outbound) -> str:
        """Print the post (an agent's reply that streamed in is only finished off)."""
        agent = "agent" in out.meta
        live, self._live = self._live, None
        if live is not None:
            if agent and (live.key, live.persona) == (out.key, out.persona) and \
                    self._land(live, out.text):
                return self._id()
            self._close(live)
        self.terminal.status("")
        where = f"[{out.key.channel}] " if not out.key.thread else ""
        head = self._head(out.persona, out.notice, where)
        if agent:
            self.terminal.emit(self._block(head, out.text, mrkdwn=False))
            return self._id()
        # The host's notices repeat from run to run ("… is on it", "Finished: …"): their
        # rendered body is kept (a few hundred at most), the head put on each time.
        body = self._notices.get(out.text)
        if body is None:
            if len(self._notices) >= _NOTICES_KEPT:
                self._notices.clear()
            body = self._notices[out.text] = self._body(console_words(out.text), mrkdwn=True)
        self.terminal.emit([head + body[0], *body[1:]])
        return self._id()

    async def edit(self, out: Outbound, message_id: str) -> None:
        """A settled approval: its first line ("✅ Approved by …") under the agent's name."""
        self._cut()
        first = out.text.splitlines()[0] if out.text else ""
        self.terminal.emit(self._block(self._head(out.persona, True), first, mrkdwn=True))

    async def working(self, key: ThreadKey, persona: Persona) -> None:
        """`persona` is thinking: the status line says so (on a TTY)."""
        self._cut()
        if self.terminal.live:
            self.terminal.status(self.style.sgr("2", "22", f"{persona.display_name} is thinking…"))

    def stream(self, key: ThreadKey, persona: Persona) -> Callable[[str], Awaitable[None]] | None:
        """On a TTY, where the reply goes while the model writes it: onto the screen."""
        if not self.terminal.live:
            return None
        self._cut()
        live = self._live = _Live(key, persona, self._head(persona, False),
                                  MarkdownLines(self.style))

        async def sink(delta: str) -> None:
            if self._live is live:
                self._feed(live, delta)

        return sink

    def mention(self, user: str) -> str:
        """A person is named by their login here."""
        return user

    # -- beyond the protocol ---------------------------------------------------------------
    def note(self, text: str) -> None:
        """A line of the console's own, or a reply only the person sees (stderr)."""
        self._cut()
        lines = render_markdown(console_words(text), self.style, mrkdwn=True)
        self.terminal.emit(lines, err=True)

    def finish(self) -> None:
        """Leaving: a reply cut short stays on screen as far as it came."""
        self._cut()
        self.terminal.status("")

    # -- rendering --------------------------------------------------------------------------
    def _id(self) -> str:
        return f"console-{next(self._ids)}"

    def _head(self, persona: Persona, notice: bool, where: str = "") -> str:
        head = self._heads.get((persona, notice))
        if head is None:
            head = self._heads[(persona, notice)] = self._new_head(persona, notice)
        return f"{where}{head}" if where else head

    def _new_head(self, persona: Persona, notice: bool) -> str:
        name = persona.display_name
        if persona.emoji:  # emoji characters show before the name, as on Slack and Discord
            name = f"{persona.emoji} {name}"
        if notice:
            styled = self.style.sgr("2", "22", name)
        else:
            fallback = self._palette.setdefault(
                persona.display_name, _PALETTE[len(self._palette) % len(_PALETTE)])
            colour = persona_color(persona, fallback, truecolor=self._truecolor)
            styled = self.style.sgr(f"1;{colour}" if self.style.color else "1", "0", name)
        return f"{styled}: "

    def _block(self, head: str, text: str, *, mrkdwn: bool) -> list[str]:
        body = self._body(text, mrkdwn=mrkdwn)
        return [head + body[0], *body[1:]]

    def _body(self, text: str, *, mrkdwn: bool) -> list[str]:
        """A post's lines, the first without its head, the rest indented under it."""
        body = render_markdown(text, self.style, mrkdwn=mrkdwn)
        while len(body) > 1 and not body[-1].strip():
            body.pop()
        return [body[0], *(_INDENT + line if line else "" for line in body[1:])]

    def _prefixed(self, live: _Live, lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            out.append((live.head if live.emitted == 0 else _INDENT if line else "") + line)
            live.emitted += 1
        return out

    # -- streaming --------------------------------------------------------------------------
    def _feed(self, live: _Live, delta: str) -> None:
        if not live.text:
            self.terminal.status("")
        live.text += delta
        live.pending += delta
        if "\n" in live.pending:
            *complete, live.pending = live.pending.split("\n")
            rendered: list[str] = []
            for line in complete:
                if live.emitted == 0 and not rendered and not line.strip():
                    continue  # blank lines before the reply begins
                rendered.extend(live.lines.feed(line))
            self.terminal.preview([])
            self.terminal.emit(self._prefixed(live, rendered))
        self._preview_soon(live)

    def _preview_soon(self, live: _Live) -> None:
        """Show the unfinished line, at most every PREVIEW_EVERY seconds: a model that sends
        a token at a time costs a redraw per frame, not per token."""
        loop = asyncio.get_running_loop()
        wait = self._previewed + PREVIEW_EVERY - loop.time()
        if wait <= 0:
            self._show_preview(live)
        elif self._preview_timer is None:
            self._preview_timer = loop.call_later(wait, self._show_preview, live)

    def _show_preview(self, live: _Live) -> None:
        if self._preview_timer is not None:
            self._preview_timer.cancel()
            self._preview_timer = None
        if self._live is not live:
            return
        self._previewed = asyncio.get_running_loop().time()
        pending = live.pending
        if len(pending) > _PREVIEW_CHARS:  # the screen shows the end of it anyway
            pending = "…" + pending[-_PREVIEW_CHARS:]
        preview = live.lines.preview(pending)
        head = live.head if live.emitted == 0 else _INDENT
        self.terminal.preview([head + preview] if preview or live.emitted == 0 else [])

    def _land(self, live: _Live, final: str) -> bool:
        """The post of a reply that streamed in: finish it on screen. False when the post
        says something else than what streamed (then it is printed whole)."""
        if final.startswith(live.text):
            self._feed(live, final[len(live.text):])
        elif not live.text.rstrip().startswith(final.rstrip()):
            return False
        self._close(live)
        return True

    def _close(self, live: _Live) -> None:
        lines = live.lines.feed(live.pending) if live.pending.strip() else []
        live.pending = ""
        lines.extend(live.lines.finish())
        while lines and not lines[-1].strip():
            lines.pop()
        self.terminal.preview([])
        self.terminal.emit(self._prefixed(live, lines))

    def _cut(self) -> None:
        """Whatever streamed of an unfinished reply stays, as far as it came."""
        live, self._live = self._live, None
        if live is not None and live.text:
            self._close(live)
        elif live is not None:
            self.terminal.preview([])
