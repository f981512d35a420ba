"""A local fake of OpenAI Chat Completions, speaking the real wire format (SSE included).

Use the `fake_openai` fixture, or `async with FakeOpenAI() as fake:` elsewhere
(benchmarks). Queue answers, point a client at `fake.url`, then look at
`fake.requests`:

    fake_openai.queue_text("Hello there", usage=(12, 3))
    fake_openai.queue_tool_call("search", '{"q": "cats"}', chunks=4)
    fake_openai.queue_error(429, retry_after=0.01)     # then the next queued answer
    fake_openai.queue_stream_error("partial text")     # text, then an error event
    fake_openai.queue_drop("partial text")             # text, then the connection is cut
    fake_openai.queue_hang()                           # no answer at all, until aclose()
    fake_openai.queue_hang("partial text")             # text, then silence
    client = openai.AsyncOpenAI(base_url=fake_openai.url, api_key="sk-test")

To be reached under another host name (an internal one that does not resolve), give
the client `fake.proxy_url` as its HTTP proxy and `fake.url_at(host)` as its base URL.

Answers are served in order. With nothing queued the fake answers 400 "nothing
queued" (so a test fails loudly), unless `fallback_text` is set (benchmarks).
`FakeServer` is the shared base the Anthropic fake builds on too.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Self

import pytest_asyncio
from aiohttp import web

from .prompt_cache import OpenAICache


@dataclass(frozen=True)
class Received:
    """One request the fake received: method, path, headers (lower-case names), JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict


@dataclass(frozen=True)
class Reply:
    """A queued answer: text and `(name, arguments)` tool calls, cut into `chunks` pieces."""

    text: str = ""
    tool_calls: tuple[tuple[str, str], ...] = ()
    usage: tuple[int, int] = (10, 5)
    chunks: int = 3


@dataclass(frozen=True)
class HTTPFailure:
    """A queued error response: status, optional Retry-After, message in the vendor's shape."""

    status: int
    retry_after: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class StreamFailure:
    """A stream that sends `text`, then an error event instead of finishing."""

    text: str = ""
    message: str = "The server had an error while processing your request."


@dataclass(frozen=True)
class Drop:
    """A stream that sends `text`, then the connection is cut (no error event, no end)."""

    text: str = ""


@dataclass(frozen=True)
class Hang:
    """No answer: with `text` None not even headers; otherwise `text`, then silence.

    The request hangs until the fake is closed (or the client gives up).
    """

    text: str | None = None


@dataclass(frozen=True)
class Raw:
    """A 200 stream of exactly these server-sent event texts (for malformed streams)."""

    events: tuple[str, ...]


Step = Reply | HTTPFailure | StreamFailure | Drop | Hang | Raw


def split(text: str, pieces: int) -> list[str]:
    """`text` cut into about `pieces` non-empty parts (at least one part)."""
    if not text:
        return []
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[i:i + size] for i in range(0, len(text), size)]


