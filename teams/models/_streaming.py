"""What the vendor models share: a client, a retry policy, one streamed call per answer,
and the sentences their errors become.

An error's sentence may be posted in a shared thread: it names the provider and what
to do, never a host, a key or the provider's response body. Those go to the log, as
the `Failure`'s detail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, Literal

import aiohttp

from ..errors import (
    ModelAuthError,
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelTimeout,
)
from ..redact import redact
from ._retry import Failure, RetryPolicy, call_with_retries, gave_up, is_retryable_status
from .base import ModelRequest, ModelResponse, RetrySink, TextSink

__all__ = ["StreamingModel", "Turn", "causes", "server_sent_events", "transport_trouble"]

log = logging.getLogger(__name__)

# How much of a provider's error body the log keeps.
DETAIL_LIMIT = 2000
# Seconds to wait for a connection (or less, if the idle timeout is shorter).
CONNECT_TIMEOUT = 10.0


class StreamingModel:
    """A vendor model: subclasses write `_params`, `_open`, `_consume` and `_translate`."""

    provider = ""  # the prefix of model names: openai, anthropic
    brand = ""  # the provider as people write it: OpenAI, Anthropic
    key_variable = ""  # the environment variable that holds the provider's key
    timeout_type: Any = None  # the vendor's Timeout(read, connect=...) class

    def __init__(self, client: Any, model: str, *, policy: RetryPolicy | None = None,
                 owns_client: bool = False) -> None:
        self.name = f"{self.provider}:{model}"
        self.model = model
        self._client = client
        self._policy = policy or RetryPolicy()
        self._owns_client = owns_client

    @property
    def label(self) -> str:
        """The provider as a sentence names it ("OpenAI", "the OpenAI-compatible server")."""
        return self.brand

    @property
    def who(self) -> str:
        """`label` at the start of a sentence."""
        return self.label[:1].upper() + self.label[1:]

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None, *,
                       on_retry: RetrySink | None = None) -> ModelResponse:
        """Stream one answer; text deltas go to `on_text` as they arrive.

        Each attempt may be silent for the policy's `idle_timeout`; the answer must begin
        within its `turn_timeout`, retries included. Once it has begun, only silences
        count: a model that keeps answering is not cut off. Before each retry, `on_retry`
        gets a sentence for the thread ("OpenAI is slow to answer; trying again (2 of 4)…").
        """
        policy = self._policy
        params = {**self._params(request),
                  "timeout": self.timeout_type(policy.idle_timeout,
                                               connect=min(policy.idle_timeout, CONNECT_TIMEOUT))}
        turn = Turn(on_text)
        try:
            async with asyncio.timeout(policy.turn_timeout) as deadline:
                turn.deadline = deadline
                # Once text reached the thread a retry would repeat it; a person can retry.
                return await call_with_retries(
                    lambda: self._attempt(params, turn), lambda exc: self._failure(exc, turn),
                    policy, may_retry=lambda: not turn.emitted,
                    on_retry=None if on_retry is None else partial(self._tell, on_retry))
        except TimeoutError:
            if not deadline.expired():
                raise
            raise self._too_slow(turn) from None

    async def aclose(self) -> None:
        """Close the client if this model owns it; a pool closes shared clients itself."""
        if self._owns_client:
            await self._client.close()

    async def _tell(self, on_retry: RetrySink, failure: Failure, attempt: int,
                    wait: float) -> None:
        """Tell the caller a retry is coming; its failing to listen fails nothing else."""
        sentence = self.retry_sentence(failure, attempt, wait)
        try:
            await on_retry(sentence)
        except Exception:
            log.warning("%s: could not pass on %r", self.name, sentence, exc_info=True)

    def retry_sentence(self, failure: Failure, attempt: int, wait: float) -> str:
        """What the thread is told before attempt number `attempt` (2, 3, ...)."""
        error = failure.error
        if failure.note:
            what = failure.note
        elif isinstance(error, ModelTimeout):
            what = "is slow to answer"
        elif isinstance(error, ModelConnectionError):
            what = "dropped the connection" if error.mid_answer else "could not be reached"
        elif isinstance(error, ModelHTTPError) and error.status == 429:
            what = "is rate-limiting this key"
        elif isinstance(error, ModelHTTPError) and error.status:
            what = f"had a server error (HTTP {error.status})"
        else:
            what = "broke off its answer"
        when = f" in {wait:.0f} s" if wait >= 1.5 else ""
        return f"{self.who} {what}; trying again{when} ({attempt} of {self._policy.attempts})…"

    async def _attempt(self, params: dict, turn: Turn) -> ModelResponse:
        turn.opened = False
        async with self._open(params) as response:
            turn.opened = True  # from here on, a broken connection broke an answer
            return await self._consume(response, turn)

    def _params(self, request: ModelRequest) -> dict:
        raise NotImplementedError

    def _open(self, params: dict) -> AbstractAsyncContextManager[Any]:
        """The request as a context manager: entering sends it and gives the raw streamed
        response once the provider has begun to answer (an error status raises)."""
        raise NotImplementedError

    async def _consume(self, response: Any, turn: Turn) -> ModelResponse:
        """Read the raw response's events to the end, passing text to `turn.text`."""
        raise NotImplementedError

    def _translate(self, exc: Exception, turn: Turn) -> Failure | None:
        """The vendor's own exceptions (statuses, error events); None for anything else."""
        raise NotImplementedError

    # -- errors: safe sentences for the thread, the whole story for the log -------------
    def _failure(self, exc: Exception, turn: Turn) -> Failure | None:
        """What `exc` means (remembered as the turn's last failure)."""
        failure = self._judge(exc, turn)
        if failure is not None:
            turn.last = failure
        return failure

    def _judge(self, exc: Exception, turn: Turn) -> Failure | None:
        """Judged first by what happened on the wire, then by the vendor."""
        if getattr(exc, "status_code", None) is not None:
            return self._translate(exc, turn)  # the provider answered: its status decides
        trouble = transport_trouble(exc)
        if trouble == "connect":
            return self._connect_failure(exc)
        if trouble == "timeout":
            return self._timeout_failure(exc, turn)
        if trouble == "io":
            return self._connection_failure(exc, turn)
        return self._translate(exc, turn)

    def _connection_failure(self, exc: Exception, turn: Turn) -> Failure:
        """The connection broke: mid-answer once the answer began, else before it."""
        if not turn.opened:
            return Failure(ModelConnectionError(
                f"{self.who} closed the connection before answering: try again.",
                mid_answer=False), detail=self._detail(exc))
        return Failure(ModelConnectionError(
            f"The connection to {self.label} dropped mid-answer: try again.", mid_answer=True),
            detail=self._detail(exc))

    def _timeout_failure(self, exc: Exception, turn: Turn) -> Failure:
        """An attempt heard nothing for `idle_timeout` seconds."""
        seconds = self._policy.idle_timeout
        if turn.emitted:
            text = (f"{self.who} fell silent mid-answer (nothing for {seconds:g} s): "
                    "try again.")
        else:
            text = f"{self.who} did not answer within {seconds:g} s: try again."
        return Failure(ModelTimeout(text, seconds=seconds), detail=self._detail(exc))

    def _too_slow(self, turn: Turn) -> ModelError:
        """The turn's deadline passed before the answer began."""
        seconds = self._policy.turn_timeout
        last = turn.last.error if turn.last is not None else None
        if last is not None and not isinstance(last, ModelTimeout):
            # It kept failing (say, 500s) rather than being slow: say what failed.
            return gave_up(last, f"Gave up after {seconds:g} s.")
        # Attempts cut off by the idle timeout: a model that thinks long before its first
        # word (a reasoning model) needs a longer THREADTEAM_MODEL_TIMEOUT, not more turn.
        knob = "THREADTEAM_MODEL_TIMEOUT" if last is not None else "THREADTEAM_TURN_TIMEOUT"
        log.warning("%s: no answer within the turn's %g s (THREADTEAM_TURN_TIMEOUT; silences "
                    "end an attempt after %g s, THREADTEAM_MODEL_TIMEOUT)", self.name, seconds,
                    self._policy.idle_timeout)
        return ModelTimeout(
            f"{self.who} did not answer within {seconds:g} s. It may be overloaded (try "
            f"again in a minute), or model '{self.model}' may need more time than {knob} "
            "allows.", seconds=seconds)

    def _detail(self, exc: Exception, body: object = None) -> str:
        """What the log gets: the exception, the request's URL, the provider's own words."""
        parts = [f"{self.name}: {type(exc).__name__}"]
        status = getattr(exc, "status_code", None)
        if status is not None:
            parts.append(f"HTTP {status}")
        request = getattr(exc, "request", None)
        if request is not None:
            parts.append(f"{request.method} {request.url}")
        said = json.dumps(body, ensure_ascii=False) if body is not None else str(exc)
        text = " ".join(parts) + f": {said[:DETAIL_LIMIT]}"
        # Not `opaque`: a provider's request ids are long runs a support ticket needs.
        return redact(text, (getattr(self._client, "api_key", None),), opaque=False)

    def _status_failure(self, exc: Exception, status: int, body: object,
                        retry_after: float | None = None) -> Failure:
        """An error answer (HTTP `status`) as a sentence that says what to do."""
        return Failure(self._status_error(status), retry_after=retry_after,
                       detail=self._detail(exc, body))

    def _status_error(self, status: int) -> ModelError:
        who, model, key = self.who, self.model, self.key_variable
        if status == 401:
            return ModelAuthError(f"{who} refused the API key (HTTP 401): "
                                  f"check the {key} variable.")
        if status == 403:
            return ModelAuthError(f"{who} denied access (HTTP 403): check that the key "
                                  f"in {key} may use model '{model}'.")
        retryable = is_retryable_status(status)
        if status == 404:
            text = (f"{who} has no model '{model}' (HTTP 404): check the model name in "
                    f"the team file or THREADTEAM_MODEL{self._not_found_hint()}.")
        elif status == 413:
            text = (f"{who} found the request too large for model '{model}' (HTTP 413): "
                    "the conversation is too long; start a new thread.")
        elif status == 429:
            text = (f"{who} is rate-limiting this key (HTTP 429): wait a minute and try "
                    "again, or raise the key's limits.")
        elif status >= 500:
            text = f"{who} had a server error (HTTP {status}): try again in a minute."
        elif retryable:
            text = f"{who} could not answer just now (HTTP {status}): try again."
        else:
            text = (f"{who} refused the request (HTTP {status}): model '{model}' may not "
                    "support something this team asks of it (tools, temperature, output "
                    "length); the bot's log has the provider's explanation.")
        return ModelHTTPError(text, status=status, retryable=retryable)

    def _not_found_hint(self) -> str:
        return ""

    def _unreachable_hint(self) -> str:
        """What to check when the provider cannot be reached at all."""
        return "check the bot's network connection"

    def _connect_failure(self, exc: Exception) -> Failure:
        return Failure(ModelConnectionError(
            f"Could not connect to {self.label}: {self._unreachable_hint()}, then try again.",
            mid_answer=False), detail=self._detail(exc))

    def _client_failure(self, exc: Exception) -> Failure:
        """The vendor client failed in a way no retry mends (a bug, a bad setting)."""
        return Failure(ModelHTTPError(
            f"The {self.brand} client library failed before {self.label} could answer; "
            "the bot's log has the details.", None, retryable=False), detail=self._detail(exc))


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it was raised from, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class Turn:
    """One `complete()` call as the retry loop sees it."""

    def __init__(self, on_text: TextSink | None) -> None:
        self.on_text = on_text
        self.emitted = False  # text reached `on_text`: a retry would repeat it
        self.opened = False  # the current attempt's response arrived
        self.deadline: asyncio.Timeout | None = None  # for the answer to begin
        self.last: Failure | None = None  # the latest failed attempt

    def began(self) -> None:
        """The answer has begun (text or a tool call): from now on only silences count."""
        if self.deadline is not None:
            self.deadline.reschedule(None)
            self.deadline = None

    async def text(self, delta: str) -> None:
        """Pass a piece of the answer on."""
        self.began()
        self.emitted = True
        if self.on_text is not None:
            await self.on_text(delta)


