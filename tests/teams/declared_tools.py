"""A user's tool module, as a team file names it (`tests.teams.declared_tools:create_ticket`)."""

from __future__ import annotations

from threadteam.teams.tools import tool


@tool(approval="always")
def create_ticket(title: str) -> str:
    """Open a ticket in the tracker."""
    return f"opened T-{len(title)}"


@tool(approval="never")
def lookup_ticket(number: int) -> str:
    """Read a ticket (changes nothing)."""
    return f"T-{number} is open"


@tool()
def close_ticket(number: int) -> str:
    """Close a ticket (declares nothing about approval)."""
    return f"closed T-{number}"


def delete_ticket(number: int) -> str:
    """Delete a ticket: a plain function, no declaration at all."""
    return f"deleted T-{number}"
