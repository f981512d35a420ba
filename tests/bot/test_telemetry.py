"""Spans for a run, each agent turn, model call, tool call and wait, with GenAI attributes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bot.helpers import ANNOUNCE, make_host, say, summon, thread, write_teams
from tests.fakes.poster import RecordingPoster
from threadteam.bot.errors import ConfigError
from threadteam.bot.telemetry import setup_tracing
from threadteam.teams.models.scripted import ScriptedModel, reply


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


# -- a wrong OTEL_* setting names the variable that is wrong ----------------------------------
_OTLP_MODULES = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                 "opentelemetry.exporter.otlp.proto.grpc.trace_exporter")


@pytest.fixture
def no_otlp(monkeypatch):
    """The `otlp` extra not installed (as in the slim image), whatever this machine has."""
    for module in _OTLP_MODULES:
        monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize(("env", "said"), [
    ({"OTEL_TRACES_EXPORTER": "zipkin"},
     "OTEL_TRACES_EXPORTER=zipkin: threadteam has no zipkin exporter; use otlp, console or none"),
    ({"OTEL_TRACES_EXPORTER": "console,jaeger", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
     "OTEL_TRACES_EXPORTER=console,jaeger: threadteam has no jaeger exporter"),
    ({"OTEL_TRACES_EXPORTER": "otlp"},
     "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter, and it is not installed: "
     "pip install 'threadteam[otlp]', or unset OTEL_TRACES_EXPORTER"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"},
     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, so traces go out over OTLP"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
     "OTEL_EXPORTER_OTLP_ENDPOINT is set, so traces go out over OTLP"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
     "OTEL_EXPORTER_OTLP_ENDPOINT must be a URL such as http://collector:4318, got 'collector:4318'"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not a protocol threadteam can send traces with"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc needs the gRPC OTLP exporter, and it is not "
     "installed: pip install opentelemetry-exporter-otlp-proto-grpc, or set "
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf"),
])
def test_a_wrong_otel_setting_is_one_line_naming_the_wrong_variable(no_otlp, env, said):
    with pytest.raises(ConfigError) as caught:
        setup_tracing(env)
    message = str(caught.value)
    assert message.startswith(said) and "\n" not in message
    wrong = said.split("=")[0].split(" ")[0]
    blamed = {v for v in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
                          "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") if re.search(rf"\b{v}\b", message)}
    assert blamed == {wrong}, f"only {wrong} is blamed: {message}"


def test_settings_that_send_nothing_need_no_exporter(no_otlp):
    assert setup_tracing({"OTEL_TRACES_EXPORTER": "none",
                          "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}) is False
    assert setup_tracing({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "zipkin"}) is False


def test_the_cli_says_a_wrong_exporter_in_one_line_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "THREADTEAM_"))}
    result = subprocess.run(
        [sys.executable, "-m", "threadteam.adapters.cli", "chat", "--store",
         f"sqlite:///{tmp_path}/s.db", "Tabs or spaces?"], input="", text=True,
        capture_output=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
        env={**env, "OTEL_TRACES_EXPORTER": "zipkin"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "threadteam: OTEL_TRACES_EXPORTER=zipkin: threadteam has no zipkin exporter; use otlp, "
        "console or none (for Zipkin or Jaeger, send OTLP to a collector)"]
    assert result.stdout == "", "nothing started"