Trouble = Literal["connect", "timeout", "io"]


def transport_trouble(exc: BaseException) -> Trouble | None:
    """What went wrong on the wire, read from the aiohttp/OS error `exc` was raised from.

    The clients' types do not tell it: their aiohttp transport reports a refused
    connection as a connect timeout, and anthropic lets a stream's read errors out
    unwrapped. None when no network error is behind `exc` (a status, an error event).
    """
    chain = list(causes(exc))
    if any(isinstance(e, _NO_CONNECTION) for e in chain):
        return "connect"
    if any(isinstance(e, TimeoutError) for e in chain):
        return "timeout"
    if any(isinstance(e, aiohttp.ClientError | OSError) for e in chain):
        return "io"
    return None


# Refused, unknown host, or no connection within the connect timeout.
_NO_CONNECTION = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError,
                  ConnectionRefusedError, socket.gaierror)


async def server_sent_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, bytes]]:
    """(event name, data) for each server-sent event in a streamed body.

    The vendor clients would build a pydantic object for every chunk of an answer (most
    of their CPU time per streamed reply); the models read these pairs with `json.loads`
    instead. Lines end in LF or CRLF (both providers use LF). Linear in the body's
    length however it is cut into chunks: each byte is searched for a line end once.
    """
    buffer = bytearray()
    event = b""
    data: list[bytes] = []
    async for chunk in chunks:
        searched = len(buffer)
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", searched)) >= 0:
            line = bytes(buffer[start:end - 1 if end > start and buffer[end - 1] == 13 else end])
            start = searched = end + 1
            if not line:
                if data:
                    yield event, data[0] if len(data) == 1 else b"\n".join(data)
                event, data = b"", []
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"event:"):
                event = line[6:].strip()
        if start:
            del buffer[:start]
    if data:  # a stream that ended without the blank line after its last event
        yield event, data[0] if len(data) == 1 else b"\n".join(data)
