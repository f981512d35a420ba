"""MCP connections shared by every run of a process.

A stdio server is started on the first call or listing that needs it and kept for
every later one; if it dies it is started again on the next use. A streamable HTTP
server keeps one session. A run holds no session of its own: a run waiting for a
person costs the hub nothing. `aclose()` ends them all.

The SDK's client is entered and left in one task (its task groups demand it), so
each connection has an owner task that holds it open until told to stop or until
the server goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from ..errors import ToolError
from ..redact import redact
from ..tools import Answer, Question
from .config import McpServer, MissingVariable, expand

__all__ = ["McpFailure", "McpHub", "ToolOutcome"]

log = logging.getLogger("threadteam.mcp")

#: How long a server may take to start and list its tools, at least (seconds): an
#: interpreter's start-up is not a call, and a short call `timeout:` must not refuse it.
START_TIMEOUT = 30.0

#: The most of one result handed back to the model (characters).
OUTPUT_LIMIT = 16_000

Ask = Callable[[Question], Awaitable[Answer]]


class McpFailure(ToolError):
    """A server would not start, died mid-call, timed out or refused: said to the model.

    `short` is what the thread is told: our own words only, never the server's text."""

    def __init__(self, message: str, short: str = "failed") -> None:
        super().__init__(message)
        self.short = short


@dataclass(frozen=True)
class ToolOutcome:
    """What one call returned: its text for the model, and whether the server said it failed."""

    text: str
    error: bool


@dataclass(eq=False)
class _Call:
    """One call in flight: how to ask its run's people, and its deadline to suspend."""

    ask: Ask | None
    timeout: float
    timer: asyncio.Timeout | None = None


_CURRENT: ContextVar[_Call | None] = ContextVar("threadteam_mcp_call", default=None)