@dataclass
class FakeServer:
    """Base: an aiohttp app on 127.0.0.1 with a queue of steps and a request log."""

    chunk_delay: float = 0.0
    fallback_text: str | None = None
    requests: list[Received] = field(default_factory=list)
    steps: deque[Step] = field(default_factory=deque)
    url: str = ""
    port: int = 0
    _runner: web.AppRunner | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    path = "/"  # the one POST route a subclass serves
    url_suffix = ""

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, self.port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{self.port}{self.url_suffix}"
        return self

    def url_at(self, host: str) -> str:
        """The base URL under another host name; reach it through `proxy_url`."""
        return f"http://{host}:{self.port}{self.url_suffix}"

    @property
    def proxy_url(self) -> str:
        """The fake as an HTTP proxy: a client using it reaches the fake under any host name
        (`url_at("internal-llm.corp.example")`), even one no DNS server knows."""
        return f"http://127.0.0.1:{self.port}"

    async def aclose(self) -> None:
        self._released.set()  # hanging requests end, so shutdown does not wait on them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def queue(self, *steps: Step) -> None:
        """Queue raw steps (`Reply`, `HTTPFailure`, `StreamFailure`)."""
        self.steps.extend(steps)

    def queue_text(self, text: str, *, usage: tuple[int, int] = (10, 5), chunks: int = 3) -> None:
        """Answer with `text`, streamed in `chunks` pieces; `usage` is (input, output) tokens."""
        self.steps.append(Reply(text=text, usage=usage, chunks=chunks))

    def queue_tool_call(self, name: str, arguments: str | dict, *, text: str = "",
                        usage: tuple[int, int] = (10, 5), chunks: int = 3) -> None:
        """Answer with one tool call whose argument JSON arrives split over `chunks` pieces."""
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        self.steps.append(Reply(text=text, tool_calls=((name, args),), usage=usage, chunks=chunks))

    def queue_error(self, status: int, *, retry_after: float | None = None,
                    message: str | None = None) -> None:
        """Answer one request with HTTP `status` (and a Retry-After header if given)."""
        self.steps.append(HTTPFailure(status, retry_after, message))

    def queue_stream_error(self, text: str = "", message: str | None = None) -> None:
        """Start streaming `text`, then send an error event mid-stream."""
        self.steps.append(StreamFailure(text, message or StreamFailure.message))

    def queue_drop(self, text: str = "") -> None:
        """Start streaming `text` (in two pieces), then cut the connection mid-answer."""
        self.steps.append(Drop(text))

    def queue_raw(self, *events: str) -> None:
        """Stream these event texts verbatim (`"data: {...}\\n\\n"`), then end the stream."""
        self.steps.append(Raw(events))

    def queue_hang(self, text: str | None = None) -> None:
        """Never finish: no headers (`text` None), or stream `text` and then fall silent."""
        self.steps.append(Hang(text))

    def bodies(self) -> list[dict]:
        """The JSON bodies received so far, in order."""
        return [r.body for r in self.requests]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        self.requests.append(Received(request.method, request.path,
                                      {k.lower(): v for k, v in request.headers.items()}, body))
        if self.steps:
            step = self.steps.popleft()
        elif self.fallback_text is not None:
            step = Reply(text=self.fallback_text)
        else:
            step = HTTPFailure(400, message=f"{type(self).__name__}: nothing queued for this request")
        refusal = self.refusal(body)
        if refusal is not None:
            step = HTTPFailure(400, message=refusal)
        if isinstance(step, HTTPFailure):
            headers = {} if step.retry_after is None else {"retry-after": f"{step.retry_after:g}"}
            return web.json_response(self.error_body(step, request), status=step.status,
                                     headers=headers)
        if isinstance(step, Hang) and step.text is None:
            await self._released.wait()
            raise web.HTTPServiceUnavailable()
        if isinstance(step, Drop | Hang):
            return await self._break_off(request, step, body)
        if not body.get("stream") and not isinstance(step, Raw):
            if isinstance(step, StreamFailure):
                return web.json_response(self.error_body(HTTPFailure(500, None, step.message),
                                                         request), status=500)
            return web.json_response(self.complete_body(step, body))
        response = web.StreamResponse(headers={"content-type": "text/event-stream",
                                               "cache-control": "no-cache"})
        await response.prepare(request)
        try:
            for event in (step.events if isinstance(step, Raw) else self.events(step, body)):
                await response.write(event.encode())
                if self.chunk_delay:
                    await asyncio.sleep(self.chunk_delay)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client gave up mid-stream (its timeout, a cancelled turn): as a server would
        return response

    async def _break_off(self, request: web.Request, step: Drop | Hang,
                         body: dict) -> web.StreamResponse:
        """Stream the start of an answer, then cut the connection (Drop) or fall silent (Hang)."""
        response = web.StreamResponse(headers={"content-type": "text/event-stream",
                                               "cache-control": "no-cache"})
        await response.prepare(request)
        # A stream-error step's events, less the error event: the answer so far.
        for event in self.events(StreamFailure(step.text or ""), body)[:-1]:
            await response.write(event.encode())
        if isinstance(step, Drop):
            assert request.transport is not None
            request.transport.abort()  # no terminating chunk: the client sees a cut stream
        else:
            await self._released.wait()
        return response

    def refusal(self, body: dict) -> str | None:
        """Why the vendor would answer this request 400 before anything else (None: it would not)."""
        return None

    # Subclasses speak the vendor's dialect through these three.
    def error_body(self, failure: HTTPFailure, request: web.Request) -> dict[str, Any]:
        raise NotImplementedError

    def complete_body(self, reply: Reply, body: dict) -> dict[str, Any]:
        raise NotImplementedError

    def events(self, step: Reply | StreamFailure, body: dict) -> list[str]:
        raise NotImplementedError


