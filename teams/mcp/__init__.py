"""MCP servers as tools: the team file's `mcp_servers:` section, and the connections a
process shares (loaded on first use). `threadteam.teams.mcp.bind` turns an agent's `- mcp:` entries into tools
(imported from there: it needs the team spec, which needs this package's config)."""

from typing import TYPE_CHECKING, Any

from .config import McpServer, McpServerModel, McpUse

if TYPE_CHECKING:
    from .hub import McpFailure, McpHub, ToolOutcome

__all__ = ["McpFailure", "McpHub", "McpServer", "McpServerModel", "McpUse", "ToolOutcome"]


def __getattr__(name: str) -> Any:
    # The connections (and the MCP SDK under them) load on first use: reading a team file,
    # or `threadteam --help`, does not pay for them.
    if name in ("McpFailure", "McpHub", "ToolOutcome"):
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