class _Watched:
    """A transport's read stream that says when the server has gone away."""

    def __init__(self, stream: Any, on_end: Callable[[], None]) -> None:
        self._stream, self._on_end = stream, on_end

    async def receive(self) -> Any:
        try:
            return await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
            raise StopAsyncIteration from exc

    async def __aenter__(self) -> _Watched:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class _Connection:
    """One server's client, opened on demand and re-opened after the server died."""

    def __init__(self, server: McpServer, mode: str = "auto") -> None:
        self.server, self.mode = server, mode
        self.client: Client | None = None
        self.listing: tuple[types.Tool, ...] | None = None  # kept across restarts
        self.starts = 0
        self.inflight: set[_Call] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._errlog: IO[str] | None = None
        #: The values of the `${VAR}`s this server was reached with: taken out of every
        #: error text before it is said anywhere.
        self.secrets: set[str] = set()

    def why(self, exc: BaseException) -> str:
        """`_why(exc)` with this server's secret values taken out."""
        return redact(_why(exc), self.secrets, opaque=False)

    @property
    def alive(self) -> bool:
        return self.client is not None and not self._stop.is_set()

    async def open(self) -> Client:
        """The live client, starting (or restarting) the server if need be."""
        async with self._lock:
            if self.alive:
                assert self.client is not None
                return self.client
            await self.close()
            self._stop = asyncio.Event()
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._own(ready, self._stop),
                                              name=f"threadteam-mcp-{self.server.name}")
            self.starts += 1
            limit = max(self.server.timeout, START_TIMEOUT)
            try:
                async with asyncio.timeout(limit):
                    await asyncio.shield(ready)
            except TimeoutError:
                await self.close()
                raise McpFailure(f"the {self.server.name} MCP server did not start within "
                                 f"{limit:g}s", "could not start its server") from None
            except McpFailure:
                await self.close()
                raise
            assert self.client is not None
            return self.client

    async def close(self) -> None:
        """Stop the owner task (the server process ends with it)."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                async with asyncio.timeout(5):
                    await task
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._errlog is not None:
            self._errlog.close()
            self._errlog = None

    async def _own(self, ready: asyncio.Future[None], stop: asyncio.Event) -> None:
        try:
            async with Client(self._transport(stop), elicitation_callback=self._elicit,
                              cache=None, mode=self.mode) as client:
                listing: list[types.Tool] = []
                cursor: str | None = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    listing.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self.client, self.listing = client, tuple(listing)
                ready.set_result(None)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(McpFailure(
                    f"the {self.server.name} MCP server would not start: {self.why(exc)}",
                    "could not start its server"))
                self._log_stderr()
            elif not isinstance(exc, asyncio.CancelledError):
                log.info("MCP server %s: connection ended (%s)", self.server.name,
                         self.why(exc))
        finally:
            stop.set()
            self.client = None

    @contextlib.asynccontextmanager
    async def _transport(self, stop: asyncio.Event) -> AsyncIterator[Any]:
        s = self.server
        self.secrets = {os.environ[v] for v in s.variables if os.environ.get(v)}
        try:
            if s.command:
                env = {k: expand(v) for k, v in s.env}
                params = StdioServerParameters(command=expand(s.command[0]),
                                               args=[expand(a) for a in s.command[1:]],
                                               env=env or None, cwd=expand(s.cwd) or None)
                self._errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
                async with stdio_client(params, errlog=self._errlog) as (read, write):
                    yield _Watched(read, stop.set), write
                return
            headers = {k: expand(v) for k, v in s.headers}
            url = expand(s.url)
        except MissingVariable as exc:
            raise McpFailure(f"the environment variable {exc.args[0]} is not set") from None
        async with httpx2.AsyncClient(headers=headers, timeout=s.timeout) as http, \
                streamable_http_client(url, http_client=http) as (read, write):
            yield _Watched(read, stop.set), write

    def _log_stderr(self) -> None:
        if self._errlog is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._errlog.seek(0)
            tail = self._errlog.read()[-2000:].strip()
            if tail:
                log.warning("MCP server %s wrote to stderr before it failed: %s",
                            self.server.name, redact(tail, self.secrets))

    async def _elicit(self, context: Any, params: Any) -> types.ElicitResult:
        # On a 2026-07-28 connection the question is asked from the caller's own task (its
        # context names the call); an older server asks from the session's task, and then
        # only a lone call in flight can be the one asking.
        call = _CURRENT.get()
        if call is None and len(self.inflight) == 1:
            call = next(iter(self.inflight))
        schema = getattr(params, "requested_schema", None)
        if call is None or call.ask is None or not isinstance(schema, dict):
            return types.ElicitResult(action="decline")
        question = Question(params.message, schema, f"the {self.server.name} MCP server")
        if call.timer is not None:  # a person's time does not count against the server's
            call.timer.reschedule(None)
        try:
            answer = await call.ask(question)
        finally:
            if call.timer is not None:
                call.timer.reschedule(asyncio.get_running_loop().time() + call.timeout)
        content = dict(answer.content) if answer.action == "accept" else None
        return types.ElicitResult(action=answer.action, content=content)


class McpHub:
    """Every MCP server this process talks to, by their settings."""

    def __init__(self, *, mode: str = "auto") -> None:
        # `mode`: the SDK's protocol negotiation ("legacy" forces the pre-2026 handshake,
        # where a server asks its questions from the session rather than the call).
        self._connections: dict[McpServer, _Connection] = {}
        self._mode = mode

    def _connection(self, server: McpServer) -> _Connection:
        conn = self._connections.get(server)
        if conn is None:
            conn = self._connections[server] = _Connection(server, self._mode)
        return conn

    def starts(self, server: McpServer) -> int:
        """How many times the server was started (or connected to) by this process."""
        conn = self._connections.get(server)
        return conn.starts if conn is not None else 0

    def listed(self, server: McpServer) -> tuple[types.Tool, ...] | None:
        """The server's tools as last listed, without reaching it (None: never listed)."""
        conn = self._connections.get(server)
        return conn.listing if conn is not None else None

    async def tools(self, server: McpServer) -> tuple[types.Tool, ...]:
        """The server's tools: as last listed, else listed now (starting the server)."""
        conn = self._connection(server)
        if conn.listing is None:
            await conn.open()
        assert conn.listing is not None
        return conn.listing

    async def call(self, server: McpServer, tool: str, args: dict[str, Any], *,
                   ask: Ask | None = None) -> ToolOutcome:
        """Call `tool`; raise `McpFailure` for what went wrong outside the tool."""
        conn = self._connection(server)
        client = await conn.open()
        call = _Call(ask, server.timeout)
        token = _CURRENT.set(call)
        conn.inflight.add(call)
        where = f"{tool} on the {server.name} MCP server"
        try:
            async with asyncio.timeout(server.timeout) as timer:
                call.timer = timer
                result = await client.call_tool(tool, args)
        except TimeoutError:
            raise McpFailure(f"{where} did not finish within {server.timeout:g}s",
                             f"timed out after {server.timeout:g}s") from None
        except MCPError as exc:
            if not conn.alive:
                raise McpFailure(f"the {server.name} MCP server stopped during the call of "
                                 f"{tool}; it is started again for the next call",
                                 "stopped: its server went away mid-call") from None
            raise McpFailure(f"{where} failed: {redact(str(exc), conn.secrets, opaque=False)}"
                             ) from None
        except Exception as exc:  # a transport's or the SDK's own error: said, never raised
            raise McpFailure(f"{where} failed: {conn.why(exc)}") from None
        finally:
            _CURRENT.reset(token)
            conn.inflight.discard(call)
        return ToolOutcome(redact(_text_of(result), conn.secrets, opaque=False),
                           bool(result.is_error))

    async def aclose(self) -> None:
        """Close every session and stop every server this hub started."""
        conns, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


def _text_of(result: types.CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.ImageContent | types.AudioContent):
            parts.append(f"[{block.type}: {block.mime_type}]")
        else:
            parts.append(f"[{getattr(block, 'type', 'content')}]")
    text = "\n".join(parts)
    if not text and result.structured_content is not None:
        import json
        text = json.dumps(result.structured_content, ensure_ascii=False, default=str)
    if len(text) > OUTPUT_LIMIT:
        text = text[:OUTPUT_LIMIT] + f"\n… (cut: {len(text) - OUTPUT_LIMIT:,} more characters)"
    return text


def _why(exc: BaseException) -> str:
    """One line for what went wrong, from the innermost error of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, McpFailure):
        return str(exc).removeprefix("the ")
    if isinstance(exc, FileNotFoundError):
        return f"no such command {exc.filename or ''!s}".strip()
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
