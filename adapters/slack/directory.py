"""What the host may ask about people on Slack: their roles (user groups) and names.

Every answer comes from the Web API through `SlackApi.call` (rate limits waited
out like any other call) and is kept briefly, so a burst of clicks asks Slack
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from threadteam.bot.shapes import ThreadKey
from threadteam.teams.approvers import role_label

from .api import SlackApi, SlackError

__all__ = ["GROUPS_TTL", "SlackDirectory", "UserGroups", "group_labels"]

log = logging.getLogger("threadteam.slack")

GROUPS_TTL = 60.0  # seconds a workspace's user groups are trusted before asking Slack again
_Groups = list[tuple[frozenset[str], frozenset[str]]]  # (labels, members) per user group


def group_labels(group: dict[str, Any], ids: frozenset[str] = frozenset()) -> frozenset[str]:
    """What a user group from `usergroups.list` answers to: its id and its handle.

    Never its display name, which anyone may give any group ("oncall" on a group
    whose handle is @notoncall). `ids` are the labels of the workspace's group ids: a
    handle spelling another group's id (`s0oncall` against `S0ONCALL`) is not a label.
    """
    own = role_label(str(group.get("id") or ""))
    handle = role_label(str(group.get("handle") or ""))
    labels = {own} if own else set()
    if handle and (handle == own or handle not in ids):
        labels.add(handle)
    return frozenset(labels)


class SlackDirectory:
    """The host's `Directory` for one Slack workspace, and display names for the transcript."""

    def __init__(self, api: SlackApi, *, groups_ttl: float = GROUPS_TTL) -> None:
        self.api = api
        self.usergroups = UserGroups(api, ttl=groups_ttl)
        self._names: dict[str, str] = {}

    async def roles(self, key: ThreadKey, user: str) -> frozenset[str]:
        """The labels (id and handle, never the display name) of each user group `user` is in.

        The host asks only while deciding an approval of a run that names `role:`
        approvers. Any failure means no roles: the host then refuses politely, as it
        would anyone who may not approve.
        """
        return frozenset[str]().union(*await self.usergroups.of(key.workspace, user))

    async def display_name(self, user: str) -> str:
        """The person's display name for the transcript the models read (cached; "" if unknown)."""
        if user not in self._names:
            name = ""
            with contextlib.suppress(SlackError):
                # One attempt: a name is a courtesy, and the person's message waits for it.
                answer = await self.api.once("users.info", timeout=10.0, user=user)
                info = answer.get("user") or {}
                profile = info.get("profile") or {}
                name = (profile.get("display_name") or profile.get("real_name")
                        or info.get("real_name") or info.get("name") or "")
            if len(self._names) > 10_000:
                self._names.clear()
            self._names[user] = name
        return self._names[user]

    def forget(self) -> None:
        """Drop what is known, so the next question asks Slack again."""
        self.usergroups.forget()

    def cancel(self) -> None:
        """Abandon look-ups in flight (shutdown)."""
        self.usergroups.cancel()


class UserGroups:
    """Who is in which Slack user group, per workspace, from `usergroups.list`.

    A workspace's groups are fetched at most once per `ttl` (a burst of clicks shares
    one call, even while it is in flight). A failure (typically `missing_scope`: the
    app lacks `usergroups:read`) is logged once and counts as "in no group" for the
    same `ttl`.
    """

    def __init__(self, api: SlackApi, ttl: float = GROUPS_TTL, timeout: float = 30.0) -> None:
        self.api = api
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, tuple[float, _Groups]] = {}
        self._fetching: dict[str, asyncio.Task[_Groups]] = {}
        self._warned: set[tuple[str, str]] = set()

    async def of(self, workspace: str, user: str) -> list[frozenset[str]]:
        """The labels (`group_labels`) of each group `user` is a member of."""
        return [labels for labels, members in await self._groups(workspace) if user in members]

    def forget(self) -> None:
        """Drop what is known, so the next attempt asks Slack again."""
        self._cache.clear()

    def cancel(self) -> None:
        """Abandon fetches in flight (shutdown)."""
        for task in list(self._fetching.values()):
            task.cancel()

    async def _groups(self, workspace: str) -> _Groups:
        cached = self._cache.get(workspace)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        task = self._fetching.get(workspace)
        if task is None:
            task = asyncio.ensure_future(self._fetch(workspace))
            self._fetching[workspace] = task
            task.add_done_callback(lambda _: self._fetching.pop(workspace, None))
        return await asyncio.shield(task)

    async def _fetch(self, workspace: str) -> _Groups:
        groups: _Groups = []
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.api.call("usergroups.list", include_users=True)
            found = [g for g in answer.get("usergroups") or () if isinstance(g, dict)]
            ids = frozenset(role_label(str(g["id"])) for g in found if g.get("id"))
            groups = [(group_labels(g, ids), frozenset(g.get("users") or ())) for g in found]
            self._warned = {w for w in self._warned if w[0] != workspace}
        except Exception as exc:  # refused, unreachable, timed out: in no group, for now
            code = (exc.code if isinstance(exc, SlackError)
                    else "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__)
            if (workspace, code) not in self._warned:
                self._warned.add((workspace, code))
                hint = (" (user groups also need a paid Slack plan)"
                        if code == "plan_upgrade_required" else "")
                log.warning("slack: could not list user groups (%s), so nobody counts as a "
                            "member of a role: approver group; give the Slack app the "
                            "usergroups:read bot scope and reinstall it%s", code, hint)
        self._cache[workspace] = (time.monotonic() + self.ttl, groups)
        return groups
