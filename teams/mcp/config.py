"""The `mcp_servers:` section of a team file: how to reach each server, and its approvals.

    mcp_servers:
      tracker:
        command: [python, -m, tracker_server]   # stdio; or url: https://…/mcp (streamable HTTP)
        headers: {Authorization: "Bearer ${TRACKER_TOKEN}"}   # url only
        env: {TRACKER_DB: /srv/tracker.db}      # command only
        approval: {never: [search_issues], always: [close_issue]}
        timeout: 60s

`${VAR}` is filled from the environment only when the server is reached, so the
value never enters a `Team`, a run's log, a thread or a span.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from .._duration import seconds

__all__ = ["DEFAULT_TIMEOUT", "McpServer", "McpServerModel", "McpUse", "MissingVariable",
           "expand", "variables_in"]

#: How long one call may take when the team file gives no `timeout:` (seconds).
DEFAULT_TIMEOUT = 60.0

_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MissingVariable(LookupError):
    """A `${VAR}` of a server's settings is not set in the environment."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ApprovalLists(_Strict):
    never: list[pydantic.StrictStr] = []
    always: list[pydantic.StrictStr] = []


class McpServerModel(_Strict):
    """One server as a team file writes it (checked at the trust boundary)."""

    command: list[pydantic.StrictStr] | None = Field(default=None, min_length=1)
    url: pydantic.StrictStr | None = None
    headers: dict[str, pydantic.StrictStr] = {}
    env: dict[str, pydantic.StrictStr] = {}
    cwd: pydantic.StrictStr | None = None
    approval: _ApprovalLists = _ApprovalLists()
    timeout: float = DEFAULT_TIMEOUT

    @pydantic.field_validator("command", mode="before")
    @classmethod
    def _command(cls, v: Any) -> Any:
        # `command: python -m tracker` is short for the list form.
        return shlex.split(v) if isinstance(v, str) else v

    @pydantic.field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: Any) -> float:
        value = seconds(v, "timeout")
        if value <= 0:
            raise ValueError("timeout must be more than 0 seconds")
        return value

    @pydantic.field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://", "${")):
            raise ValueError("url must start with http:// or https://")
        return v

    @pydantic.model_validator(mode="after")
    def _one_way(self) -> McpServerModel:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command: (a stdio server) or url: (streamable HTTP)")
        if self.headers and self.url is None:
            raise ValueError("headers: only apply to a url: server")
        if (self.env or self.cwd) and self.command is None:
            raise ValueError("env: and cwd: only apply to a command: server")
        both = sorted(set(self.approval.never) & set(self.approval.always))
        if both:
            raise ValueError(f"approval lists {', '.join(both)} under both never and always")
        for text in self._texts():
            for name in _VAR.findall(text):
                if not _VAR_NAME.fullmatch(name):
                    raise ValueError(f"${{{name}}} is not a variable name (use ${{NAME}})")
        return self

    def _texts(self) -> list[str]:
        return [*(self.command or ()), self.url or "", self.cwd or "",
                *self.headers.values(), *self.env.values()]


@dataclass(frozen=True)
class McpServer:
    """A checked server: `${VAR}`s are kept as written, filled in only to connect."""

    name: str
    command: tuple[str, ...] = ()
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = ""
    never: frozenset[str] = frozenset()
    always: frozenset[str] = frozenset()
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def of(cls, name: str, m: McpServerModel) -> McpServer:
        return cls(name, tuple(m.command or ()), m.url or "", tuple(sorted(m.headers.items())),
                   tuple(sorted(m.env.items())), m.cwd or "", frozenset(m.approval.never),
                   frozenset(m.approval.always), m.timeout)

    @property
    def transport(self) -> str:
        """`stdio` or `http`."""
        return "stdio" if self.command else "http"

    @property
    def variables(self) -> tuple[str, ...]:
        """The environment variables its settings name, in order."""
        texts = [*self.command, self.url, self.cwd, *(v for _, v in self.headers),
                 *(v for _, v in self.env)]
        return tuple(dict.fromkeys(n for t in texts for n in _VAR.findall(t)))


def variables_in(text: str) -> list[str]:
    """The `${VAR}` names in `text`."""
    return _VAR.findall(text)


def expand(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with each `${VAR}` replaced from the environment; `MissingVariable` names
    the first that is not set (never its value)."""
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise MissingVariable(name)
        return env[name]
    return _VAR.sub(value, text)


@dataclass(frozen=True)
class McpUse:
    """An agent's `- mcp: server` entry: all its tools, or the `tools` named."""

    server: str
    tools: tuple[str, ...] | None = None
    where: tuple[str | int, ...] = field(default=(), compare=False)
