"""What a model error says where people can read it, and what only the log keeps.

A `ModelError`'s text is posted in a shared thread: it names the provider and what to
do, never the internal host of OPENAI_BASE_URL, the provider's response body or a key.
"""

from __future__ import annotations

import logging

import pytest

from threadteam.teams.errors import ModelError, ModelHTTPError

from .helpers import ANTHROPIC_KEY, INTERNAL_HOST, OPENAI_KEY, ask

SECRET = "secret-internal-detail"
UPSTREAM = f"upstream http://{INTERNAL_HOST}:8000/generate failed: {SECRET}"


def assert_fit_for_a_thread(error: ModelError, *, provider: str, advice: str) -> None:
    text = str(error)
    assert provider in text
    assert advice in text
    for leak in (INTERNAL_HOST, "corp.example", SECRET, "upstream", "DoNotLeak", "127.0.0.1"):
        assert leak not in text, f"{leak!r} reached the error text: {text}"


def assert_logged(caplog: pytest.LogCaptureFixture, *needles: str) -> None:
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for needle in needles:
        assert needle in logged
    assert "DoNotLeak" not in logged  # the key stays out of the log too


# status, how often the model layer sends it (retries), advice the person gets
CASES = [
    (500, 4, "try again"),
    (400, 1, "log"),
    (404, 1, "check the model name"),
]


@pytest.mark.parametrize(("status", "sent", "advice"), CASES)
async def test_openai_compatible_errors_name_the_provider_not_the_host(
        internal_gpt, fake_openai, caplog, status, sent, advice):
    caplog.set_level(logging.WARNING)
    for _ in range(sent):
        fake_openai.queue_error(status, message=f"{UPSTREAM} (key {OPENAI_KEY})")

    with pytest.raises(ModelHTTPError) as caught:
        await internal_gpt.complete(ask())

    assert len(fake_openai.requests) == sent
    assert caught.value.status == status
    assert_fit_for_a_thread(caught.value, provider="OpenAI-compatible server", advice=advice)
    assert_logged(caplog, SECRET, f"http://{INTERNAL_HOST}:{fake_openai.port}/v1/chat/completions",
                  f"HTTP {status}")


@pytest.mark.parametrize(("status", "sent", "advice"), CASES)
async def test_anthropic_errors_name_the_provider_not_the_gateway(
        internal_claude, fake_anthropic, caplog, status, sent, advice):
    caplog.set_level(logging.WARNING)
    for _ in range(sent):
        fake_anthropic.queue_error(status, message=f"{UPSTREAM} (key {ANTHROPIC_KEY})")

    with pytest.raises(ModelHTTPError) as caught:
        await internal_claude.complete(ask())

    assert len(fake_anthropic.requests) == sent
    assert caught.value.status == status
    assert_fit_for_a_thread(caught.value, provider="Anthropic", advice=advice)
    assert_logged(caplog, SECRET, INTERNAL_HOST, f"HTTP {status}")


async def test_an_openai_error_event_mid_stream_is_not_quoted(internal_gpt, fake_openai, caplog):
    caplog.set_level(logging.WARNING)
    for _ in range(4):
        fake_openai.queue_stream_error("", message=UPSTREAM)

    with pytest.raises(ModelHTTPError) as caught:
        await internal_gpt.complete(ask())

    assert_fit_for_a_thread(caught.value, provider="OpenAI-compatible server", advice="try again")
    assert_logged(caplog, SECRET)


async def test_an_anthropic_error_event_mid_stream_is_not_quoted(internal_claude, fake_anthropic,
                                                                caplog):
    caplog.set_level(logging.WARNING)
    fake_anthropic.queue_stream_error("Half", message=UPSTREAM)

    with pytest.raises(ModelHTTPError) as caught:
        await internal_claude.complete(ask())

    assert_fit_for_a_thread(caught.value, provider="Anthropic", advice="overloaded")
    assert_logged(caplog, SECRET)


async def test_a_refused_key_on_an_internal_server_names_the_variable(internal_gpt, fake_openai):
    fake_openai.queue_error(401)  # the fake echoes the key it got

    with pytest.raises(ModelError) as caught:
        await internal_gpt.complete(ask())

    assert_fit_for_a_thread(caught.value, provider="OpenAI-compatible server",
                            advice="OPENAI_API_KEY")
