"""The engine: team specs, turn-taking, termination, tools and models. No platforms here."""

from .catalog import TeamCatalog
from .engine import Action, Env, decide, drive, perform
from .errors import ModelError, TeamFileError, ThreadteamError
from .events import Event, from_json, to_json
from .persona import Persona
from .spec import AgentSpec, Team, load_team, parse_team
from .state import RunState
from .tools import Tool, ToolContext, tool

__all__ = [
    "Action", "AgentSpec", "Env", "Event", "ModelError", "Persona", "RunState", "Team",
    "TeamCatalog", "TeamFileError", "ThreadteamError", "Tool", "ToolContext", "decide", "drive",
    "from_json", "load_team", "parse_team", "perform", "to_json", "tool",
]
