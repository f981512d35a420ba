"""Spans for a run, each agent turn, model call, tool call and wait, with GenAI attributes."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.bot.helpers import ANNOUNCE, make_host, say, summon, thread, write_teams
from tests.fakes.poster import RecordingPoster
from threadteam.bot.telemetry import setup_tracing
from threadteam.teams.models.scripted import ScriptedModel, reply

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


async def test_a_run_is_traced_with_genai_attributes(spans, tmp_path):
    from threadteam.bot.stores import SQLiteStore

    store = SQLiteStore(str(tmp_path / "s.sqlite3"))
    await store.start()
    model = ScriptedModel([
        reply("Posting.", ("post_message", '{"channel": "#general", "text": "Hi"}')),
        "DONE"])
    host = make_host(store, RecordingPoster(), model,
                     write_teams(tmp_path / "teams", ANNOUNCE.format(approvers="[]")))
    await host.start()
    key = thread()
    await host.handle(summon(key, "announce the launch"))
    await host.idle()
    await host.handle(say(key, "approve"))
    await host.idle()
    await host.aclose()
    await store.aclose()

    finished = spans.get_finished_spans()
    by_name = {}
    for s in finished:
        by_name.setdefault(s.name, []).append(s)
    chats = by_name["chat scripted"]
    assert len(chats) == 2
    assert chats[0].attributes["gen_ai.operation.name"] == "chat"
    assert chats[0].attributes["gen_ai.request.model"] == "scripted"
    assert chats[0].attributes["gen_ai.agent.name"] == "announcer"
    assert chats[0].attributes["gen_ai.usage.input_tokens"] > 0
    assert "gen_ai.usage.output_tokens" in chats[0].attributes
    [turn, *_] = by_name["invoke_agent announcer"]
    assert turn.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert turn.attributes["threadteam.thread"] == str(key)
    [tool] = by_name["execute_tool post_message"]
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    [wait] = by_name["await approval"]
    assert wait.end_time >= wait.start_time
    runs = by_name["run announce"]
    assert len(runs) == 2  # one per stretch of work: before and after the approval
    trace_ids = {s.context.trace_id for s in finished}
    assert len(trace_ids) == 1, "every span of one run shares the run's trace"
    assert chats[0].parent is not None and turn.context.span_id == chats[0].parent.span_id


def test_nothing_is_installed_without_otel_variables():
    assert setup_tracing({}) is False
    assert setup_tracing({"OTEL_TRACES_EXPORTER": "none"}) is False
    assert setup_tracing({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}) is False
