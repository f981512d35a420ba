"""Markdown from models -> Slack mrkdwn, and long text -> posts that fit.

Slack's `text` is truncated at 40,000 characters, but a Block Kit section (the
approval posts) takes at most 3,000, and a wall of text that long is unreadable
in a thread anyway. So every post is cut at `LIMIT` = 3,000 characters: one
limit for plain and approval posts, cut at paragraph boundaries first.

Nothing written here pings a channel: Slack's special mentions (`<!here>`,
`<!channel>`, `<!everyone>`, `<!subteam^…>`) come out escaped, visible as text,
and `no_broadcasts` (which the Web API caller applies to every outgoing text)
also breaks a bare `@here` / `@channel` / `@everyone` with a zero-width space.
A person's own mention (`<@U…>`) and a channel link (`<#C…>`) still work.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

__all__ = ["LIMIT", "no_broadcasts", "split_text", "to_mrkdwn"]

LIMIT = 3000

# Every pattern here is linear: each either anchors at the line start and cannot
# backtrack more than a bounded amount, or runs to a delimiter it cannot pass. Pairs of
# markers (`**…**`, `*…*`, `~~…~~`) and links are found by scanners below that never
# look at a character twice: the lazy regexes they replace (`(\*\*)(.+?)\1`) were
# quadratic, and one 40,000-character `**a **a …` stalled the event loop for seconds.
_FENCE = re.compile(r"^\s*```")
# Slack's own tokens pass through unescaped: people, channels, links. Not its special
# mentions (`<!here>`, `<!subteam^S1>`, ...): those are escaped like any other text.
_TOKEN = re.compile(r"<(?:[@#][^<>\s]+|(?:https?|mailto|tel|slack):[^<>\s|]+(?:\|[^<>]*)?)>")
_SPECIAL = re.compile(r"<(![^<>]*)>")
_BROADCAST = re.compile(r"(?<![\w@])@(?=(?:here|channel|everyone)\b)", re.IGNORECASE)
_ZWSP = "\u200b"
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_NON_SPACE = re.compile(r"\S")
_URL_STOP = re.compile(r"[)\s]")
_LINK_SCHEMES = ("https:", "http:", "mailto:")
# Where a pair of markers may open and close (zero-width, so overlapping places count):
# `**bold**`/`__bold__` and `~~struck~~` hug their text; a single-star `*italic*` also
# stands apart from words and other stars (`2 * 3 * 4` and `snake_case` stay as they are).
_BOLD_OPEN = re.compile(r"(?=(\*\*|__)\S)")
_BOLD_CLOSE = re.compile(r"(?<=\S)(?=(\*\*|__))")
_ITALIC_OPEN = re.compile(r"(?<![*\w])(?=(\*)[^\s*])")
_ITALIC_CLOSE = re.compile(r"(?<=[^\s*])(?=(\*)(?![*\w]))")
_STRIKE_OPEN = re.compile(r"(?=(~~)\S)")
_STRIKE_CLOSE = re.compile(r"(?<=\S)(?=(~~))")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?=\S)")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_BOLD_MARK = "\x00"  # bold is set aside while single-star italics are rewritten
# Where code spans, links and Slack tokens were set aside while the rest is rewritten.
_CODE_MARK, _LINK_MARK, _TOKEN_MARK = "\x01", "\x02", "\x03"
_OURS = str.maketrans("", "", _BOLD_MARK + _CODE_MARK + _LINK_MARK + _TOKEN_MARK)
# A line with none of these is the same in mrkdwn (most of what models write).
_MARKUP = re.compile(r"[-*_~`\[#>&<+!]")


def to_mrkdwn(markdown: str, *, italics: bool = True) -> str:
    """Rewrite common Markdown as Slack mrkdwn; code blocks and inline code stay as they are.

    With `italics=False` a single-star `*word*` stays as it is (Slack's bold): the
    host writes its own notices that way, while models mean Markdown italics.
    Runs in time linear in the length of `markdown`.
    """
    if not _MARKUP.search(markdown):
        return markdown
    markdown = markdown.translate(_OURS)  # our markers, never text
    out: list[str] = []
    in_code = False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
            out.append(line.strip())
        elif in_code:
            out.append(_escape(line))
        else:
            out.append(_line(line, italics))
    return "\n".join(out)


def no_broadcasts(text: str) -> str:
    """`text` with no live channel-wide ping: `<!here>`-style specials escaped, and a
    zero-width space after the `@` of a bare `@here` / `@channel` / `@everyone`."""
    if "<!" in text:
        text = _SPECIAL.sub(r"&lt;\1&gt;", text)
    if "@" in text:
        text = _BROADCAST.sub("@" + _ZWSP, text)
    return text


def _line(line: str, italics: bool) -> str:
    if not _MARKUP.search(line):
        return line
    if _RULE.match(line):
        return "───"
    heading = _heading(line)
    if heading is not None:
        return f"*{_inline(heading, italics).replace('*', '')}*"
    quote = ""
    if line.startswith(">"):  # a block quote keeps its marker unescaped
        quote, line = "> ", line[1:].lstrip()
    line = _BULLET.sub(lambda m: f"{m.group(1)}• ", line)
    return quote + _inline(line, italics)


def _heading(line: str) -> str | None:
    """The text of an ATX heading (`## Title ##`), or None when `line` is not one.

    Same as `^\\s{0,3}#{1,6}\\s+(.+?)\\s*#*\\s*$`, whose backtracking over a long run
    of spaces was cubic (a 4,000-character line took minutes).
    """
    body = line.lstrip()
    if len(line) - len(body) > 3 or not body.startswith("#"):
        return None
    hashes = len(body) - len(body.lstrip("#"))
    rest = body[hashes:]
    if hashes > 6 or not rest[:1].isspace():
        return None
    text = rest.lstrip()
    if not text:  # only spaces after the hashes: the last one is the "heading"
        return rest[-1] if len(rest) > 1 else None
    # The shortest text that leaves a tail of spaces, closing hashes, spaces.
    end = len(text.rstrip().rstrip("#").rstrip())
    return text[:max(end, 1)]


def _inline(text: str, italics: bool) -> str:
    """One line's inline Markdown as mrkdwn: emphasis, links; code spans left alone."""
    # Code spans, links and Slack's own tokens are set aside first (each kind behind a
    # marker character of its own), so nothing in them is rewritten; emphasis may still
    # wrap them (`**use `x`**`).
    code: list[str] = []
    links: list[str] = []
    tokens: list[str] = []
    if "`" in text:
        code = [_escape(c) for c in _INLINE_CODE.findall(text)]
        text = _CODE_MARK.join(_INLINE_CODE.split(text))
    if "[" in text:
        text = _links(text, links)
    if "<" in text:
        tokens = _TOKEN.findall(text)
        text = _TOKEN_MARK.join(_TOKEN.split(text))
    text = _escape(text)
    if "**" in text or "__" in text:
        text = _pairs(text, _BOLD_OPEN, _BOLD_CLOSE,
                      lambda inner: f"{_BOLD_MARK}{inner}{_BOLD_MARK}")
    if italics and "*" in text:
        text = _pairs(text, _ITALIC_OPEN, _ITALIC_CLOSE, lambda inner: f"_{inner}_")
    text = text.replace(_BOLD_MARK, "*")
    if "~~" in text:
        text = _pairs(text, _STRIKE_OPEN, _STRIKE_CLOSE, lambda inner: f"~{inner}~")
    # Later kinds may hold earlier ones' markers (a code span in a link's label): put
    # them back in reverse.
    for mark, pieces in ((_TOKEN_MARK, tokens), (_LINK_MARK, links), (_CODE_MARK, code)):
        if pieces:
            parts = text.split(mark)
            text = "".join(itertools.chain.from_iterable(
                zip(parts[:-1], pieces, strict=True))) + parts[-1]
    return text


def _links(text: str, kept: list[str]) -> str:
    """`[label](url)` (and `![alt](url)`) as `<url|label>`, for http(s) and mailto URLs,
    set aside in `kept` behind `_LINK_MARK`.

    Every `[` before the same `]` shares that `]` and what follows it, so when one
    fails the scan moves past that `]`: each character is looked at once or twice.
    """
    out: list[str] = []
    last = i = 0
    stop = _NextStop(text, _URL_STOP)
    while (i := text.find("[", i)) >= 0:
        close = text.find("]", i + 1)
        if close < 0:
            break
        scheme = next((s for s in _LINK_SCHEMES if text.startswith(s, close + 2)), "")
        url_at = close + 2 + len(scheme)
        end = stop.at(url_at) if text.startswith("(", close + 1) and scheme else -1
        if close == i + 1 or end <= url_at or end >= len(text) or text[end] != ")":
            i = close + 1
            continue
        start = i - 1 if i > last and text[i - 1] == "!" else i
        out.append(text[last:start])
        out.append(_LINK_MARK)
        kept.append(f"<{text[close + 2:end]}|{_escape(text[i + 1:close])}>")
        last = i = end + 1
    out.append(text[last:])
    return "".join(out)


def _pairs(text: str, opener: re.Pattern[str], closer: re.Pattern[str],
           wrap: Callable[[str], str]) -> str:
    """Rewrite each pair of markers around `inner` as `wrap(inner)`, as a lazy regex would.

    `opener` and `closer` are zero-width patterns whose group 1 is the marker (so
    overlapping places are all found, as the lazy regex would try them): each opener
    takes the nearest closer of the same marker that leaves `inner` at least one
    character, leftmost first, pairs never overlapping. Both lists are made once, in C,
    and walked once: linear, where `(\\*\\*)(?=\\S)(.+?)(?<=\\S)\\1` was quadratic.
    """
    closers: dict[str, list[int]] = {}
    for m in closer.finditer(text):
        closers.setdefault(m.group(1), []).append(m.start())
    if not closers:
        return text
    taken = dict.fromkeys(closers, 0)  # per marker: closers before this one are behind us
    out: list[str] = []
    last = 0
    for m in opener.finditer(text):
        i, mark = m.start(), m.group(1)
        at = closers.get(mark)
        if i < last or at is None:
            continue
        inner = i + len(mark)
        k = taken[mark]
        while k < len(at) and at[k] <= inner:
            k += 1
        taken[mark] = k
        if k == len(at):
            continue
        out.append(text[last:i])
        out.append(wrap(text[inner:at[k]]))
        last = at[k] + len(mark)
    out.append(text[last:])
    return "".join(out)


class _NextStop:
    """Where `pattern` next matches at or after a position, asked in increasing order."""

    def __init__(self, text: str, pattern: re.Pattern[str]) -> None:
        self._text, self._pattern = text, pattern
        self._from, self._found = 0, -1  # no match in [_from, _found)

    def at(self, start: int) -> int:
        """The first match at or after `start` (len(text) if none)."""
        if not self._from <= start <= self._found:
            m = self._pattern.search(self._text, start)
            self._from, self._found = start, m.start() if m else len(self._text)
        return self._found


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def split_text(text: str, limit: int = LIMIT) -> list[str]:
    """Cut `text` into parts of at most `limit` characters, in order.

    Cuts fall between paragraphs, else between lines, else between words; a
    code block cut in two is closed and reopened so both halves render as code.
    Linear in the length of `text`.
    """
    text = text.strip("\n")
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = _Part("\n\n")
    for block in _blocks(text):
        if current.fits(block, limit):
            current.add(block)
            continue
        if current:
            parts.append(current.text())
        pieces = _cut_block(block, limit)
        parts.extend(pieces[:-1])
        current = _Part("\n\n", pieces[-1])
    if current:
        parts.append(current.text())
    return parts


class _Part:
    """A post being filled: its pieces and its length, without joining them on each try."""

    def __init__(self, sep: str, first: str = "") -> None:
        self.sep = sep
        self.pieces = [first] if first else []
        self.size = len(first)

    def __bool__(self) -> bool:
        return self.size > 0

    def fits(self, piece: str, limit: int) -> bool:
        return (self.size + len(self.sep) if self.size else 0) + len(piece) <= limit

    def add(self, piece: str) -> None:
        self.size += (len(self.sep) if self.size else 0) + len(piece)
        if piece or self.pieces:
            self.pieces.append(piece)

    def text(self) -> str:
        return self.sep.join(self.pieces)


def _blocks(text: str) -> list[str]:
    """Paragraphs, with a fenced code block (blank lines and all) kept as one."""
    blocks: list[str] = []
    lines: list[str] = []
    in_code = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
        if not line.strip() and not in_code:
            if lines:
                blocks.append("\n".join(lines))
                lines = []
            continue
        lines.append(line)
    if lines:
        blocks.append("\n".join(lines))
    return blocks


def _cut_block(block: str, limit: int) -> list[str]:
    if len(block) <= limit:
        return [block]
    lines = block.split("\n")
    opener = lines[0].strip()
    room = limit - len(opener) - len("\n\n```")  # for the fences that wrap each piece
    if _FENCE.match(lines[0]) and len(lines) > 1 and _FENCE.match(lines[-1]) \
            and not lines[-1].strip().strip("`") \
            and room > limit // 2:  # (an opener line that long is cut like any other)
        inner = _cut_lines(lines[1:-1], room)
        return [f"{opener}\n{piece}\n```" for piece in inner]
    return _cut_lines(lines, limit)


def _cut_lines(lines: list[str], limit: int) -> list[str]:
    pieces: list[str] = []
    current = _Part("\n")
    for line in lines:
        for chunk in _cut_line(line, limit):
            if current.fits(chunk, limit):
                current.add(chunk)
            else:
                pieces.append(current.text())
                current = _Part("\n", chunk)
    pieces.append(current.text())
    return [p for p in pieces if p] or [""]


def _cut_line(line: str, limit: int) -> list[str]:
    chunks: list[str] = []
    start = 0
    while len(line) - start > limit:
        cut = line.rfind(" ", start, start + limit + 1)
        cut = cut if cut - start > limit // 2 else start + limit  # no space near the end: cut hard
        chunks.append(line[start:cut].rstrip())
        more = _NON_SPACE.search(line, cut)
        start = more.start() if more else len(line)
    chunks.append(line[start:])
    return chunks
