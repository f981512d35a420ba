"""The engine: team specs, turn-taking, termination, tools and models. No platforms here.

What a user's tools and tests import; tests/teams/test_exported_members.py pins it.
"""

from .approvers import ApprovalPolicy, Approvers
from .catalog import TeamCatalog
from .engine import Action, Env, decide, drive, perform
from .errors import ModelError, TeamFileError, ThreadteamError
from .events import Event, from_json, to_json
from .persona import Persona
from .spec import AgentSpec, Team, TeamFileWarning, load_team, parse_team
from .state import RunState
from .tools import Tool, ToolContext, tool

__all__ = [
    "Action", "AgentSpec", "ApprovalPolicy", "Approvers", "Env", "Event", "ModelError", "Persona",
    "RunState", "Team", "TeamCatalog", "TeamFileError", "TeamFileWarning", "ThreadteamError",
    "Tool", "ToolContext", "decide", "drive", "from_json", "load_team", "parse_team", "perform",
    "to_json", "tool",
]
