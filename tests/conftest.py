"""Shared fixtures: the wire-level fakes live in tests/fakes/ and register here."""

from collections.abc import AsyncIterator

import pytest

from threadteam.bot.stores import SQLiteStore

pytest_plugins = [
    "tests.fakes.redis_server",
    "tests.fakes.openai_server",
    "tests.fakes.anthropic_server",
    "tests.fakes.slack",
    "tests.fakes.discord",
    "tests.fakes.poster",
    "tests.teams.scripted_check",  # every ScriptedModel a test makes is checked at its end
]


@pytest.fixture
async def sqlite_store(tmp_path) -> AsyncIterator[SQLiteStore]:
    """A SQLite store of the test's own, in a real file."""
    store = SQLiteStore(str(tmp_path / "runs.sqlite3"))
    await store.start()
    yield store
    await store.aclose()
