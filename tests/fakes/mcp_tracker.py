"""A real MCP server (the `mcp` package) that plays an issue tracker, for tests and benchmarks.

    python tests/fakes/mcp_tracker.py                 # stdio
    python tests/fakes/mcp_tracker.py --http PORT     # streamable HTTP on 127.0.0.1:PORT/mcp

Every call a tool receives is appended to the file `TRACKER_LOG` names (one JSON line:
tool and arguments), so a test can say what the server saw and how often. `crash`
ends the process mid-call; `slow` sleeps; `broken` answers with isError; `rename_issue`
asks the user for the new title (MCP elicitation) before it answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Annotated

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.types import ToolAnnotations
from pydantic import BaseModel

app = MCPServer("tracker")


def _seen(tool: str, **args: object) -> None:
    path = os.environ.get("TRACKER_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": tool, "args": args, "pid": os.getpid()}) + "\n")


@app.tool(annotations=ToolAnnotations(readOnlyHint=True))
def search_issues(query: str) -> str:
    """Search the tracker's issues."""
    _seen("search_issues", query=query)
    return f"2 issues match {query!r}: #7 VPN down, #9 VPN slow"


@app.tool(annotations=ToolAnnotations(destructiveHint=True))
def close_issue(number: int) -> str:
    """Close an issue for good."""
    _seen("close_issue", number=number)
    return f"closed #{number}"


@app.tool()
def create_issue(title: str) -> str:
    """Open a new issue."""
    _seen("create_issue", title=title)
    return f"created #10 {title}"


@app.tool(annotations=ToolAnnotations(readOnlyHint=True))
def whoami() -> str:
    """Whether the tracker token the server was given is the expected one."""
    _seen("whoami")
    token, expected = os.environ.get("TRACKER_TOKEN"), os.environ.get("TRACKER_EXPECT")
    return "token ok" if token and token == expected else "no token"


@app.tool(annotations=ToolAnnotations(readOnlyHint=True))
def leak_token() -> str:
    """A careless tool that says the token it was given."""
    _seen("leak_token")
    return f"my token is {os.environ.get('TRACKER_TOKEN')}"


@app.tool(annotations=ToolAnnotations(readOnlyHint=True))
def crash() -> str:
    """Ends the server mid-call."""
    _seen("crash")
    os._exit(3)


@app.tool(annotations=ToolAnnotations(readOnlyHint=True))
async def slow(seconds: float) -> str:
    """Answers after `seconds`."""
    _seen("slow", seconds=seconds)
    await asyncio.sleep(seconds)
    return "finally"


@app.tool(annotations=ToolAnnotations(readOnlyHint=True))
def broken() -> str:
    """Always fails."""
    _seen("broken")
    raise ToolError("the tracker database is locked")


class NewTitle(BaseModel):
    title: str


def _ask_title() -> Elicit[NewTitle]:
    return Elicit("What should the new title be?", NewTitle)


@app.tool()
def rename_issue(number: int,
                 answer: Annotated[ElicitationResult[NewTitle], Resolve(_ask_title)]) -> str:
    """Rename an issue (asks the user for the new title)."""
    if answer.action == "accept":
        _seen("rename_issue", number=number, title=answer.data.title)
        return f"renamed #{number} to {answer.data.title!r}"
    _seen("rename_issue", number=number, action=answer.action)
    return f"kept #{number} as it was ({answer.action})"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        app.run()
