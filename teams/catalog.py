"""The teams a host can summon: the built-ins, then a user directory that may replace them."""

from __future__ import annotations

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
            for path in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
                try:
                    team = load_team(path)
                except TeamFileError as exc:
                    if strict:
                        raise
                    catalog.problems.append(exc)
                    continue
                catalog.teams[team.name] = team
        return catalog

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
