"""The teams a host can summon: built-ins, plus a user folder that adds and replaces teams."""

from __future__ import annotations

from pathlib import Path

import pytest

from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.errors import TeamFileError

MINE = """\
name: {name}
description: {description}
agents:
  - name: helper
    system_message: Help.
termination: {{max_messages: 2}}
"""


def write(folder: Path, file: str, name: str, description: str = "Mine.") -> Path:
    path = folder / file
    path.write_text(MINE.format(name=name, description=description))
    return path


def test_the_built_in_teams_cover_the_products_uses():
    catalog = TeamCatalog.load()
    assert catalog.problems == []
    assert {"debate", "triage", "announce"} <= set(catalog.names())
    debate, triage, announce = (catalog.get(n) for n in ("debate", "triage", "announce"))
    assert debate.strategy == "round_robin"
    assert [a.name for a in debate.agents] == ["bull", "bear", "synthesis"]
    assert triage.strategy == "selector" and triage.humans, "triage lets the model pick the person"
    posters = [t for a in announce.agents for t in a.tools if t.name == "post_message"]
    assert posters and posters[0].approval == "always"
    for team in catalog.teams.values():
        assert team.description, f"{team.name} needs a description for listings"
        for agent in team.agents:
            assert agent.persona.avatar_emoji or agent.persona.avatar_url, agent.name


def test_a_user_folder_adds_teams_and_replaces_a_built_in_by_name(tmp_path: Path):
    write(tmp_path, "review.yaml", "review", "Reviews code.")
    write(tmp_path, "debate.yml", "debate", "My own debate.")
    (tmp_path / "notes.txt").write_text("not a team")
    catalog = TeamCatalog.load(tmp_path)
    assert catalog.problems == []
    assert catalog.get("review").description == "Reviews code."
    assert catalog.get("debate").description == "My own debate."
    assert [a.name for a in catalog.get("debate").agents] == ["helper"]
    assert catalog.get("triage") is not None, "other built-ins stay"
    assert ("review", "Reviews code.") in catalog.choices()


def test_a_broken_user_file_is_reported_and_the_others_still_load(tmp_path: Path):
    write(tmp_path, "good.yaml", "good")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nagents:\n  - name: a\n    sytem_message: x\ntermination: {stop: true}\n")
    catalog = TeamCatalog.load(tmp_path)
    assert catalog.get("good") is not None and catalog.get("debate") is not None
    assert catalog.get("bad") is None
    (problem,) = catalog.problems
    assert str(problem).startswith(f"{bad}:4: unknown key 'sytem_message'")


def test_strict_loading_raises_the_first_problem(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text("name: [a, b\nagents: []\n")
    with pytest.raises(TeamFileError, match=r"bad\.yaml:2: not valid YAML"):
        TeamCatalog.load(tmp_path, strict=True)


def test_a_teams_dir_that_is_not_a_folder_is_refused(tmp_path: Path):
    with pytest.raises(TeamFileError, match="not a directory"):
        TeamCatalog.load(tmp_path / "nowhere")


def test_names_are_found_whatever_their_case(tmp_path: Path):
    write(tmp_path, "ops.yaml", "OpsDesk")
    catalog = TeamCatalog.load(tmp_path)
    assert catalog.get("Debate") is catalog.get("debate") is not None
    assert catalog.get("opsdesk") is catalog.get("OpsDesk") is not None
    assert catalog.get("nope") is None


def test_two_files_with_one_team_name_are_an_error_naming_both(tmp_path: Path):
    first = write(tmp_path, "review.yaml", "review", "The first review.")
    second = write(tmp_path, "review2.yml", "Review", "The second review.")
    catalog = TeamCatalog.load(tmp_path)
    (problem,) = catalog.problems
    assert str(problem) == (f"{second}:1: team name 'Review' is already used by {first}:1; "
                            f"rename one of them (this file was skipped)")
    assert catalog.get("review").description == "The first review.", \
        "the first in name order keeps the team, whatever order the files load in"
    assert catalog.get("debate") is not None
    with pytest.raises(TeamFileError, match=r"already used by .*review\.yaml:1"):
        TeamCatalog.load(tmp_path, strict=True)


def test_a_user_file_may_still_replace_a_built_in_of_its_name(tmp_path: Path):
    write(tmp_path, "debate.yaml", "debate", "Mine.")
    catalog = TeamCatalog.load(tmp_path)
    assert catalog.problems == [] and catalog.get("debate").description == "Mine."


def test_files_checked_together_report_every_problem_and_shared_names(tmp_path: Path):
    good = write(tmp_path, "a.yaml", "ops")
    again = write(tmp_path, "b.yaml", "ops")
    broken = tmp_path / "c.yaml"
    broken.write_text("name: c\nstrategy: nope\nagents:\n  - name: a\n    sytem_message: x\n"
                      "termination: {stop: true}\n")
    catalog = TeamCatalog.from_files([good, again, broken, good])
    assert list(catalog.teams) == ["ops"] and catalog.teams["ops"].source == str(good)
    assert [str(p).splitlines() for p in catalog.problems] == [
        [f"{again}:1: team name 'ops' is already used by {good}:1; "
         f"rename one of them (this file was skipped)"],
        [f"{broken}:2: strategy: input should be 'round_robin', 'selector', 'swarm' or 'magentic'",
         f"{broken}:5: unknown key 'sytem_message' in agents.0 (did you mean 'system_message'?)"]]
