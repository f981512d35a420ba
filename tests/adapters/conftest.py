"""Fixtures for every adapter test module: the Slack end-to-end stack, a SQLite store of
the test's own, and the Discord adapter started against the fake Discord, remembering in
that store."""

from collections.abc import AsyncIterator

import pytest

from tests.adapters.slack_stack import stack_factory
from tests.adapters.test_discord_wire import RecordingHost, started
from tests.fakes.discord import FakeDiscord
from threadteam.adapters.discord import DiscordAdapter
from threadteam.bot.memory import StoreMemory
from threadteam.bot.stores import SQLiteStore

__all__ = ["adapter", "sqlite_store", "stack_factory"]


@pytest.fixture
async def sqlite_store(tmp_path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(str(tmp_path / "runs.sqlite3"))
    await s.start()
    yield s
    await s.aclose()


@pytest.fixture
async def adapter(fake_discord: FakeDiscord, sqlite_store: SQLiteStore
                  ) -> AsyncIterator[DiscordAdapter]:
    a = await started(fake_discord, RecordingHost(), StoreMemory(sqlite_store, "discord"))
    yield a
    await a.aclose()
