"""Shared fixtures: the wire-level fakes live in tests/fakes/ and register here."""

pytest_plugins = [
    "tests.fakes.redis_server",
    "tests.fakes.openai_server",
    "tests.fakes.anthropic_server",
    "tests.fakes.slack",
    "tests.fakes.discord",
    "tests.fakes.poster",
    "tests.teams.scripted_check",  # every ScriptedModel a test makes is checked at its end
]
