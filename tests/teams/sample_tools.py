"""Tools a team file names as `module:function` in the tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from threadteam.teams.tools import ToolContext, tool


def create_ticket(title: str, priority: Literal["low", "high"] = "low", tags: list[str] | None = None) -> dict:
    """Open a ticket in the tracker."""
    return {"ticket": f"T-{len(title)}", "priority": priority, "tags": tags or []}


async def whoami(context: ToolContext) -> str:
    """Say which agent called."""
    return f"called by {context.agent}"


def explode(reason: str) -> str:
    """Fail on purpose."""
    raise RuntimeError(f"the tracker is down ({reason})")


@tool(name="shout")
def loud(text: str) -> str:
    """Say it loudly."""
    return text.upper()


shout = loud

not_callable = 42


class Opaque:
    """A type no JSON schema can describe."""


def opaque_parameter(thing: Opaque) -> str:
    """Take something a model cannot send."""
    return ""


if TYPE_CHECKING:
    from collections import OrderedDict


def unresolvable_hint(data: OrderedDict) -> str:
    """A hint only a type checker can resolve."""
    return ""
