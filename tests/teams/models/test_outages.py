"""Streams that break: what the caller is told, for both vendors, through the real clients."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI, FakeServer
from threadteam.teams.errors import ModelConnectionError
from threadteam.teams.models import Model, ModelPool

from .conftest import TINY
from .helpers import ANTHROPIC_KEY, OPENAI_KEY, Collector, ask


@dataclass
class Vendor:
    """One vendor's fake server, and its models through a real ModelPool (`env` added)."""

    kind: str
    fake: FakeServer
    pools: list[ModelPool] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How error sentences name the provider."""
        return "OpenAI-compatible server" if self.kind == "openai" else "Anthropic"

    def model(self, **env: str) -> Model:
        if self.kind == "openai":
            base = {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": self.fake.url}
            name = "openai:gpt-4o-mini"
        else:
            base = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": self.fake.url}
            name = "anthropic:claude-3-5-haiku-latest"
        pool = ModelPool(env={**base, **env}, retry_base=TINY)
        self.pools.append(pool)
        return pool.get(name)


@pytest_asyncio.fixture(params=["openai", "anthropic"])
async def vendor(request):
    fake = FakeOpenAI() if request.param == "openai" else FakeAnthropic()
    async with fake:
        made = Vendor(request.param, fake)
        yield made
        for pool in made.pools:
            await pool.aclose()


async def test_a_stream_cut_mid_answer_is_reported_as_dropped(vendor):
    vendor.fake.queue_drop("Half an ans")
    vendor.fake.queue_text("never requested")
    sink = Collector()

    with pytest.raises(ModelConnectionError) as caught:
        await vendor.model().complete(ask(), sink)

    text = str(caught.value)
    assert "dropped mid-answer" in text and vendor.label in text
    assert "could not connect" not in text.lower()
    assert caught.value.mid_answer and caught.value.retryable  # a person may `retry`
    assert sink.text == "Half an ans"  # said once: no automatic retry repeats it
    assert len(vendor.fake.requests) == 1


async def test_a_stream_cut_before_any_text_is_tried_again(vendor):
    vendor.fake.queue_drop("")
    vendor.fake.queue_text("second try")
    sink = Collector()

    answer = await vendor.model().complete(ask(), sink)

    assert answer.text == sink.text == "second try"
    assert len(vendor.fake.requests) == 2
