"""A model that replays queued answers: the test double for every layer above.

It records what it was asked and fails loudly: a call it has no answer for raises
`UnexpectedModelCall` (and is remembered, in case a driver swallowed it), and
`check()` raises `UnconsumedModelSteps` for answers left unused. Inside `watch()`,
every ScriptedModel made is listed, so a test fixture can check them all at teardown.

    AssertionError
    ├── UnexpectedModelCall    called with no step left for the call
    └── UnconsumedModelSteps   steps queued that no call used
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager

from ..errors import ModelError
from .base import ModelRequest, ModelResponse, TextSink, ToolCall, Usage

__all__ = [
    "ModelError", "ScriptedModel", "UnconsumedModelSteps", "UnexpectedModelCall", "reply",
    "watch",
]


class UnexpectedModelCall(AssertionError):
    """A ScriptedModel was called with no step left for the call (a test-double failure)."""


class UnconsumedModelSteps(AssertionError):
    """A ScriptedModel still held steps that no call used when it was checked."""


# The lists of models being watched (one per active `watch()`): tests only.
_watchers: list[list[ScriptedModel]] = []


@contextmanager
def watch() -> Iterator[list[ScriptedModel]]:
    """Collect every ScriptedModel made inside the block (a fixture checks them afterwards)."""
    made: list[ScriptedModel] = []
    _watchers.append(made)
    try:
        yield made
    finally:
        _watchers.remove(made)

Step = ModelResponse | str | Exception | Callable[[ModelRequest], ModelResponse | str]


def reply(text: str = "", *calls: tuple[str, str], usage: Usage | None = None) -> ModelResponse:
    """A scripted answer: text plus `(tool_name, json_args)` calls."""
    tool_calls = tuple(ToolCall(id=f"call_{i}_{name}", name=name, arguments=args)
                       for i, (name, args) in enumerate(calls))
    return ModelResponse(text=text, tool_calls=tool_calls,
                         usage=usage or Usage(len(text) // 4 + 1, len(text) // 4 + 1),
                         model="scripted")


class ScriptedModel:
    """Answers requests from a queue of steps, in order.

    A step is a `ModelResponse`, a plain string, an exception to raise, or a
    function of the request. `delay` makes every call take that long (async).
    With `default`, an empty queue answers with it instead of failing. With
    `leftovers_ok`, steps left unused are not a failure (a script that only
    sets up more than a test drives).
    """

    def __init__(self, steps: Iterable[Step] = (), *, name: str = "scripted",
                 delay: float = 0.0, default: Step | None = None,
                 leftovers_ok: bool = False) -> None:
        self.name = name
        self.steps: deque[Step] = deque(steps)
        self.requests: list[ModelRequest] = []
        self.delay = delay
        self.default = default
        self.leftovers_ok = leftovers_ok
        self.unexpected: list[UnexpectedModelCall] = []
        for made in _watchers:
            made.append(self)

    def add(self, *steps: Step) -> None:
        self.steps.extend(steps)

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None, *,
                       on_retry: Callable[[str], Awaitable[None]] | None = None) -> ModelResponse:
        """The next step's answer (streamed to `on_text`); it never retries, so `on_retry`
        is never called."""
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.steps:
            step = self.steps.popleft()
        elif self.default is not None:
            step = self.default
        else:
            error = UnexpectedModelCall(
                f"ScriptedModel {self.name!r} got an unexpected call #{len(self.requests)} "
                f"(agent={request.agent!r}, purpose={request.purpose}): no step was left for it")
            self.unexpected.append(error)
            raise error
        if callable(step) and not isinstance(step, (ModelResponse, Exception)):
            step = step(request)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, str):
            step = reply(step)
        if on_text and step.text:
            await on_text(step.text)
        return step

    def check(self) -> None:
        """Raise UnexpectedModelCall for a call it had no answer for (even one a driver
        swallowed), or UnconsumedModelSteps for steps left unused."""
        if self.unexpected:
            raise self.unexpected[0]
        if self.steps and not self.leftovers_ok:
            raise UnconsumedModelSteps(
                f"ScriptedModel {self.name!r} has {len(self.steps)} unused steps: "
                f"{list(self.steps)}")

    def assert_used(self) -> None:
        """Every step used, and no unexpected call (the same as `check`, even with leftovers_ok)."""
        if self.steps:
            raise UnconsumedModelSteps(
                f"ScriptedModel {self.name!r} has {len(self.steps)} unused steps: "
                f"{list(self.steps)}")
        self.check()

    async def aclose(self) -> None:
        return None

