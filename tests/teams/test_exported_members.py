"""The public surface of `threadteam.teams`, pinned: what a user's tools and tests import."""

from __future__ import annotations

import threadteam.teams as teams

PUBLIC = [
    "Action", "AgentSpec", "ApprovalPolicy", "Approvers", "Env", "Event", "ModelError", "Persona",
    "RunState", "Team", "TeamCatalog", "TeamFileError", "TeamFileWarning", "ThreadteamError",
    "Tool", "ToolContext", "decide", "drive", "from_json", "load_team", "parse_team", "perform",
    "to_json", "tool",
]


def test_the_engine_exports_exactly_its_public_names():
    assert sorted(teams.__all__) == sorted(PUBLIC), "a change to the public surface is deliberate"


def test_every_exported_name_is_defined_and_says_what_it_is():
    for name in teams.__all__:
        member = getattr(teams, name)
        assert member.__doc__, f"threadteam.teams.{name} has no docstring"
