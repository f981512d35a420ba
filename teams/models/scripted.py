"""A model that replays queued answers: the test double for every layer above.

It records what it was asked, fails loudly on a call it has no answer for, and
`assert_used()` fails if answers were left unused.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable

from ..errors import ModelError
from .base import ModelRequest, ModelResponse, TextSink, ToolCall, Usage

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
    With `default`, an empty queue answers with it instead of failing.
    """

    def __init__(self, steps: Iterable[Step] = (), *, name: str = "scripted",
                 delay: float = 0.0, default: Step | None = None) -> None:
        self.name = name
        self.steps: deque[Step] = deque(steps)
        self.requests: list[ModelRequest] = []
        self.delay = delay
        self.default = default

    def add(self, *steps: Step) -> None:
        self.steps.extend(steps)

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None) -> ModelResponse:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.steps:
            step = self.steps.popleft()
        elif self.default is not None:
            step = self.default
        else:
            raise AssertionError(
                f"ScriptedModel got an unexpected call #{len(self.requests)} "
                f"(agent={request.agent!r}, purpose={request.purpose})")
        if callable(step) and not isinstance(step, (ModelResponse, Exception)):
            step = step(request)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, str):
            step = reply(step)
        if on_text and step.text:
            await on_text(step.text)
        return step

    def assert_used(self) -> None:
        if self.steps:
            raise AssertionError(f"ScriptedModel has {len(self.steps)} unused steps: {list(self.steps)}")

    async def aclose(self) -> None:
        return None


__all__ = ["ModelError", "ScriptedModel", "reply"]
