"""One `redact` for model errors, logs and CLI errors: secrets and token shapes never get out."""

from __future__ import annotations

from threadteam.teams.redact import redact

SLACK = "xoxb-" + "1234567890-abcdefghij"  # built at run time: no token shape in the source
DISCORD = "M" + "T" * 25 + ".Gabcde." + "x" * 30
XAPP = "xapp-" + "1-A0-123456"  # fakes, built at run time like SLACK
OPENAI = "sk-" + "proj-abcdefghijkl123"
RUN_ID = "3f2a9c0d4b1e4f6a8c7d9e0f1a2b3c4d"


def test_given_secrets_and_every_known_token_shape_are_masked():
    text = (f"slack {SLACK} app {XAPP} key {OPENAI} "
            f"discord {DISCORD} via redis://:hunter2@host:6379/0 and configured s3cr3t-value")
    cleaned = redact(text, ["s3cr3t-value"], mask="***")
    for secret in (SLACK, XAPP, OPENAI, DISCORD, "hunter2",
                   "s3cr3t-value"):
        assert secret not in cleaned
    assert "redis://***@host:6379/0" in cleaned


def test_opaque_runs_are_masked_for_model_errors_but_run_ids_stay_in_logs():
    assert redact(f"run {RUN_ID} failed") == "run [redacted] failed"
    assert redact(f"run {RUN_ID} failed", opaque=False) == f"run {RUN_ID} failed"


def test_short_or_empty_secrets_do_not_blank_out_ordinary_words():
    assert redact("a bot said hi", ["", None, "a"]) == "a bot said hi"


def test_redaction_is_linear_on_a_long_hostile_line():
    import time

    hostile = "://" + "a:" * 50_000 + "sk-" * 30_000
    start = time.perf_counter()
    redact(hostile)
    assert time.perf_counter() - start < 0.5
