"""Questions a tool asks the run's approvers mid-call (MCP elicitation), answered by a reply.

The runner posts the question and waits here; the host hands the next reply of an
approver in that thread to `answer`. A reply is `decline`, `cancel`, or the answer:
one value when one field is asked, else `field: value` lines (or a JSON object).
A question is held in this process's memory only: if the process ends first, the
call is ended with a clear result when the run is picked up again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from threadteam.teams.errors import ToolError
from threadteam.teams.tools import Answer, Question

__all__ = ["QuestionLost", "Questions", "ask_key", "describe", "parse_answer"]

#: How long a question waits for an answer before the call goes on without one (seconds).
ANSWER_WAIT = 600.0


class QuestionLost(ToolError):
    """The process ended while a call waited for an answer: the call ends, said to the model."""


def ask_key(run_id: str, call_id: str, n: int) -> str:
    """The idempotency key of a call's `n`th question (its record outlives the process)."""
    return f"{run_id}:tool:{call_id}:ask:{n}"


@dataclass(eq=False)
class _Open:
    question: Question
    may_answer: Callable[[str, tuple[str, ...]], bool]
    future: asyncio.Future[Answer] = field(default_factory=lambda: asyncio.get_running_loop()
                                           .create_future())


class Questions:
    """The questions open in this process, one per thread at a time."""

    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}
        #: Called when a question opens (its run's driver then waits for a person).
        self.on_open: Callable[[], object] = lambda: None
        self._turns: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @property
    def open(self) -> int:
        """How many questions wait for an answer (each holds one run's driver)."""
        return len(self._open)

    def waiting(self, thread: str) -> bool:
        """Whether a question waits for an answer in `thread`."""
        return thread in self._open

    def may_answer(self, thread: str, user: str, roles: tuple[str, ...] = ()) -> bool:
        """Whether `user` may answer the question open in `thread`."""
        q = self._open.get(thread)
        return q is not None and q.may_answer(user, roles)

    async def ask(self, thread: str, question: Question,
                  may_answer: Callable[[str, tuple[str, ...]], bool],
                  post: Callable[[], Any], wait: float = ANSWER_WAIT) -> Answer:
        """Post the question (`post`), then wait for an approver's answer; `cancel` after `wait`."""
        lock, users = self._turns.setdefault(thread, (asyncio.Lock(), [0]))
        users[0] += 1
        async with lock:  # two calls of one thread ask one after the other
            entry = _Open(question, may_answer)
            self._open[thread] = entry
            self.on_open()
            try:
                await post()
                async with asyncio.timeout(wait):
                    return await entry.future
            except TimeoutError:
                return Answer("cancel")
            finally:
                if self._open.get(thread) is entry:
                    del self._open[thread]
                users[0] -= 1
                if not users[0]:  # nobody else asks in this thread: forget its lock
                    self._turns.pop(thread, None)

    def answer(self, thread: str, user: str, text: str) -> str | None:
        """Take `text` as the answer; None when it answered, else why not (for the person)."""
        entry = self._open.get(thread)
        if entry is None or entry.future.done():
            return "No question is waiting for an answer."
        parsed = parse_answer(entry.question, text, user)
        if isinstance(parsed, str):
            return parsed
        del self._open[thread]  # answered: the run is at work again from this moment
        entry.future.set_result(parsed)
        return None


def describe(question: Question) -> str:
    """The fields a question asks for, in words: `title (text, required)`."""
    props: Mapping[str, Any] = question.fields.get("properties") or {}
    required = set(question.fields.get("required") or ())
    parts = []
    for name, spec in props.items():
        kind = spec.get("type", "text") if isinstance(spec, dict) else "text"
        choices = spec.get("enum") if isinstance(spec, dict) else None
        what = "one of " + "/".join(map(str, choices)) if choices else \
            {"string": "text", "integer": "a whole number", "number": "a number",
             "boolean": "yes or no"}.get(str(kind), str(kind))
        parts.append(f"{name} ({what}{', required' if name in required else ''})")
    return "; ".join(parts)


def parse_answer(question: Question, text: str, by: str) -> Answer | str:
    """A reply as an `Answer`, or a one-line reason it does not fit the question."""
    words = text.strip()
    lowered = words.lower().rstrip(".!")
    if lowered in ("decline", "no"):
        return Answer("decline", by=by)
    if lowered == "cancel":
        return Answer("cancel", by=by)
    if lowered.startswith("accept"):
        words = words[len("accept"):].strip(" :")
    props: Mapping[str, Any] = question.fields.get("properties") or {}
    required = [n for n in question.fields.get("required") or () if n in props]
    values: dict[str, Any]
    if words.startswith("{"):
        try:
            loaded = json.loads(words)
        except json.JSONDecodeError:
            return "That is not a JSON object; answer with `field: value` lines instead."
        if not isinstance(loaded, dict):
            return "Answer with a JSON object or `field: value` lines."
        values = loaded
    elif len(props) == 1:
        values = {next(iter(props)): words} if words else {}
    else:
        values = {}
        for line in words.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() in props:
                values[name.strip()] = value.strip()
    content: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in props:
            return f"There is no field {name!r}; the fields are: {describe(question)}."
        value = _coerce(raw, props[name] if isinstance(props[name], dict) else {})
        if value is None:
            return f"{name} must be {describe(Question('', {'properties': {name: props[name]}}))}."
        content[name] = value
    missing = [n for n in required if n not in content]
    if missing:
        return (f"Missing {', '.join(missing)}. Reply with {describe(question)}, "
                f"or `decline` / `cancel`.")
    return Answer("accept", content, by=by)


def _coerce(raw: Any, spec: Mapping[str, Any]) -> Any:
    kind, text = spec.get("type"), str(raw).strip()
    choices = spec.get("enum")
    if choices is not None:
        return next((c for c in choices if str(c).lower() == text.lower()), None)
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw
        return {"yes": True, "true": True, "no": False, "false": False}.get(text.lower())
    if kind in ("integer", "number"):
        try:
            number = float(text)
        except ValueError:
            return None
        if kind == "integer":
            return int(number) if number.is_integer() else None
        return number
    return text if kind in (None, "string") else raw
