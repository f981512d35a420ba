"""Host-test fixtures: a recording poster, hosts started on the test's store, and the spans
a test's code exported (an in-memory OpenTelemetry exporter)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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


_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))


@pytest.fixture
def spans(monkeypatch):
    # The global provider can be set once per process; the SDK's own test hook resets it.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", _provider)
    _exporter.clear()
    yield _exporter
    _exporter.clear()
