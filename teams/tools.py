"""Tools: typed Python callables an agent may call, some only with a person's approval.

The JSON schema a model sees comes from the function's type hints; the model's
arguments are validated against the same types before the call, and a
validation error goes back to the model as the tool's result.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal, get_type_hints

import jsonschema
import pydantic

from .errors import ToolError
from .models.base import ToolSpec

Approval = Literal["never", "always"]

__all__ = ["Answer", "Approval", "Question", "Tool", "ToolContext", "load_tool", "tool"]


@dataclass(frozen=True, slots=True)
class Question:
    """What a tool asks the run's approvers mid-call (an MCP server's elicitation):
    `fields` is a flat JSON schema object (`properties`, `required`) of the answer."""

    text: str
    fields: Mapping[str, Any]
    asker: str = ""  # who asks, in words: "the tracker MCP server"


@dataclass(frozen=True, slots=True)
class Answer:
    """A person's answer to a `Question`: accept (with `content`), decline or cancel."""

    action: Literal["accept", "decline", "cancel"]
    content: Mapping[str, Any] = field(default_factory=dict)
    by: str = ""


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What the host lends a tool: where the run lives, how to post elsewhere, how to ask
    the run's approvers a question and how to say a short notice in the thread."""

    run_id: str = ""
    thread: str = ""
    agent: str = ""
    post_message: Callable[[str, str], Awaitable[str]] | None = None
    ask: Callable[[Question], Awaitable[Answer]] | None = None
    notice: Callable[[str], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Tool:
    """A callable with the schema a model sees and the approval it needs.

    `channels`, when set, is where the tool's `channel` argument may point (a team
    file's `channels:`); a call aimed elsewhere is refused before anyone is asked.
    A tool given `schema` (an MCP server's tool) takes its arguments as one dict,
    `fn(args, context)`, checked against that JSON schema; `source` says where it
    comes from ("the tracker MCP server"). A tool `pinned` when the team is loaded
    keeps its approval whatever the team file says (`run_code` under `local`).
    """

    name: str
    description: str
    fn: Callable[..., Any]
    approval: Approval = "always"
    _model: type[pydantic.BaseModel] | None = field(default=None, repr=False, compare=False)
    _takes_context: bool = field(default=False, repr=False, compare=False)
    channels: tuple[str, ...] | None = None
    schema: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    source: str = ""
    pinned_when: Callable[[], bool] | None = field(default=None, repr=False, compare=False)

    @property
    def pinned(self) -> bool:
        """Whether a team file's `approval:` is ignored for this tool (here and now)."""
        return self.pinned_when is not None and self.pinned_when()

    @classmethod
    def from_function(cls, fn: Callable[..., Any], *, name: str | None = None,
                      description: str | None = None, approval: Approval = "always") -> Tool:
        """Build a tool from a typed function (sync or async)."""
        model, takes_context = _arguments_model(fn)
        doc = description or inspect.getdoc(fn) or f"Call {fn.__name__}."
        return cls(name or fn.__name__, doc.strip(), fn, approval, model, takes_context)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, as a user's own code and tests do."""
        return self.fn(*args, **kwargs)

    @property
    def __wrapped__(self) -> Callable[..., Any]:  # inspect.unwrap finds the function
        return self.fn

    def with_overrides(self, *, name: str | None = None, approval: Approval | None = None,
                       channels: tuple[str, ...] | None = None) -> Tool:
        """The same tool under another name, approval policy or channel list (team-file
        overrides); unchanged fields keep their value."""
        changes: dict[str, Any] = {}
        if name and name != self.name:
            changes["name"] = name
        if approval and approval != self.approval and not self.pinned:
            changes["approval"] = approval
        if channels is not None and channels != self.channels:
            changes["channels"] = channels
        return replace(self, **changes) if changes else self

    @property
    def takes_channel(self) -> bool:
        """Whether the model passes this tool a `channel` (so `channels:` can narrow it)."""
        return "channel" in self.spec.parameters.get("properties", {})

    def refusal(self, args: dict[str, Any]) -> str | None:
        """Why a call with these arguments may not run here (a channel outside `channels`)."""
        if self.channels is None:
            return None
        target = args.get("channel")
        allowed = {_channel_label(c) for c in self.channels}
        if isinstance(target, str) and _channel_label(target) in allowed:
            return None
        return f"{self.name} may only post to {' or '.join(self.channels)}"

    @cached_property
    def _schema_validator(self) -> Any:
        """The server's schema compiled once (a call is checked against it every time); None
        for a schema the server got wrong: that is the server's to enforce."""
        if self.schema is None:
            return None
        try:
            cls = jsonschema.validators.validator_for(self.schema)
            cls.check_schema(self.schema)
            return cls(self.schema)
        except jsonschema.exceptions.SchemaError:
            return None

    @cached_property
    def spec(self) -> ToolSpec:
        """The tool as a model sees it (built once: every turn offers it again)."""
        if self.schema is not None:
            return ToolSpec(self.name, self.description, dict(self.schema))
        schema: dict[str, Any] = (self._model.model_json_schema() if self._model
                                  else {"type": "object"})
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return ToolSpec(self.name, self.description, schema)

    def validate(self, raw_arguments: str) -> dict[str, Any]:
        """Parse and check a model's JSON arguments; raise ValueError with a model-readable message."""
        try:
            data = json.loads(raw_arguments) if raw_arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"Arguments for {self.name} are not valid JSON ({exc.msg}). "
                             f"Call it again with a JSON object.") from exc
        if not isinstance(data, dict):
            raise ValueError(f"Arguments for {self.name} must be a JSON object.")
        if self._model is not None:
            try:
                data = self._model.model_validate(data).model_dump(mode="json")
            except pydantic.ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                    for e in exc.errors())
                raise ValueError(f"Invalid arguments for {self.name}: {problems}. "
                                 f"Fix them and call it again.") from exc
        elif self._schema_validator is not None:
            _check_schema(self.name, self._schema_validator, data)
        refused = self.refusal(data)
        if refused is not None:
            raise ValueError(f"{refused}.")
        return data

    async def invoke(self, args: dict[str, Any], context: ToolContext) -> str:
        """Call the tool with validated arguments; sync tools run in a worker thread."""
        if self.schema is not None:
            result = await self.fn(dict(args), context)
            return result if isinstance(result, str) else json.dumps(result, default=str)
        kwargs = dict(args)
        if self._takes_context:
            kwargs["context"] = context
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(**kwargs)
        else:
            result = await asyncio.to_thread(self.fn, **kwargs)
        return result if isinstance(result, str) else json.dumps(result, default=str)


