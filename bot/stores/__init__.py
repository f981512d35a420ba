"""Where runs live: `open_store(url)` picks SQLite (embedded default) or Redis (shared)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import platformdirs

from threadteam.bot.errors import ConfigError
from threadteam.bot.lazy import exports
from threadteam.bot.stores.base import RunInfo, Store

if TYPE_CHECKING:
    from threadteam.bot.stores.redis import RedisStore
    from threadteam.bot.stores.sqlite import SQLiteStore

__all__ = ["RedisStore", "RunInfo", "SQLiteStore", "Store", "default_store_url", "open_store"]

# redis-py (and what it imports) loads only when a Redis store is asked for.
__getattr__ = exports(__name__, {"RedisStore": ".redis", "SQLiteStore": ".sqlite"})

_SQLITE = "sqlite:///"


def default_store_url() -> str:
    """The embedded store in the user's state directory."""
    directory = Path(platformdirs.user_state_dir("threadteam"))
    return f"{_SQLITE}{directory / 'threadteam.sqlite3'}"


def open_store(url: str) -> Store:
    """A store (not yet started) for `sqlite:///path` or `redis://host:port/db` (`rediss://`
    too, and `unix:///path/to/redis.sock?db=0` for a Redis on a local socket).

    `sqlite:///relative/file` is relative to the working directory and
    `sqlite:////abs/file` is absolute. A Redis URL may end in `?prefix=...` to
    keep several deployments apart on one server (default `tt:`). A Redis Cluster is
    found by asking the node the URL names; `?cluster=true` (or `false`) says so instead.
    """
    if url.startswith(_SQLITE) and len(url) > len(_SQLITE):
        from threadteam.bot.stores.sqlite import SQLiteStore

        return SQLiteStore(url[len(_SQLITE):])
    parts = urlsplit(url)
    if (parts.scheme in ("redis", "rediss") and parts.hostname) or (
            parts.scheme == "unix" and parts.path):
        query = parse_qs(parts.query)
        prefix = query.pop("prefix", ["tt:"])[-1]
        cluster = _flag(query.pop("cluster", [""])[-1])
        # redis-py would pass an unknown query argument on to its connections.
        rest = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        from threadteam.bot.stores.redis import RedisStore

        return RedisStore(rest, prefix, cluster=cluster)
    raise ConfigError(
        "THREADTEAM_STORE must be sqlite:///path or redis://host:port/db, "
        f"got {_without_password(url)!r}"
    )


def _flag(value: str) -> bool | None:
    """`?cluster=`: true, false, or (absent) None to ask the server."""
    said = value.strip().lower()
    if said in ("", "auto"):
        return None
    if said in ("true", "yes", "1", "on"):
        return True
    if said in ("false", "no", "0", "off"):
        return False
    raise ConfigError(f"THREADTEAM_STORE: cluster= must be true or false, got {value!r}")


def _without_password(url: str) -> str:
    # A malformed URL may still carry a password; the error must not show it.
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
