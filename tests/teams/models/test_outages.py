"""Models that break off, hang or crawl: what the caller is told, and how soon.

Both vendors, through the real clients and the fake servers.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI, FakeServer
from threadteam.teams.errors import ModelConnectionError, ModelError, ModelHTTPError, ModelTimeout
from threadteam.teams.models import Model, ModelPool, RehearsalModel
from threadteam.teams.models._retry import Failure

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

    @property
    def who(self) -> str:
        """The provider at the start of a sentence."""
        return "The OpenAI-compatible server" if self.kind == "openai" else "Anthropic"

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


# Deadlines shrunk so the tests stay fast (the defaults are 30 s of silence per attempt,
# and 120 s for the answer to begin). QUICK is for servers that never answer; where a
# healthy answer must arrive within the silence allowed, PATIENT leaves a loaded machine
# ample time for it.
QUICK = {"THREADTEAM_MODEL_TIMEOUT": "0.2", "THREADTEAM_TURN_TIMEOUT": "0.6"}
PATIENT = {"THREADTEAM_MODEL_TIMEOUT": "0.5", "THREADTEAM_TURN_TIMEOUT": "5"}


async def test_a_hung_model_is_reported_within_the_turns_deadline(vendor):
    for _ in range(4):
        vendor.fake.queue_hang()  # not even headers
    model = vendor.model(**QUICK)

    started = time.monotonic()
    async with asyncio.timeout(5):  # before the fix: 120 s x 4 attempts
        with pytest.raises(ModelTimeout) as caught:
            await model.complete(ask())
    took = time.monotonic() - started

    assert 0.6 <= took < 3
    assert f"{vendor.label} did not answer within 0.6 s" in str(caught.value)
    # Each attempt was cut off by the idle timeout: that is the setting to raise if the
    # model merely thinks long before its first word.
    assert "THREADTEAM_MODEL_TIMEOUT" in str(caught.value)
    assert caught.value.retryable and caught.value.seconds == 0.6
    assert len(vendor.fake.requests) >= 2  # silent attempts were given up and tried again


async def test_one_long_silent_attempt_is_cut_at_the_turns_deadline(vendor):
    vendor.fake.queue_hang()
    model = vendor.model(THREADTEAM_MODEL_TIMEOUT="30", THREADTEAM_TURN_TIMEOUT="0.3")

    started = time.monotonic()
    with pytest.raises(ModelTimeout) as caught:
        await model.complete(ask())

    assert time.monotonic() - started < 3
    assert "did not answer within 0.3 s" in str(caught.value)
    assert "THREADTEAM_TURN_TIMEOUT" in str(caught.value)
    assert len(vendor.fake.requests) == 1


async def test_a_model_that_falls_silent_mid_answer_is_reported(vendor):
    vendor.fake.queue_hang("Half an ans")
    sink = Collector()
    model = vendor.model(**PATIENT)

    async with asyncio.timeout(5):
        with pytest.raises(ModelTimeout) as caught:
            await model.complete(ask(), sink)

    assert "fell silent mid-answer" in str(caught.value) and "0.5 s" in str(caught.value)
    assert sink.text == "Half an ans"
    assert len(vendor.fake.requests) == 1


async def test_a_slow_but_steady_answer_is_not_cut_off(vendor):
    vendor.fake.chunk_delay = 0.06  # each of 12-14 events well within the idle timeout...
    vendor.fake.queue_text("one two three four five six seven eight", chunks=8)
    sink = Collector()
    model = vendor.model(THREADTEAM_MODEL_TIMEOUT="1", THREADTEAM_TURN_TIMEOUT="0.5")

    started = time.monotonic()
    answer = await model.complete(ask(), sink)

    assert time.monotonic() - started > 0.5  # ...longer than the turn's deadline, and yet
    assert answer.text == sink.text == "one two three four five six seven eight"
    assert len(vendor.fake.requests) == 1


async def test_a_model_that_keeps_failing_says_what_failed_at_the_deadline(vendor):
    vendor.fake.queue_error(500)
    vendor.fake.queue_error(429, retry_after=5)  # longer than the turn has left
    model = vendor.model(**QUICK)

    async with asyncio.timeout(5):
        with pytest.raises(ModelHTTPError) as caught:
            await model.complete(ask())

    assert caught.value.status == 429
    assert "rate-limiting" in str(caught.value) and "Gave up after 0.6 s" in str(caught.value)


@pytest.mark.parametrize("variable", ["THREADTEAM_MODEL_TIMEOUT", "THREADTEAM_TURN_TIMEOUT"])
@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf"])
def test_timeouts_must_be_positive_seconds(variable, value):
    with pytest.raises(ModelError) as caught:
        ModelPool(env={variable: value})
    assert variable in str(caught.value) and repr(value) in str(caught.value)


class Notices:
    """An `on_retry` sink: the sentences a thread would be shown."""

    def __init__(self) -> None:
        self.said: list[str] = []

    async def __call__(self, sentence: str) -> None:
        self.said.append(sentence)


async def test_a_slow_first_attempt_is_said_before_the_retry(vendor):
    vendor.fake.queue_hang()
    vendor.fake.queue_text("made it")
    notices, sink = Notices(), Collector()

    answer = await vendor.model(**PATIENT).complete(ask(), sink, on_retry=notices)

    assert answer.text == sink.text == "made it"
    assert notices.said == [f"{vendor.who} is slow to answer; trying again (2 of 4)…"]


async def test_each_retry_says_what_went_wrong(vendor):
    vendor.fake.queue_error(500)
    vendor.fake.queue_error(429, retry_after=0.01)
    vendor.fake.queue_drop("")
    vendor.fake.queue_text("made it")
    notices = Notices()

    answer = await vendor.model().complete(ask(), on_retry=notices)

    assert answer.text == "made it"
    assert notices.said == [
        f"{vendor.who} had a server error (HTTP 500); trying again (2 of 4)…",
        f"{vendor.who} is rate-limiting this key; trying again (3 of 4)…",
        f"{vendor.who} dropped the connection; trying again (4 of 4)…",
    ]


async def test_an_overloaded_anthropic_stream_says_so(fake_anthropic, claude):
    fake_anthropic.queue_stream_error("")  # an overloaded_error event before any text
    fake_anthropic.queue_text("made it")
    notices = Notices()

    await claude.complete(ask(), on_retry=notices)

    assert notices.said == ["Anthropic is overloaded; trying again (2 of 4)…"]


async def test_nothing_is_said_when_no_retry_comes(vendor):
    vendor.fake.queue_text("first time")
    vendor.fake.queue_error(400)  # not retryable
    vendor.fake.queue_drop("Half an answer")  # text was shown: a retry would repeat it
    notices = Notices()
    model = vendor.model()

    await model.complete(ask(), on_retry=notices)
    with pytest.raises(ModelHTTPError):
        await model.complete(ask(), on_retry=notices)
    with pytest.raises(ModelConnectionError):
        await model.complete(ask(), on_retry=notices)

    assert notices.said == []


async def test_a_notice_that_cannot_be_posted_does_not_fail_the_turn(vendor, caplog):
    vendor.fake.queue_error(503)
    vendor.fake.queue_text("made it anyway")

    async def broken(sentence: str) -> None:
        raise RuntimeError("the chat platform is down")

    answer = await vendor.model().complete(ask(), on_retry=broken)

    assert answer.text == "made it anyway"
    assert "trying again (2 of 4)" in caplog.text


async def test_models_that_never_retry_take_the_callback_too():
    notices = Notices()
    answer = await RehearsalModel().complete(ask(), None, on_retry=notices)
    assert answer.text.startswith("[rehearsal] ") and notices.said == []


def test_a_long_wait_is_said_in_seconds(gpt):
    failure = Failure(ModelHTTPError("rate limited", status=429))
    assert gpt.retry_sentence(failure, 2, 20.0) == (
        "The OpenAI-compatible server is rate-limiting this key; trying again in 20 s (2 of 4)…")
