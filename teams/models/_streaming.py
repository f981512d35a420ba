"""What the vendor models share: a client, a retry policy, and one streamed call per answer."""

from __future__ import annotations

from typing import Any

from ._retry import Failure, RetryPolicy, call_with_retries
from .base import ModelRequest, ModelResponse, TextSink


class StreamingModel:
    """A vendor model: subclasses build `_params`, `_stream` and `_translate`."""

    provider = ""

    def __init__(self, client: Any, model: str, *, policy: RetryPolicy | None = None,
                 owns_client: bool = False) -> None:
        self.name = f"{self.provider}:{model}"
        self.model = model
        self._client = client
        self._policy = policy or RetryPolicy()
        self._owns_client = owns_client

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None) -> ModelResponse:
        """Stream one answer; text deltas go to `on_text` as they arrive."""
        params = self._params(request)
        emitted = False

        async def sink(text: str) -> None:
            nonlocal emitted
            emitted = True
            if on_text is not None:
                await on_text(text)

        # Once text reached the thread a retry would repeat it; the person can `retry` instead.
        return await call_with_retries(lambda: self._stream(params, sink), self._translate,
                                       self._policy, may_retry=lambda: not emitted)

    async def aclose(self) -> None:
        """Close the client if this model owns it; a pool closes shared clients itself."""
        if self._owns_client:
            await self._client.close()

    def _params(self, request: ModelRequest) -> dict:
        raise NotImplementedError

    async def _stream(self, params: dict, sink: TextSink) -> ModelResponse:
        raise NotImplementedError

    def _translate(self, exc: Exception) -> Failure | None:
        raise NotImplementedError
