"""What the host may ask about people on Slack: their roles (user groups), where they
may post (channel reach) and their names.

Every answer comes from the Web API through `SlackApi` (rate limits waited out
like any other call) and is kept briefly, so a burst of clicks asks Slack once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

from threadteam.bot.errors import Refused
from threadteam.bot.shapes import ThreadKey
from threadteam.teams.approvers import role_label

from .api import SlackApi, SlackError

__all__ = ["GROUPS_TTL", "REACH_TTL", "SlackDirectory", "UserGroups", "group_labels"]

log = logging.getLogger("threadteam.slack")

GROUPS_TTL = 60.0  # seconds a workspace's user groups are trusted before asking Slack again
REACH_TTL = 60.0  # seconds a workspace's channels, and a channel's members, are trusted
_PAGE = 1000  # items asked for per page of conversations.list / conversations.members
_CHANNEL_LINK = re.compile(r"<#([A-Z0-9]+)(?:\|[^<>]*)?>")
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")
_PERSON = re.compile(r"<@[^<>]*>|@\S+|[UW][A-Z0-9]{2,}")
T = TypeVar("T")
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

    def __init__(self, api: SlackApi, *, groups_ttl: float = GROUPS_TTL,
                 reach_ttl: float = REACH_TTL) -> None:
        self.api = api
        self.usergroups = UserGroups(api, ttl=groups_ttl)
        self._channels: _Cache[dict[str, str]] = _Cache(reach_ttl)  # workspace -> id -> name
        self._members: _Cache[frozenset[str]] = _Cache(reach_ttl)  # channel id -> members
        self._names: dict[str, str] = {}
        self._naming: dict[str, asyncio.Task[str]] = {}  # look-ups of names on their way

    async def roles(self, key: ThreadKey, user: str) -> frozenset[str]:
        """The labels (id and handle, never the display name) of each user group `user` is in.

        The host asks only while deciding an approval of a run that names `role:`
        approvers. Any failure means no roles: the host then refuses politely, as it
        would anyone who may not approve.
        """
        return frozenset[str]().union(*await self.usergroups.of(key.workspace, user))

    async def reach(self, key: ThreadKey, user: str, channel: str) -> str:
        """The id of the channel `channel` names in `key`'s workspace, if `user` is a member.

        `channel` is `#name`, `name`, `<#C…|name>`, `<#C…>` or a `C…`/`G…` id. Refused
        (with a sentence for the thread and the model): a person or a DM, a channel this
        workspace does not have (or the bot cannot see), an archived one, and any
        channel `user` is not a member of, since an approved action reaches no further
        than the person who approved it.
        """
        target = channel.strip()
        link = _CHANNEL_LINK.fullmatch(target)
        if link is not None:
            target = link.group(1)
        if target.startswith("D") and _CHANNEL_ID.fullmatch("C" + target[1:]):
            raise Refused(f"`{target}` is a direct message: I only post to channels.")
        if _PERSON.fullmatch(target):
            raise Refused(f"`{_shown(target)}` is a person, not a channel: I only post to "
                          "channels, never to someone directly.")
        channels = await self._channels.get(key.workspace, self._fetch_channels)
        if _CHANNEL_ID.fullmatch(target):
            name = channels.get(target)
            if name is None:
                raise Refused(f"`{target}` is not a channel of this workspace that I can post in.")
            found = target
        else:
            wanted = target.lower().removeprefix("#")
            ids = [cid for cid, n in channels.items() if n == wanted] if wanted else []
            if not ids:
                raise Refused(f"There is no channel called `{_shown(target)}` in this workspace "
                              "that I can post in.")
            found, name = ids[0], channels[ids[0]]
        members = await self._members.get(found, lambda cid: self._fetch_members(cid, name))
        if user not in members:
            raise Refused(f"<@{user}> is not a member of #{name}, so an action they approve "
                          f"cannot post there: it reaches only where they could post themselves.")
        return found

    async def display_name(self, user: str, *, wait: float | None = None) -> str:
        """The person's display name for the transcript the models read (cached; "" if unknown).

        With `wait`, "" after that many seconds; the look-up goes on, for the next time.
        """
        if user in self._names:
            return self._names[user]
        looking = self._naming.get(user)
        if looking is None:
            looking = self._naming[user] = asyncio.ensure_future(self._look_up_name(user))
            looking.add_done_callback(lambda _: self._naming.pop(user, None))
        done, _ = await asyncio.wait({looking}, timeout=wait)
        if looking not in done or looking.cancelled() or looking.exception() is not None:
            return ""
        return looking.result()

    async def _look_up_name(self, user: str) -> str:
        name = ""
        with contextlib.suppress(SlackError):
            # One attempt: a name is a courtesy, and the person's message may wait for it.
            answer = await self.api.once("users.info", timeout=10.0, user=user)
            info = answer.get("user") or {}
            profile = info.get("profile") or {}
            name = (profile.get("display_name") or profile.get("real_name")
                    or info.get("real_name") or info.get("name") or "")
        if len(self._names) > 10_000:
            self._names.clear()
        self._names[user] = name
        return name

    def forget(self) -> None:
        """Drop what is known, so the next question asks Slack again."""
        self.usergroups.forget()
        self._channels.forget()
        self._members.forget()

    def cancel(self) -> None:
        """Abandon look-ups in flight (shutdown)."""
        for looking in list(self._naming.values()):
            looking.cancel()
        self.usergroups.cancel()
        self._channels.cancel()
        self._members.cancel()

    async def _fetch_channels(self, workspace: str) -> dict[str, str]:
        """id -> name of every channel the bot may post in: public, and private ones it is in."""
        found: dict[str, str] = {}
        async for page in self._pages("conversations.list", "channels", "the channels",
                                      types="public_channel,private_channel",
                                      exclude_archived=True):
            for ch in page:
                if isinstance(ch, dict) and ch.get("id") and ch.get("name") \
                        and not ch.get("is_archived") and not ch.get("is_im"):
                    found[str(ch["id"])] = str(ch["name"])
        return found

    async def _fetch_members(self, channel: str, name: str) -> frozenset[str]:
        members: set[str] = set()
        async for page in self._pages("conversations.members", "members",
                                      f"who is in #{name}", channel=channel):
            members.update(str(m) for m in page)
        return frozenset(members)

    async def _pages(self, method: str, field: str, what: str,
                     **params: Any) -> AsyncIterator[list[Any]]:
        """Each page of a cursor-paginated list method; Refused if Slack will not say."""
        cursor = ""
        while True:
            try:
                answer = await self.api.call(method, limit=_PAGE, **params,
                                             **({"cursor": cursor} if cursor else {}))
            except SlackError as exc:
                log.warning("slack: %s failed (%s); refusing to post outside the thread",
                            method, exc.code)
                raise Refused(f"I could not check {what} (Slack said {exc.code}), so I "
                              "will not post there.") from exc
            yield answer.get(field) or []
            cursor = str((answer.get("response_metadata") or {}).get("next_cursor") or "")
            if not cursor:
                return


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


class _Cache(Generic[T]):
    """Values by key for `ttl` seconds; one fetch in flight per key, shared by its askers.
    A failed fetch is not kept: the next asker tries again."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._kept: dict[str, tuple[float, T]] = {}
        self._fetching: dict[str, asyncio.Task[T]] = {}

    async def get(self, key: str, fetch: Callable[[str], Awaitable[T]]) -> T:
        kept = self._kept.get(key)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, fetch))
            self._fetching[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[T]) -> None:
        self._fetching.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: its askers may all have gone

    async def _fetch(self, key: str, fetch: Callable[[str], Awaitable[T]]) -> T:
        value = await fetch(key)
        if len(self._kept) >= self.size:
            self._kept.clear()
        self._kept[key] = (time.monotonic() + self.ttl, value)
        return value

    def forget(self) -> None:
        self._kept.clear()

    def cancel(self) -> None:
        for task in list(self._fetching.values()):
            task.cancel()


def _shown(text: str) -> str:
    """Someone's words, quoted back safely: one short line without backticks."""
    flat = " ".join(text.replace("`", "'").split())
    return flat if len(flat) <= 64 else flat[:63] + "…"
