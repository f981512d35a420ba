"""Who may decide a run's approvals (and stop it), and the rules a decision follows.

A team file writes approvers (and stoppers) as strings (`U024BE7LH`,
`"role:Moderators"`, `"role:@oncall"`); they are parsed here, once, into
`Approvers`. A role is compared by its `role_label`: any case, with or without a
leading `@`. Which labels a person's roles answer to (a Slack user group's handle
and id, a Discord role's id) is the platform's to say; this module only compares.
`ApprovalPolicy` is the team's `approval:` block: quorum, four eyes, expiry.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

__all__ = ["ROLE_PREFIX", "ApprovalPolicy", "Approvers", "role_is_id", "role_label"]

ROLE_PREFIX = "role:"

# A Discord role id (a snowflake) or a Slack user group id (S…).
_ROLE_ID = re.compile(r"\d{15,21}|S[A-Z0-9]{6,}")


def role_is_id(name: str) -> bool:
    """Whether a `role:` entry gives a role's id rather than a name that could repeat."""
    return _ROLE_ID.fullmatch(name.strip().removeprefix("@").strip()) is not None


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


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """How a pending call is decided: `quorum` distinct approvers, whether the summoner may
    be one of them, and how long a request waits before it expires (seconds, or never)."""

    quorum: int = 1
    summoner_may_approve: bool = True
    expires_after: float | None = None
