"""Discord: teams summoned with /team or a mention, personas through webhooks, approvals by button."""

from .adapter import DiscordAdapter
from .poster import DiscordPoster

__all__ = ["DiscordAdapter", "DiscordPoster"]
