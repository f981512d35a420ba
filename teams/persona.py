"""How an agent looks in a thread: display name, avatar, colour."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Persona"]


@dataclass(frozen=True, slots=True)
class Persona:
    """An agent's face. `avatar` is `:emoji:`, an https URL, or empty."""

    display_name: str
    avatar: str = ""
    color: str = ""

    @property
    def avatar_emoji(self) -> str | None:
        """The avatar as `:emoji:` when it is one."""
        a = self.avatar
        return a if len(a) > 2 and a.startswith(":") and a.endswith(":") else None

    @property
    def avatar_url(self) -> str | None:
        """The avatar as an https URL when it is one."""
        return self.avatar if self.avatar.startswith(("https://", "http://")) else None
