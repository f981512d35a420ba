"""MCP servers as tools: the team file's `mcp_servers:` section, and the connections a
process shares. `threadteam.teams.mcp.bind` turns an agent's `- mcp:` entries into tools
(imported from there: it needs the team spec, which needs this package's config)."""

from .config import McpServer, McpServerModel, McpUse
from .hub import McpFailure, McpHub, ToolOutcome

__all__ = ["McpFailure", "McpHub", "McpServer", "McpServerModel", "McpUse", "ToolOutcome"]
