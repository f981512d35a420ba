"""The retry policy's pieces: backoff bounds, Retry-After parsing, redaction, giving up."""

from __future__ import annotations

import pytest

from threadteam.teams.errors import ModelHTTPError
from threadteam.teams.models._retry import RetryPolicy, retry_after_seconds
from threadteam.teams.redact import redact

from .helpers import OPENAI_KEY, ask


def test_backoff_grows_with_jitter_and_is_capped():
    policy = RetryPolicy(base=1.0, max_wait=5.0)
    for retry, full in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 5.0)]:
        waits = {policy.backoff(retry) for _ in range(50)}
        assert all(full / 2 <= w <= full for w in waits)
        assert len(waits) > 1  # jittered, so concurrent runs do not retry in lockstep


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after": "0.25"}, 0.25),
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
    ({}, None),
])
def test_retry_after_header(headers, seconds):
    assert retry_after_seconds(headers) == seconds


def test_redact_removes_the_secret_and_key_shaped_text():
    text = f"key {OPENAI_KEY} and sk-proj-abcdefghijkl123 and sk-ant-******xyz9 were bad"
    cleaned = redact(text, [OPENAI_KEY])
    assert "DoNotLeak" not in cleaned and "abcdefghijkl" not in cleaned and "xyz9" not in cleaned
    assert cleaned.startswith("key [redacted]")


async def test_a_retry_after_beyond_the_cap_gives_up_at_once(gpt, fake_openai):
    fake_openai.queue_error(429, retry_after=600)

    with pytest.raises(ModelHTTPError) as caught:
        await gpt.complete(ask())

    assert len(fake_openai.requests) == 1
    assert caught.value.retryable and caught.value.status == 429
    assert "600" in str(caught.value)
