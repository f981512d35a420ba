"""The teams a host can summon: the built-ins, then a user directory that may replace them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import TeamFileError
from .spec import Team, TeamFileWarning, load_team, parse_team

__all__ = ["TeamCatalog"]


@dataclass
class TeamCatalog:
    """Teams by name; `problems` keeps the user files that failed to load."""

    teams: dict[str, Team] = field(default_factory=dict)
    problems: list[TeamFileError] = field(default_factory=list)

    @classmethod
    def load(cls, extra_dir: str | Path | None = None, *, strict: bool = False) -> TeamCatalog:
        """Built-in teams, overlaid by `*.yaml`/`*.yml` files from `extra_dir`.

        A broken user file is kept in `problems` (or raised with `strict`) so one
        bad file does not take the others down.
        """
        catalog = cls()
        for entry in sorted(resources.files("threadteam.teams.builtin").iterdir(), key=lambda p: p.name):
            if entry.name.endswith((".yaml", ".yml")):
                team = parse_team(entry.read_text(encoding="utf-8"), f"builtin:{entry.name}")
                catalog.teams[team.name] = team
        if extra_dir:
            d = Path(extra_dir).expanduser()
            if not d.is_dir():
                raise TeamFileError(str(d), None, "THREADTEAM_TEAMS_DIR is not a directory")
            catalog._add_files(sorted([*d.glob("*.yaml"), *d.glob("*.yml")]), strict=strict)
        return catalog

    @classmethod
    def from_files(cls, files: Iterable[str | Path]) -> TeamCatalog:
        """Only the teams of `files` (no built-ins), checked together as one folder would be:
        every problem of each file, and two files that give the same team name."""
        catalog = cls()
        catalog._add_files(list(dict.fromkeys(Path(f) for f in files)), strict=False)
        return catalog

    def _add_files(self, paths: list[Path], *, strict: bool) -> None:
        """Load user files over what is here (a built-in gives way to a file of its name).

        A file whose team name an earlier file of the same set took (whatever its case)
        is refused, naming both: the first in name order keeps the team, never silently
        the one that happened to load last.
        """
        mine: dict[str, Team] = {}
        for path in paths:
            try:
                team = load_team(path)
                first = mine.get(team.name.lower())
                if first is not None:
                    raise _same_name(team, first)
            except TeamFileError as exc:
                if strict:
                    raise
                self.problems.append(exc)
                continue
            mine[team.name.lower()] = team
            self.teams[team.name] = team

    @property
    def warnings(self) -> list[TeamFileWarning]:
        """Advice about teams that loaded (file:line: warning: ...), for `teams check` and logs."""
        return [w for team in self.teams.values() for w in team.warnings]

    def get(self, name: str) -> Team | None:
        """The team called `name`, whatever its case ("Debate", "debate")."""
        team = self.teams.get(name)
        if team is None:
            low = name.lower()
            team = next((t for n, t in self.teams.items() if n.lower() == low), None)
        return team

    def names(self) -> list[str]:
        return sorted(self.teams)

    def choices(self) -> list[tuple[str, str]]:
        """(name, description) pairs, for listings and autocomplete."""
        return [(n, self.teams[n].description) for n in self.names()]


def _same_name(team: Team, first: Team) -> TeamFileError:
    where = f"{first.source}:{first.name_line}" if first.name_line else first.source
    return TeamFileError(team.source, team.name_line, (
        f"team name '{team.name}' is already used by {where}; "
        f"rename one of them (this file was skipped)"))
