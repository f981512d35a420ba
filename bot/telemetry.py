"""OpenTelemetry spans with GenAI semantic-convention attributes.

Exporters come from the standard OTEL_* variables (OTEL_TRACES_EXPORTER: otlp,
console or none; the OTLP endpoint and protocol variables), checked at start.
With none set, the API's no-op tracer is used: spans cost a function call and
export nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from threadteam.teams.engine import ModelSource, ToolRunner, invoke_tool
from threadteam.teams.events import ToolCallRequested
from threadteam.teams.models.base import Model, ModelRequest, ModelResponse, TextSink
from threadteam.teams.tools import Tool, ToolContext

from .errors import ConfigError

__all__ = [
    "EXPORTERS", "TRACER_NAME", "TracedModel", "TracedModels", "record_wait", "run_parent", "setup_tracing",
    "span", "traced_tools", "tracer",
]

TRACER_NAME = "threadteam"

_configured = False

#: The OTEL_TRACES_EXPORTER values threadteam can honour.
EXPORTERS = ("otlp", "console", "none")
#: OTLP protocols and the module of each one's span exporter (the `otlp` extra has HTTP).
_PROTOCOLS = {"http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
              "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"}
_INSTALL = "pip install 'threadteam[otlp]'"


def setup_tracing(env: Mapping[str, str] | None = None) -> bool:
    """Install an SDK tracer provider when OTEL_* asks for export; True if installed.

    A wrong setting is a `ConfigError` of one line naming the variable that is wrong
    (OTEL_TRACES_EXPORTER, an OTLP endpoint or protocol variable), raised before
    anything is installed.
    """
    global _configured
    env = dict(os.environ if env is None else env)
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    kinds = _exporter_kinds(env)
    if _configured or not kinds:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporters: list[SpanExporter] = [
        ConsoleSpanExporter() if kind == "console" else _otlp_exporter(env) for kind in kinds]
    provider = TracerProvider(resource=Resource.create(
        {"service.name": env.get("OTEL_SERVICE_NAME", "threadteam")}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def _exporter_kinds(env: Mapping[str, str]) -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER names ("otlp,console"), or otlp when only an
    OTLP endpoint is set; [] for none. Checks the OTLP settings such an exporter reads."""
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    kinds = list(dict.fromkeys(k.strip().lower() for k in raw.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in EXPORTERS]
    if unknown:
        raise ConfigError(f"OTEL_TRACES_EXPORTER={raw}: threadteam has no {' or '.join(unknown)} "
                          f"exporter; use otlp, console or none (for Zipkin or Jaeger, send "
                          f"OTLP to a collector)")
    if not kinds and _endpoint(env) is not None:
        kinds = ["otlp"]
    kinds = [k for k in kinds if k != "none"]
    if "otlp" in kinds:
        _protocol(env)
    return kinds


def _endpoint(env: Mapping[str, str]) -> str | None:
    """The OTLP endpoint variable that is set (the traces one wins), checked to be a URL."""
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        value = env.get(variable, "").strip()
        if value:
            if not value.startswith(("http://", "https://")):
                raise ConfigError(f"{variable} must be a URL such as http://collector:4318, "
                                  f"got {value!r}")
            return variable
    return None


def _protocol(env: Mapping[str, str]) -> tuple[str, str | None]:
    """(the OTLP protocol, the variable that chose it, None for the default)."""
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(variable, "").strip().lower()
        if value:
            if value not in _PROTOCOLS:
                raise ConfigError(f"{variable}={value} is not a protocol threadteam can send "
                                  f"traces with: use {' or '.join(_PROTOCOLS)}")
            return value, variable
    return "http/protobuf", None


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    """The OTLP span exporter; if it is not installed, the error names the variable that
    asked for it: the protocol, OTEL_TRACES_EXPORTER, or the endpoint."""
    protocol, chosen_by = _protocol(env)
    try:
        module = importlib.import_module(_PROTOCOLS[protocol])
    except ImportError as exc:
        raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
        if chosen_by is not None and protocol == "grpc":
            why = f"{chosen_by}={protocol} needs the gRPC OTLP exporter"
            fix = f"pip install opentelemetry-exporter-otlp-proto-grpc, or set {chosen_by}=http/protobuf"
        elif raw:
            why, fix = f"OTEL_TRACES_EXPORTER={raw} needs the OTLP exporter", \
                f"{_INSTALL}, or unset OTEL_TRACES_EXPORTER"
        else:
            variable = _endpoint(env)
            why, fix = f"{variable} is set, so traces go out over OTLP, which needs the OTLP " \
                "exporter", f"{_INSTALL}, or unset {variable}"
        raise ConfigError(f"{why}, and it is not installed: {fix}") from exc
    return module.OTLPSpanExporter()


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


#: A provider the API loads by name from the environment on first use (it is read then).
_NAMED = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
_UNKNOWN = object()


def _off() -> bool:
    """No SDK tracer provider is installed: the API would hand out non-recording spans.

    Asked for every span. The API's `get_tracer_provider` looks the environment up each
    time until a provider is set (a failing look-up: ~3% of the bot's CPU), so the
    provider it would return is read first, where it keeps it."""
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None and not _NAMED:
        return True
    if provider is None or provider is _UNKNOWN:
        provider = trace.get_tracer_provider()
    return isinstance(provider, trace.ProxyTracerProvider)


@contextmanager
def span(name: str, start_time: float | None = None, **attributes: Any) -> Iterator[trace.Span]:
    """A span with attributes (None values dropped); start_time in epoch seconds."""
    if _off():  # skip the API's work for spans nobody records
        yield trace.INVALID_SPAN
        return
    attrs = {k.replace("__", "."): v for k, v in attributes.items() if v is not None}
    kwargs: dict[str, Any] = {"attributes": attrs}
    if start_time:
        kwargs["start_time"] = int(start_time * 1e9)
    with tracer().start_as_current_span(name, **kwargs) as s:
        yield s


def record_wait(what: str, thread: str, run_id: str, started: float, ended: float) -> None:
    """A span for a wait for a person, recorded when the wait ends (no task held meanwhile)."""
    s = tracer().start_span(f"await {what}", context=trace.set_span_in_context(run_parent(run_id)),
                            start_time=int(started * 1e9), attributes={
        "threadteam.thread": thread, "threadteam.run_id": run_id, "threadteam.wait": what})
    s.end(end_time=int(ended * 1e9))


def run_parent(run_id: str) -> trace.Span:
    """All spans of one run share a trace id derived from the run id, across processes."""
    trace_id = int(hashlib.sha256(run_id.encode()).hexdigest()[:32], 16) or 1
    ctx = SpanContext(trace_id=trace_id, span_id=(trace_id & 0xFFFFFFFFFFFFFFFF) or 1,
                      is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return NonRecordingSpan(ctx)


# -- wrappers: the engine's seams, traced ----------------------------------------------------
class TracedModels:
    """A model source whose models trace each call: an agent's turn and its model call
    (`invoke_agent`, `chat`), or the selector's call (`chat`)."""

    def __init__(self, inner: ModelSource, thread: str) -> None:
        self.inner, self.thread = inner, thread

    def resolve_name(self, *preferred: str | None) -> str:
        return self.inner.resolve_name(*preferred)

    def get(self, name: str) -> Model:
        return TracedModel(self.inner.get(name), self.thread)


class TracedModel:
    """One model, its calls wrapped in GenAI spans; everything else passes through."""

    def __init__(self, inner: Model, thread: str) -> None:
        self.inner, self.thread = inner, thread
        self.name = inner.name

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None,
                       **options: Any) -> ModelResponse:
        """The inner model's answer, traced; keyword options (e.g. `on_retry`) pass through."""
        if _off():  # no SDK installed: two spans' bookkeeping would cost 7 us a call
            return await self.inner.complete(request, on_text, **options)
        if request.purpose == "select":
            return await self._chat(request, on_text, options)
        with span(f"invoke_agent {request.agent}", gen_ai__operation__name="invoke_agent",
                  gen_ai__agent__name=request.agent, threadteam__thread=self.thread):
            return await self._chat(request, on_text, options)

    async def _chat(self, request: ModelRequest, on_text: TextSink | None,
                    options: dict[str, Any]) -> ModelResponse:
        with span(f"chat {request.model}", gen_ai__operation__name="chat",
                  gen_ai__request__model=request.model, gen_ai__agent__name=request.agent) as s:
            response = await self.inner.complete(request, on_text, **options)
            usage = response.usage
            s.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            s.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
            # Both are counted in input_tokens too, as the GenAI conventions ask.
            s.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cached_input_tokens)
            s.set_attribute("gen_ai.usage.cache_creation.input_tokens", usage.cache_write_tokens)
            s.set_attribute("gen_ai.response.model", response.model or request.model)
            return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def traced_tools(thread: str, inner: ToolRunner = invoke_tool) -> ToolRunner:
    """A tool runner that wraps each tool's execution in an `execute_tool` span."""
    async def run(tool: Tool, request: ToolCallRequested, context: ToolContext) -> str:
        with span(f"execute_tool {request.tool}", gen_ai__operation__name="execute_tool",
                  gen_ai__tool__name=request.tool, gen_ai__tool__call__id=request.call_id,
                  gen_ai__agent__name=request.agent, threadteam__thread=thread):
            return await inner(tool, request, context)
    return run
