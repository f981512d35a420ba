"""Errors of the host. They extend the one root in `teams.errors`:

    ThreadteamError
    ├── (teams)        TeamFileError, ToolError, ModelError, ...
    ├── ConfigError    a setting or environment variable is wrong (names it)
    ├── StoreError     the store failed or is unreachable
    │   ├── ConflictError  an append expected another log length (a stale driver)
    │   └── PermanentStoreError  a failure retrying will not cure (pause the run, say so)
    ├── PlatformError  a chat platform refused a call after retries
    └── Refused        an action is outside what the deciding person may reach
"""

from __future__ import annotations

from threadteam.teams.errors import ThreadteamError

__all__ = ["ConfigError", "ConflictError", "PermanentStoreError", "PlatformError", "Refused",
           "StoreError", "transient"]


class ConfigError(ThreadteamError):
    """A setting is wrong; the message names the flag or variable and what to do."""


class StoreError(ThreadteamError):
    """The store failed (unreachable, corrupt, ...)."""


class ConflictError(StoreError):
    """Another driver appended to the run first; reload and decide again."""

    def __init__(self, run_id: str, expected: int, actual: int) -> None:
        self.run_id = run_id
        self.expected = expected
        self.actual = actual
        super().__init__(f"run {run_id}: expected log length {expected}, found {actual}")


class PermanentStoreError(StoreError):
    """A store failure that retrying will not cure: a value the store cannot hold, a
    corrupt file, a key of the wrong type, an unknown run. A plain `StoreError` is
    transient (unreachable, locked) and worth retrying; this one is not."""


class PlatformError(ThreadteamError):
    """A chat platform refused a call after retries."""


class Refused(ThreadteamError):
    """An action is outside what the deciding person may reach; the message says why,
    in words fit for the thread and for the model."""


def transient(exc: BaseException) -> bool:
    """Whether `exc` is the store failing in a way that may pass by itself (unreachable,
    locked, a full disk), worth waiting out rather than reporting as a fault."""
    return isinstance(exc, StoreError) and not isinstance(exc, PermanentStoreError)
