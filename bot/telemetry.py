"""OpenTelemetry spans with GenAI semantic-convention attributes.

Exporters come from the standard OTEL_* variables. With none set, the API's
no-op tracer is used: spans cost a function call and export nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from threadteam.teams.engine import ModelSource, ToolRunner, invoke_tool
from threadteam.teams.events import ToolCallRequested
from threadteam.teams.models.base import Model, ModelRequest, ModelResponse, TextSink
from threadteam.teams.tools import Tool, ToolContext

__all__ = [
    "TRACER_NAME", "TracedModel", "TracedModels", "record_wait", "run_parent", "setup_tracing",
    "span", "traced_tools", "tracer",
]

TRACER_NAME = "threadteam"

_configured = False


def setup_tracing(env: dict[str, str] | None = None) -> bool:
    """Install an SDK tracer provider when OTEL_* asks for export; True if installed."""
    global _configured
    env = dict(os.environ if env is None else env)
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if _configured or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if exporter in ("", "none") and not endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create(
        {"service.name": env.get("OTEL_SERVICE_NAME", "threadteam")}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            from .errors import ConfigError
            raise ConfigError("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not "
                              "installed: pip install 'threadteam[otlp]'") from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


@contextmanager
def span(name: str, start_time: float | None = None, **attributes: Any) -> Iterator[trace.Span]:
    """A span with attributes (None values dropped); start_time in epoch seconds."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # No SDK installed: the API would only hand out non-recording spans. Skip its work.
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
            s.set_attribute("gen_ai.usage.input_tokens", response.usage.input_tokens)
            s.set_attribute("gen_ai.usage.output_tokens", response.usage.output_tokens)
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
