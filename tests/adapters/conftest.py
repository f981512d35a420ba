"""Fixtures for every adapter test module: the Slack end-to-end stack, and the Discord
adapter started against the fake Discord, remembering in the test's SQLite store
(`sqlite_store`, tests/conftest.py)."""

from collections.abc import AsyncIterator

import pytest

from tests.adapters.slack_stack import stack_factory
from tests.adapters.test_discord_wire import RecordingHost, started
from tests.fakes.discord import FakeDiscord
from threadteam.adapters.discord import DiscordAdapter
from threadteam.bot.memory import StoreMemory
from threadteam.bot.stores import SQLiteStore

__all__ = ["adapter", "stack_factory"]


@pytest.fixture
async def adapter(fake_discord: FakeDiscord, sqlite_store: SQLiteStore
                  ) -> AsyncIterator[DiscordAdapter]:
    a = await started(fake_discord, RecordingHost(), StoreMemory(sqlite_store, "discord"))
    yield a
    await a.aclose()