def _check_schema(name: str, validator: Any, data: dict[str, Any]) -> None:
    """Check arguments against a server's JSON schema; its first error, said for the model."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "arguments"
        raise ValueError(f"Invalid arguments for {name}: {where}: {error.message}. "
                         f"Fix them and call it again.")


def _channel_label(channel: str) -> str:
    # "#Announcements", "announcements" and " #announcements " are one channel; an id
    # ("C0123", "<#C0123>") is compared as written, so only ids listed match ids.
    return channel.strip().removeprefix("#").strip().casefold()


def _arguments_model(fn: Callable[..., Any]) -> tuple[type[pydantic.BaseModel], bool]:
    hints = get_type_hints(fn)
    fields_: dict[str, Any] = {}
    takes_context = False
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(pname, Any)
        if annotation is ToolContext or pname == "context":
            takes_context = True
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields_[pname] = (annotation, default)
    model = pydantic.create_model(  # type: ignore[call-overload]
        f"{fn.__name__}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields_)
    return model, takes_context


def tool(*, name: str | None = None, approval: Approval = "always"
         ) -> Callable[[Callable[..., Any]], Tool]:
    """Decorator: the typed function as a `Tool`, its name and approval declared with it.

    A team file names it as `module:function`; the declaration travels with it. A tool
    needs a person's approval unless it declares `approval="never"` (or the team file
    says so). The result still calls the function when called.
    """
    def wrap(fn: Callable[..., Any]) -> Tool:
        return Tool.from_function(fn, name=name, approval=approval)
    return wrap


def load_tool(ref: str, builtins: Mapping[str, Tool] = MappingProxyType({})) -> Tool:
    """A tool of `builtins` by name, or the `module:function` it names: a `Tool` as declared
    with `@tool`, or a plain typed function, which needs approval (it declared nothing)."""
    if ref in builtins:
        return builtins[ref]
    if ":" not in ref:
        raise ToolError(f"unknown tool {ref!r}; built-in tools are {', '.join(sorted(builtins)) or 'none'}, "
                        f"or name a function as 'module:function'")
    module_name, _, attr = ref.partition(":")
    if not module_name.strip() or not attr.strip():
        raise ToolError(f"tool {ref!r} must be a built-in tool name or 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ToolError(f"cannot import module {module_name!r} for tool {ref!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if isinstance(fn, Tool):
        return fn
    if not callable(fn):
        raise ToolError(f"{module_name!r} has no function {attr!r} (tool {ref!r})")
    try:
        return Tool.from_function(fn, approval="always")
    except (TypeError, NameError, pydantic.PydanticSchemaGenerationError) as exc:
        raise ToolError(f"tool {ref!r} has parameter types that cannot be described: {exc}") from exc
