"""`threadteam teams show NAME` lists what a team can do, MCP servers' tools included, with
the approval each needs; `threadteam teams check` checks the `mcp_servers:` section."""

from __future__ import annotations

import sys
import textwrap

from tests.fakes.mcp_stack import TRACKER
from threadteam.adapters.cli import main

DESK = f"""
name: desk
description: Keeps the tracker tidy.
mcp_servers:
  tracker:
    command: [{sys.executable}, {TRACKER}]
    approval: {{never: [create_issue], always: [whoami]}}
  backup:
    command: [{sys.executable}, {TRACKER}]
agents:
  - name: clerk
    system_message: Keep it tidy.
    tools: [{{mcp: tracker}}, {{mcp: backup, tools: [search_issues]}}, calculate]
termination: {{max_messages: 3}}
"""


def _rows(out: str) -> dict[str, str]:
    return {line.split()[0]: line for line in out.splitlines() if line.startswith("    ")}


def test_teams_show_lists_each_tool_with_its_approval_rule(tmp_path, capsys):
    (tmp_path / "desk.yaml").write_text(DESK)
    assert main(["teams", "show", "desk", "--teams-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert "runs at once" in rows["calculate"]
    assert "needs approval" in rows["close_issue"] and "does not mark it read-only" in \
        rows["close_issue"]
    assert "runs at once" in rows["create_issue"] and "the team file says never" in \
        rows["create_issue"]
    assert "needs approval" in rows["whoami"] and "the team file says always" in rows["whoami"]
    # Two servers of one agent offer search_issues: both are prefixed, nothing else is.
    assert "the tracker MCP server: the server marks it read-only" in \
        rows["tracker_search_issues"]
    assert "backup_search_issues" in rows and "search_issues" not in rows
    assert "backup_close_issue" not in rows, "only the tools chosen for the agent"


def test_teams_show_says_when_a_server_cannot_be_reached(tmp_path, capsys):
    (tmp_path / "desk.yaml").write_text(textwrap.dedent("""
        name: desk
        mcp_servers:
          tracker: {url: "https://${TT_UNSET_TRACKER_HOST}/mcp"}
        agents:
          - {name: clerk, system_message: Tidy., tools: [{mcp: tracker}]}
        termination: {max_messages: 3}
    """))
    assert main(["teams", "show", "desk", "--teams-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "the tracker MCP server would not start" in err
    assert "TT_UNSET_TRACKER_HOST is not set" in err


def test_teams_check_names_each_problem_of_the_section_with_its_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        name: desk
        mcp_servers:
          tracker:
            command: [python, -m, tracker]
            url: https://tracker.example/mcp
          wiki:
            url: ftp://wiki.example
          notes:
            command: notes-server
            approval: {never: [read], always: [read]}
          timing:
            command: [timing-server]
            timeout: soon
        agents:
          - name: clerk
            system_message: Tidy.
            tools: [{mcp: tracker, approval: never}]
        termination: {max_messages: 3}
    """))
    assert main(["teams", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: mcp_servers.tracker: give either command:" in err
    assert f"{bad}:7: mcp_servers.wiki.url: url must start with http:// or https://" in err
    assert f"{bad}:8: mcp_servers.notes: approval lists read under both never and always" in err
    assert f"{bad}:13: mcp_servers.timing.timeout:" in err
    assert f"{bad}:17: agents.0.tools.0: an mcp: entry takes only tools" in err


def test_teams_check_refuses_an_unknown_server_and_warns_of_an_unset_variable(tmp_path, capsys):
    f = tmp_path / "desk.yaml"
    f.write_text(textwrap.dedent("""\
        name: desk
        mcp_servers:
          tracker:
            url: https://tracker.example/mcp
            headers: {Authorization: "Bearer ${TT_UNSET_TRACKER_TOKEN}"}
        agents:
          - name: clerk
            system_message: Tidy.
            tools: [{mcp: tracker}, {mcp: wiki}]
        termination: {max_messages: 3}
    """))
    assert main(["teams", "check", str(f)]) == 1
    err = capsys.readouterr().err
    assert "unknown MCP server 'wiki'; servers are: tracker" in err
    f.write_text(f.read_text().replace(", {mcp: wiki}", ""))
    assert main(["teams", "check", str(f)]) == 0
    captured = capsys.readouterr()
    assert "ok (desk" in captured.out
    assert "${TT_UNSET_TRACKER_TOKEN} is not set in this environment" in captured.err