_OPENAI_ERRORS = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass
class FakeOpenAI(FakeServer):
    """Fake `POST /v1/chat/completions`; `url` is the base URL (ends in /v1)."""

    path = "/v1/chat/completions"
    url_suffix = "/v1"
    #: Set (`FakeOpenAI(prompt_cache=OpenAICache())`) to count prompt tokens from each
    #: request and report cached ones by OpenAI's rule, instead of the queued usage's.
    prompt_cache: OpenAICache | None = None

    def error_body(self, failure: HTTPFailure, request: web.Request) -> dict[str, Any]:
        kind, code = _OPENAI_ERRORS.get(failure.status, ("server_error", None))
        message = failure.message
        if message is None and failure.status == 401:
            # The worst case on purpose: echo the whole key, so tests prove it never
            # reaches an error message of ours. (Real OpenAI echoes it masked.)
            key = request.headers.get("authorization", "").removeprefix("Bearer ")
            message = f"Incorrect API key provided: {key}."
        return {"error": {"message": message or f"Error {failure.status}", "type": kind,
                          "param": None, "code": code}}

    def complete_body(self, reply: Reply, body: dict) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None,
                                   "refusal": None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
                for i, (n, a) in enumerate(reply.tool_calls)]
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
                "usage": self._billed(reply.usage, body)}

    def events(self, step: Reply | StreamFailure, body: dict) -> list[str]:
        model = body.get("model", "fake")
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
            data: dict[str, Any] = {
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000,
                "model": model, "system_fingerprint": "fp_fake",
                "choices": [] if delta is None else [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if with_usage:  # the real API adds `usage: null` to every chunk but the last
                data["usage"] = usage
            return f"data: {json.dumps(data)}\n\n"

        out = [chunk({"role": "assistant", "content": "", "refusal": None})]
        out += [chunk({"content": piece}) for piece in split(step.text, getattr(step, "chunks", 2))]
        if isinstance(step, StreamFailure):
            return [*out, f"data: {json.dumps({'error': {'message': step.message, 'type': 'server_error', 'param': None, 'code': None}})}\n\n"]
        for i, (name, args) in enumerate(step.tool_calls):
            out.append(chunk({"tool_calls": [{"index": i, "id": f"call_fake_{i}", "type": "function",
                                              "function": {"name": name, "arguments": ""}}]}))
            out += [chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                    for piece in split(args, step.chunks)]
        out.append(chunk({}, "tool_calls" if step.tool_calls else "stop"))
        if with_usage:
            out.append(chunk(None, usage=self._billed(step.usage, body)))
        return [*out, "data: [DONE]\n\n"]

    def _billed(self, usage: tuple[int, int], body: dict) -> dict[str, Any]:
        if self.prompt_cache is None:
            return _usage(usage)
        prompt, cached = self.prompt_cache.bill(body)
        return _usage((prompt, usage[1]), cached)


def _usage(usage: tuple[int, int], cached: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1],
            "total_tokens": usage[0] + usage[1],
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


@pytest_asyncio.fixture
async def fake_openai():
    """A running FakeOpenAI for one test."""
    async with FakeOpenAI() as fake:
        yield fake
