"""A tool's approval travels with it, and a tool that declares nothing needs approval.

Team files are loaded the way the host loads them (`TeamCatalog` over a directory),
and the run is driven until it either waits for a person or has run the tool.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.engine import AwaitApproval, Idle
from threadteam.teams.models.base import ToolCall

from .helpers import Run, says

MODULE = "tests.teams.declared_tools"


def team_dir(tmp_path: Path, tool_entry: str) -> Path:
    (tmp_path / "desk.yaml").write_text(textwrap.dedent(f"""
        name: desk
        agents:
          - name: clerk
            system_message: Keep the tracker tidy.
            tools:
              - {tool_entry}
        termination: {{max_messages: 2}}
    """))
    return tmp_path


def desk(tmp_path: Path, tool_entry: str):
    catalog = TeamCatalog.load(team_dir(tmp_path, tool_entry), strict=True)
    return catalog.get("desk")


async def outcome(tmp_path: Path, tool_entry: str, name: str, args: str, *, runs: bool
                  ) -> tuple[object, Run]:
    """Drive one call of the tool; a tool that runs lets the agent answer once more."""
    steps = [says("", ToolCall("c1", name, args)), *(["Done."] if runs else [])]
    run = Run(desk(tmp_path, tool_entry), steps)
    return await run.go(), run


@pytest.mark.parametrize(("entry", "tool", "args"), [
    (f"{MODULE}:create_ticket", "create_ticket", '{"title": "VPN down"}'),
    (f"{MODULE}:close_ticket", "close_ticket", '{"number": 7}'),
    (f"{MODULE}:delete_ticket", "delete_ticket", '{"number": 7}'),
])
async def test_a_tool_that_declares_or_is_given_nothing_waits_for_a_person(tmp_path, entry, tool,
                                                                          args):
    action, run = await outcome(tmp_path, entry, tool, args, runs=False)
    assert isinstance(action, AwaitApproval), f"{tool} ran without anyone approving it"
    assert run.request_of("c1").needs_approval
    assert run.log[-1] == run.request_of("c1"), "nothing ran"


async def test_a_tool_declared_approval_never_runs_at_once(tmp_path):
    action, run = await outcome(tmp_path, f"{MODULE}:lookup_ticket", "lookup_ticket",
                                '{"number": 7}', runs=True)
    assert action == Idle("finished")
    assert run.result_of("c1").output == "T-7 is open"


@pytest.mark.parametrize(("entry", "tool", "args"), [
    (f'{{use: "{MODULE}:delete_ticket", approval: never}}', "delete_ticket", '{"number": 7}'),
    (f'{{use: "{MODULE}:create_ticket", approval: never}}', "create_ticket", '{"title": "x"}'),
])
async def test_the_team_file_may_waive_approval_explicitly(tmp_path, entry, tool, args):
    action, run = await outcome(tmp_path, entry, tool, args, runs=True)
    assert action == Idle("finished")
    assert not run.request_of("c1").needs_approval
    assert not run.result_of("c1").error


async def test_the_team_file_may_require_approval_of_a_tool_declared_never(tmp_path):
    action, _ = await outcome(tmp_path, f'{{use: "{MODULE}:lookup_ticket", approval: always}}',
                              "lookup_ticket", '{"number": 7}', runs=False)
    assert isinstance(action, AwaitApproval)


def test_the_built_in_tools_keep_their_approval(tmp_path):
    team = desk(tmp_path, "post_message")
    assert team.by_name["clerk"].tool("post_message").approval == "always"
    for name in ("current_time", "calculate"):
        assert desk(tmp_path, name).by_name["clerk"].tool(name).approval == "never"
