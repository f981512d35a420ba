"""The console adapter: a local terminal is the thread."""

from .poster import ConsolePoster

__all__ = ["ConsolePoster"]
