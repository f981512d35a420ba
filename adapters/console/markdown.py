"""Markdown for a terminal: rendered to ANSI on a TTY, stripped to plain text in a pipe.

Line by line, so a reply can be rendered as it streams: block state (a code fence, a
table being collected) carries from one line to the next. Everything runs in time
linear in the text: delimiters pair through a stack, code spans find their closing run
through per-length queues, and every pattern has bounded repetition.

Agents write Markdown (`**bold**`, `*italics*`); the host's own notices are written as
Slack mrkdwn (`*bold*`, `_italics_`, `~strike~`): `mrkdwn=True` reads them so.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from dataclasses import dataclass

__all__ = ["MarkdownLines", "Style", "render_inline", "render_markdown", "unstyled",
           "visible_width"]

_ESC = "\033["
_SGR = re.compile(r"\033\[[0-9;?]*[A-Za-z]")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?:\[([ xX])\]\s+)?(.*)$")
_NUMBERED = re.compile(r"^(\s*)(\d{1,9})([.)])\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
_RULE = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?(\s*:?-+:?\s*\|)+\s*(:?-+:?\s*)?$")
_LINK = re.compile(r"\[([^\[\]\n]{1,500})\]\(([^()\s]{1,2000})\)")
_ANGLE = re.compile(r"<((?:https?://|mailto:)[^<>\s|]{1,2000})(?:\|([^<>\n]{1,500}))?>")
_SPECIAL = re.compile(r"[`\\\[<*_~]")
# The first characters (after indentation) a fence, table, heading, rule, list item or
# quote can start with; a line starting otherwise is a paragraph's (and "" an empty one).
_BLOCK_STARTS = frozenset("`~|:#-*_+>0123456789")
_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


@dataclass(frozen=True)
class Style:
    """How text may look: `ansi` styles it (bold, italics); `color` also colours it."""

    ansi: bool = False
    color: bool = False

    def sgr(self, on: str, off: str, text: str, *, colour: bool = False) -> str:
        """`text` between two escape codes, when this style allows them."""
        if not self.ansi or (colour and not self.color):
            return text
        return f"{_ESC}{on}m{text}{_ESC}{off}m"


PLAIN = Style()

# (start, end) escape codes of each inline kind.
_CODES = {"strong": ("1", "22"), "em": ("3", "23"), "strike": ("9", "29")}


def unstyled(text: str) -> str:
    """`text` without its escape codes."""
    return _SGR.sub("", text)


def visible_width(text: str) -> int:
    """Columns `text` takes in a terminal: escape codes take none, wide characters two."""
    width = 0
    for ch in _SGR.sub("", text):
        if unicodedata.combining(ch) or ch in "\u200b\u200c\u200d\ufe0e\ufe0f":
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def render_markdown(text: str, style: Style = PLAIN, *, mrkdwn: bool = False) -> list[str]:
    """`text` as terminal lines (no trailing newlines)."""
    lines = MarkdownLines(style, mrkdwn=mrkdwn)
    out: list[str] = []
    for line in text.split("\n"):
        out.extend(lines.feed(line))
    out.extend(lines.finish())
    return out


class MarkdownLines:
    """Renders Markdown one complete source line at a time, carrying block state."""

    def __init__(self, style: Style = PLAIN, *, mrkdwn: bool = False) -> None:
        self.style = style
        self.mrkdwn = mrkdwn
        self._fence = ""  # the fence that opened the code block we are in, if any
        self._table: list[str] = []

    def feed(self, line: str) -> list[str]:
        """The terminal lines for one more source line (none while a table is collected)."""
        line = line.rstrip("\r")
        if self._fence:
            stripped = line.strip()
            if stripped.startswith(self._fence[0] * len(self._fence)) and \
                    not stripped.strip(self._fence[0]):
                self._fence = ""
                return []
            return [self._code(line)]
        fence = _FENCE.match(line)
        if fence and (fence.group(1)[0] == "~" or "`" not in line[fence.end():]):
            self._fence = fence.group(1)
            return self._flush_table()
        if not self._table and line.lstrip()[:1] not in _BLOCK_STARTS:
            return [self._inline(line)]  # no block pattern can match: a paragraph line
        if _TABLE_ROW.match(line) or (self._table and _TABLE_RULE.match(line)):
            self._table.append(line)
            return []
        return [*self._flush_table(), self._block(line)]

    def finish(self) -> list[str]:
        """What is still held (a table at the very end); the state is reset."""
        self._fence = ""
        return self._flush_table()

    def preview(self, partial: str) -> str:
        """How an unfinished line looks while it is being written (empty inside a table)."""
        if self._fence:
            return self._code(partial)
        if self._table or partial.lstrip().startswith(("|", "```", "~~~")):
            return ""
        return self._block(partial)

    # -- blocks ------------------------------------------------------------------------------
    def _inline(self, text: str) -> str:
        return render_inline(text, self.style, mrkdwn=self.mrkdwn)

    def _code(self, line: str) -> str:
        bar = self.style.sgr("2", "22", "│ ") if self.style.ansi else "  "
        return bar + self.style.sgr("36", "39", line.expandtabs(4), colour=True)

    def _block(self, line: str) -> str:
        s = self.style
        if m := _HEADING.match(line):
            level, title = len(m.group(1)), self._inline(m.group(2))
            return s.sgr("1;4", "22;24", title) if level <= 2 else s.sgr("1", "22", title)
        if _RULE.match(line):
            return s.sgr("2", "22", "─" * 40)
        if m := _BULLET.match(line):
            indent, box, body = m.groups()
            mark = "•" if box is None else ("☑" if box in "xX" else "☐")
            return f"{indent}{mark} {self._inline(body)}"
        if m := _NUMBERED.match(line):
            indent, number, dot, body = m.groups()
            return f"{indent}{number}{dot} {self._inline(body)}"
        if m := _QUOTE.match(line):
            return s.sgr("2", "22", "│ ") + s.sgr("3", "23", self._inline(m.group(1)))
        return self._inline(line)

    def _flush_table(self) -> list[str]:
        if not self._table:
            return []
        rows: list[list[str]] = []
        aligns: list[str] = []
        header = 0
        for line in self._table:
            if _TABLE_RULE.match(line) and rows and not aligns:
                aligns = [_align(c) for c in _cells(line)]
                header = len(rows)
                continue
            rows.append([self._inline(c) for c in _cells(line)])
        self._table = []
        columns = max(len(r) for r in rows)
        widths = [max((visible_width(r[i]) for r in rows if i < len(r)), default=0)
                  for i in range(columns)]
        out = []
        for n, row in enumerate(rows):
            cells = [_pad(row[i] if i < len(row) else "", widths[i],
                          aligns[i] if i < len(aligns) else "<") for i in range(columns)]
            text = "  ".join(cells).rstrip()
            out.append(self.style.sgr("1", "22", text) if n < header else text)
            if header and n == header - 1:
                out.append(self.style.sgr("2", "22", "  ".join("─" * w for w in widths)))
        return out


def _cells(line: str) -> list[str]:
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def _align(cell: str) -> str:
    cell = cell.strip()
    if cell.startswith(":") and cell.endswith(":"):
        return "^"
    return ">" if cell.endswith(":") else "<"


def _pad(text: str, width: int, align: str) -> str:
    gap = max(0, width - visible_width(text))
    if align == ">":
        return " " * gap + text
    if align == "^":
        return " " * (gap // 2) + text + " " * (gap - gap // 2)
    return text + " " * gap


# -- inline ----------------------------------------------------------------------------------
def render_inline(text: str, style: Style = PLAIN, *, mrkdwn: bool = False) -> str:
    """One line's emphasis, code spans and links, styled (or just unmarked when plain).

    Unpaired markers stay as they are ("2 * 3", "snake_case").
    """
    if _SPECIAL.search(text) is None:
        return text
    out: list[str] = []
    stack: list[tuple[str, int, str]] = []  # (kind, index in out, marker) of open delimiters
    open_kinds: dict[str, int] = {}
    closers = _code_runs(text) if "`" in text else {}
    i, n = 0, len(text)
    while i < n:
        m = _SPECIAL.search(text, i)
        if m is None:
            out.append(text[i:])
            break
        if m.start() > i:
            out.append(text[i:m.start()])
            i = m.start()
        ch = text[i]
        if ch == "`":
            i = _code_span(text, i, closers, out, style)
        elif ch == "\\":
            if i + 1 < n and text[i + 1] in _PUNCT:
                out.append(text[i + 1])
                i += 2
            else:
                out.append(ch)
                i += 1
        elif ch == "[" and (link := _LINK.match(text, i)):
            out.append(_link(render_inline(link.group(1), style, mrkdwn=mrkdwn),
                             link.group(2), style))
            i = link.end()
        elif ch == "<" and (link := _ANGLE.match(text, i)):
            label = render_inline(link.group(2), style, mrkdwn=mrkdwn) if link.group(2) else ""
            out.append(_link(label or link.group(1), link.group(1), style))
            i = link.end()
        elif ch in "*_~":
            i = _delimiter(text, i, mrkdwn, out, stack, open_kinds, style)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _code_runs(text: str) -> dict[int, deque[int]]:
    """Start positions of backtick runs, by run length: a code span closes on the next run
    of its own length, found in O(1) amortised."""
    runs: dict[int, deque[int]] = {}
    for m in re.finditer(r"`+", text):
        runs.setdefault(len(m.group()), deque()).append(m.start())
    return runs


def _code_span(text: str, i: int, runs: dict[int, deque[int]], out: list[str],
               style: Style) -> int:
    length = 1
    while i + length < len(text) and text[i + length] == "`":
        length += 1
    queue = runs.get(length, deque())
    while queue and queue[0] <= i:
        queue.popleft()
    if not queue:
        out.append("`" * length)
        return i + length
    end = queue.popleft()
    body = text[i + length:end]
    if len(body) > 1 and body.startswith(" ") and body.endswith(" ") and body.strip():
        body = body[1:-1]
    if style.ansi and style.color:
        out.append(style.sgr("36", "39", body, colour=True))
    else:  # no colour to set it apart: the backticks say it is something to type
        out.append(f"`{body}`")
    return end + length


def _link(label: str, url: str, style: Style) -> str:
    if _SGR.sub("", label) == url:
        return style.sgr("4", "24", url)
    return f"{style.sgr('4', '24', label)} " + style.sgr("2", "22", f"({url})")


def _delimiter(text: str, i: int, mrkdwn: bool, out: list[str],
               stack: list[tuple[str, int, str]], open_kinds: dict[str, int],
               style: Style) -> int:
    ch = text[i]
    double = i + 1 < len(text) and text[i + 1] == ch
    marker = ch * 2 if double else ch
    if ch == "~":
        kind = "strike" if (double or mrkdwn) else ""
    elif double:
        kind = "strong"
    else:
        kind = "strong" if (mrkdwn and ch == "*") else "em"
    if not kind:
        out.append(marker)
        return i + len(marker)
    before = text[i - 1] if i > 0 else " "
    after = text[i + len(marker)] if i + len(marker) < len(text) else " "
    can_open = not after.isspace()
    can_close = not before.isspace()
    if ch == "_":  # snake_case stays as it is
        can_open = can_open and not before.isalnum()
        can_close = can_close and not after.isalnum()
    key = f"{kind}{marker}"
    if can_close and open_kinds.get(key):
        while stack:
            open_kind, index, open_marker = stack.pop()
            open_kinds[f"{open_kind}{open_marker}"] -= 1
            if open_kind == kind and open_marker == marker:
                on, off = _CODES[kind]
                out[index] = f"{_ESC}{on}m" if style.ansi else ""
                out.append(f"{_ESC}{off}m" if style.ansi else "")
                break
            # an opener crossed by this closer stays a literal marker
        return i + len(marker)
    if can_open:
        stack.append((kind, len(out), marker))
        open_kinds[key] = open_kinds.get(key, 0) + 1
    out.append(marker)
    return i + len(marker)
