"""Host-test fixtures: a recording poster, and hosts started on the test's store."""

from __future__ import annotations

import pytest

from tests.bot.helpers import make_host, write_teams
from tests.fakes.poster import RecordingPoster
from threadteam.teams.models.scripted import ScriptedModel


@pytest.fixture
def poster() -> RecordingPoster:
    return RecordingPoster()


@pytest.fixture
async def started(store, poster, tmp_path):
    """Start a host on the test's store with a given scripted model and team texts."""
    hosts = []

    async def start(model: ScriptedModel, *teams: str, **options):
        host = make_host(store, poster, model, write_teams(tmp_path / "teams", *teams), **options)
        await host.start()
        hosts.append(host)
        return host

    yield start
    for h in hosts:
        await h.aclose()
