"""How an agent looks in a thread: display name, avatar, colour."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

__all__ = ["Persona", "is_emoji"]

# Emoji are symbols (So), with skin tones (Sk), variation selectors (Mn), keycaps (Me),
# and joiners and tags (Cf) between them; a keycap starts with a digit, '#' or '*'.
_EMOJI_PARTS = frozenset({"So", "Sk", "Mn", "Me", "Cf"})
_KEYCAP = "\u20e3"
# The longest emoji in use (a family, a subdivision flag) are about ten code points.
_EMOJI_MAX = 16


def is_emoji(text: str) -> bool:
    """Whether `text` is emoji characters ("🐂", "👩‍💻", "🇫🇷", "1️⃣"), not a word or a URL."""
    if not text or len(text) > _EMOJI_MAX:
        return False
    keycap = _KEYCAP in text
    symbols = 0
    for ch in text:
        kind = unicodedata.category(ch)
        if kind == "So":
            symbols += 1
        elif kind not in _EMOJI_PARTS and not (keycap and ch in "0123456789#*"):
            return False
    return symbols > 0 or keycap


@dataclass(frozen=True, slots=True)
class Persona:
    """An agent's face. `avatar` is `:emoji:`, an emoji character ("🐂"), an https URL, or empty.

    Adapters read it through `avatar_emoji` (an `:emoji:` name, for Slack's
    `icon_emoji`), `emoji` (the characters themselves, which no icon field takes:
    show them before the name) and `avatar_url` (an image).
    """

    display_name: str
    avatar: str = ""
    color: str = ""

    @property
    def avatar_emoji(self) -> str | None:
        """The avatar as `:emoji:` when it is one."""
        a = self.avatar
        return a if len(a) > 2 and a.startswith(":") and a.endswith(":") else None

    @property
    def emoji(self) -> str | None:
        """The avatar as emoji characters ("🐂") when it is given that way."""
        return self.avatar if is_emoji(self.avatar) else None

    @property
    def avatar_url(self) -> str | None:
        """The avatar as an https URL when it is one."""
        return self.avatar if self.avatar.startswith(("https://", "http://")) else None
