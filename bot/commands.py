"""Thread commands: a reply that is just the word (any case), some with arguments."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["HELP", "Command", "parse_command"]

HELP = """Thread commands (reply with just the word):
• `stop` — end the run now
• `continue [instructions]` — go on after the run finished or was stopped
• `retry` — try again after a model or tool failure
• `approve [n] [note]` / `deny [n] [reason]` — decide a pending approval (n picks one of several)
• `approve always [n]` — approve that tool for the rest of this run
• `status` — who speaks next, what is pending, tokens used
• `help` — this list
Anything else you write goes to the team."""

_WORDS = ("stop", "continue", "retry", "approve", "deny", "status", "help")
_ALONE = ("stop", "retry", "status", "help")


@dataclass(frozen=True)
class Command:
    """A parsed thread command."""

    word: str
    number: int | None = None
    rest: str = ""
    always: bool = False  # `approve always`: the tool is approved for the rest of the run


def parse_command(text: str) -> Command | None:
    """The command a reply is, or None when it is ordinary text for the team."""
    stripped = text.strip()
    match = re.fullmatch(r"[`*_]*([A-Za-z]+)[`*_.!]*(?:\s+(.*))?", stripped, re.S)
    if not match:
        return None
    word, rest = match.group(1).lower(), (match.group(2) or "").strip()
    if word not in _WORDS:
        return None
    if word in _ALONE:
        return Command(word) if not rest else None
    number, always = None, False
    if word in ("approve", "deny"):
        if word == "approve" and (m := _ALWAYS.match(rest)):
            always, rest = True, m.group(1).strip()
        m = re.match(r"#?(\d+)\b[:,]?\s*(.*)", rest, re.S)
        if m:
            number, rest = int(m.group(1)), m.group(2).strip()
        if word == "approve" and not always and (m := _ALWAYS.match(rest)):
            always, rest = True, m.group(1).strip()
    return Command(word, number, rest, always)


_ALWAYS = re.compile(r"always\b[:,]?\s*(.*)", re.S | re.I)
