"""Markdown from models -> Slack mrkdwn, and long text -> posts that fit.

Slack's `text` is truncated at 40,000 characters, but a Block Kit section (the
approval posts) takes at most 3,000, and a wall of text that long is unreadable
in a thread anyway. So every post is cut at `LIMIT` = 3,000 characters: one
limit for plain and approval posts, cut at paragraph boundaries first.
"""

from __future__ import annotations

import re

__all__ = ["LIMIT", "split_text", "to_mrkdwn"]

LIMIT = 3000

_FENCE = re.compile(r"^\s*```")
# Slack's own tokens pass through unescaped: mentions, channels, specials, links.
_TOKEN = re.compile(r"<(?:[@#!][^<>\s]+|(?:https?|mailto|tel|slack):[^<>\s|]+(?:\|[^<>]*)?)>")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_LINK = re.compile(r"!?\[([^\]\n]+)\]\(((?:https?|mailto):[^)\s]+)\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![*\w])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![*\w])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(?=\S)")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_BOLD_MARK = "\x00"  # bold is set aside while single-star italics are rewritten
# A line with none of these is the same in mrkdwn (most of what models write).
_MARKUP = re.compile(r"[-*_~`\[#>&<+!]")


def to_mrkdwn(markdown: str, *, italics: bool = True) -> str:
    """Rewrite common Markdown as Slack mrkdwn; code blocks and inline code stay as they are.

    With `italics=False` a single-star `*word*` stays as it is (Slack's bold): the
    host writes its own notices that way, while models mean Markdown italics.
    """
    if not _MARKUP.search(markdown):
        return markdown
    markdown = markdown.replace(_BOLD_MARK, "").replace("\x01", "")  # our markers, not text
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


def _line(line: str, italics: bool) -> str:
    if not _MARKUP.search(line):
        return line
    if _RULE.match(line):
        return "───"
    heading = _HEADING.match(line)
    if heading:
        return f"*{_inline(heading.group(1), italics).replace('*', '')}*"
    quote = ""
    if line.startswith(">"):  # a block quote keeps its marker unescaped
        quote, line = "> ", line[1:].lstrip()
    line = _BULLET.sub(lambda m: f"{m.group(1)}• ", line)
    return quote + _inline(line, italics)


def _inline(text: str, italics: bool) -> str:
    # Code spans are cut out first so nothing inside them is rewritten.
    pieces: list[str] = []
    last = 0
    for m in _INLINE_CODE.finditer(text):
        pieces.append(_rewrite(text[last:m.start()], italics))
        pieces.append(_escape(m.group(0)))
        last = m.end()
    pieces.append(_rewrite(text[last:], italics))
    return "".join(pieces)


def _rewrite(text: str, italics: bool) -> str:
    links: list[str] = []

    def keep(token: str) -> str:
        links.append(token)
        return f"\x01{len(links) - 1}\x01"

    text = _LINK.sub(lambda m: keep(f"<{m.group(2)}|{_escape(m.group(1))}>"), text)
    text = _TOKEN.sub(lambda m: keep(m.group(0)), text)
    text = _escape(text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", text)
    if italics:
        text = _ITALIC.sub(r"_\1_", text)
    text = text.replace(_BOLD_MARK, "*")
    text = _STRIKE.sub(r"~\1~", text)
    return re.sub(r"\x01(\d+)\x01", lambda m: links[int(m.group(1))], text)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def split_text(text: str, limit: int = LIMIT) -> list[str]:
    """Cut `text` into parts of at most `limit` characters, in order.

    Cuts fall between paragraphs, else between lines, else between words; a
    code block cut in two is closed and reopened so both halves render as code.
    """
    text = text.strip("\n")
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for block in _blocks(text):
        candidate = f"{current}\n\n{block}" if current else block
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            parts.append(current)
        pieces = _cut_block(block, limit)
        parts.extend(pieces[:-1])
        current = pieces[-1]
    if current:
        parts.append(current)
    return parts


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
    if _FENCE.match(lines[0]) and len(lines) > 1 and _FENCE.match(lines[-1]):
        opener = lines[0].strip()
        # Room for the fences that wrap each piece.
        inner = _cut_lines(lines[1:-1], limit - len(opener) - len("\n\n```"))
        return [f"{opener}\n{piece}\n```" for piece in inner]
    return _cut_lines(lines, limit)


def _cut_lines(lines: list[str], limit: int) -> list[str]:
    pieces: list[str] = []
    current = ""
    for line in lines:
        for chunk in _cut_line(line, limit):
            candidate = f"{current}\n{chunk}" if current else chunk
            if len(candidate) <= limit:
                current = candidate
            else:
                pieces.append(current)
                current = chunk
    pieces.append(current)
    return [p for p in pieces if p] or [""]


def _cut_line(line: str, limit: int) -> list[str]:
    chunks: list[str] = []
    while len(line) > limit:
        cut = line.rfind(" ", 0, limit + 1)
        cut = cut if cut > limit // 2 else limit  # no space near the end: cut hard
        chunks.append(line[:cut].rstrip())
        line = line[cut:].lstrip()
    chunks.append(line)
    return chunks
