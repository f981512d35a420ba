"""Who may decide a run's approvals: people by their platform id, and roles.

A team file writes approvers as strings (`U024BE7LH`, `"role:Moderators"`,
`"role:@oncall"`); they are parsed here, once, into `Approvers`. A role is
compared by its `role_label`: any case, with or without a leading `@`. Which
labels a person's roles answer to (a Slack user group's handle and id, a
Discord role's id) is the platform's to say; this module only compares.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

__all__ = ["ROLE_PREFIX", "Approvers", "role_label"]

ROLE_PREFIX = "role:"


def role_label(name: str) -> str:
    """How a `role:` name is compared: any case, with or without the `@`."""
    return name.strip().removeprefix("@").strip().casefold()


@dataclass(frozen=True, slots=True)
class Approvers:
    """The people (platform user ids) and roles (as written) who may decide approvals."""

    people: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Approvers:
        """From a team file's `approvers:` list (or the summoner alone)."""
        people: list[str] = []
        roles: list[str] = []
        for entry in entries:
            if entry.startswith(ROLE_PREFIX):
                if role_label(entry[len(ROLE_PREFIX):]):
                    roles.append(entry[len(ROLE_PREFIX):].strip())
            elif entry.strip():
                people.append(entry.strip())
        return cls(tuple(dict.fromkeys(people)), tuple(dict.fromkeys(roles)))

    @property
    def needs_roles(self) -> bool:
        """Whether deciding needs to know the person's roles at all."""
        return bool(self.roles)

    def admits(self, user: str, held: Collection[str] = ()) -> bool:
        """Whether `user`, holding roles that answer to the labels `held`, may decide."""
        if user in self.people:
            return True
        labels = {role_label(h) for h in held}
        return any(role_label(r) in labels for r in self.roles)
