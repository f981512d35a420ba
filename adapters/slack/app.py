"""The Slack adapter: a slack_bolt AsyncApp in Socket Mode or behind an HTTP endpoint.

    receiver thread:  Slack ──► bolt (signature, auth, ignore self) ──► ignore bots
                        ──► de-duplicate ──► listener: ack, translate to Inbound
    main loop:        ──► host.handle(inbound) ──► ephemeral reply, if any

Every listener acks before any work (bolt runs with `process_before_response`, so
the ack goes back the moment the listener returns) and hands the work to the main
loop, where the host and the poster live (see `_receive` for why two loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from threadteam.bot.errors import ConfigError, PlatformError
from threadteam.bot.shapes import Inbound, Memory, ThreadKey

from ._format import to_mrkdwn
from ._inbound import (
    APPROVE_ACTION,
    DENY_ACTION,
    RecentIds,
    button_inbound,
    command_key,
    group_labels,
    is_from_bot,
    message_inbound,
    unescape,
)
from ._outbound import SlackPoster
from ._receive import EVENTS_PATH, Receiver

if TYPE_CHECKING:
    from threadteam.bot.host import Host

__all__ = ["EVENTS_PATH", "SlackAdapter", "SlackConfig"]

log = logging.getLogger("threadteam.slack")

COMMAND = "/team"
GROUPS_TTL = 60.0  # seconds a workspace's user groups are trusted before asking Slack again


@dataclass(frozen=True)
class SlackConfig:
    """Tokens and where Slack is; `app_token` set means Socket Mode."""

    bot_token: str
    signing_secret: str = ""
    app_token: str = ""
    api_url: str = ""

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SlackConfig:
        """Read SLACK_* variables; a missing or malformed one raises ConfigError naming it."""
        env = os.environ if env is None else env
        bot = env.get("SLACK_BOT_TOKEN", "").strip()
        app = env.get("SLACK_APP_TOKEN", "").strip()
        secret = env.get("SLACK_SIGNING_SECRET", "").strip()
        url = env.get("SLACK_API_URL", "").strip()
        if not bot:
            raise ConfigError("SLACK_BOT_TOKEN is not set: copy the Bot User OAuth Token "
                              "(xoxb-...) from your Slack app's OAuth & Permissions page")
        if not bot.startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN must be a bot token starting with xoxb-")
        if app and not app.startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN must be an app-level token starting with xapp- "
                              "(Basic Information > App-Level Tokens, scope connections:write)")
        if not app and not secret:
            raise ConfigError("SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify "
                              "requests (or set SLACK_APP_TOKEN to use Socket Mode)")
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"SLACK_API_URL must be an http(s) URL, got {url!r}")
        return cls(bot_token=bot, signing_secret=secret, app_token=app, api_url=url)


class SlackAdapter:
    """Connects one Slack workspace to a Host: events in, posts out through `poster`."""

    def __init__(self, config: SlackConfig, *, memory: Memory | None = None) -> None:
        self.config = config
        self._base_url = (config.api_url.rstrip("/") + "/" if config.api_url
                          else AsyncWebClient.BASE_URL)
        self.client = AsyncWebClient(token=config.bot_token, base_url=self._base_url)
        self.poster = SlackPoster(self.client, memory=memory)
        self.bot_user_id = ""
        self.bot_name = "threadteam"
        self.host: Host | None = None
        self._receiver: Receiver | None = None
        self._main: asyncio.AbstractEventLoop | None = None
        self._recent = RecentIds()
        self._names: dict[str, str] = {}
        self.usergroups = UserGroups(self.poster)
        self._tasks: set[asyncio.Task[None]] = set()
        # Work handed over by the receiver thread (only it counts up `_handed`) and
        # taken up by the main loop (only it counts up `_taken`): equal means settled.
        self._handed = 0
        self._taken = 0

    # -- lifecycle ----------------------------------------------------------------------
    async def connect(self) -> None:
        """Check the bot token with auth.test and learn who the bot is."""
        if self.client.session is None:
            # slack_sdk opens a new session (and TCP connection) per call without one.
            self.client.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=60))
        try:
            who = await self.client.auth_test()
        except SlackApiError as exc:
            await self.aclose()
            error = exc.response.get("error", "unknown_error")
            raise ConfigError(f"SLACK_BOT_TOKEN was refused by Slack ({error})") from None
        except Exception as exc:  # aiohttp's errors, DNS, refused connections
            await self.aclose()
            where = self.config.api_url or "slack.com"
            raise ConfigError(f"Slack could not be reached at {where}: {exc}") from None
        self.bot_user_id = who.get("user_id", "")
        self.bot_name = who.get("user") or self.bot_name

    async def start(self, host: Host, *, port: int | None = None, bind: str = "0.0.0.0") -> None:
        """Start receiving: Socket Mode if an app token is set, else HTTP on `port`."""
        if not self.bot_user_id:
            await self.connect()
        self.host = host
        self._main = asyncio.get_running_loop()
        self._receiver = Receiver(
            bot_token=self.config.bot_token, base_url=self._base_url,
            signing_secret=self.config.signing_secret, app_token=self.config.app_token,
            bot_user_id=self.bot_user_id, build_bolt=self._build_bolt)
        try:
            await self._receiver.start(port=port, bind=bind)
        except BaseException:
            await self.aclose()
            raise

    async def stop(self) -> None:
        """Stop receiving and let the work already acked reach the host (briefly)."""
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            await receiver.stop()
        await self.settle(timeout=5.0)

    async def aclose(self) -> None:
        """Stop receiving and close the Web API session (after the host: it posts through it)."""
        await self.stop()
        for t in list(self._tasks):
            t.cancel()
        self.usergroups.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self.poster.drain()
        await self.poster.stop_streaming()
        if self.client.session is not None:
            await self.client.session.close()
            self.client.session = None

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait for the work acked so far to be done (tests, shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._tasks or self._taken < self._handed:
                    if self._tasks:
                        await asyncio.gather(*list(self._tasks), return_exceptions=True)
                    else:
                        await asyncio.sleep(0.001)
                await self.poster.drain()  # reactions and placeholders on their way

    @property
    def port(self) -> int | None:
        """The HTTP port being served (HTTP mode)."""
        return self._receiver.port if self._receiver else None

    @property
    def url(self) -> str:
        """The HTTP endpoint on loopback (HTTP mode)."""
        return f"http://127.0.0.1:{self.port}{EVENTS_PATH}"

    # -- bolt wiring ----------------------------------------------------------------------
    def _build_bolt(self, client: AsyncWebClient) -> AsyncApp:
        """Bolt, built on the receiver thread with that thread's client."""
        bolt = AsyncApp(
            client=client,
            signing_secret=self.config.signing_secret,
            request_verification_enabled=not self.config.socket_mode,
            process_before_response=True,  # our listeners only ack and spawn: see module doc
            logger=logging.getLogger("threadteam.slack.bolt"),
        )
        bolt.use(self._ignore_bots)
        bolt.use(self._drop_redeliveries)
        bolt.event("app_mention")(self._on_message)
        bolt.event("message")(self._on_message)
        bolt.command(COMMAND)(self._on_command)
        bolt.action(re.compile(f"^({APPROVE_ACTION}|{DENY_ACTION})$"))(self._on_button)
        return bolt

    async def _ignore_bots(self, body: dict[str, Any], next: Any) -> BoltResponse | None:
        """Other bots' posts, and our own persona posts echoed back, go no further."""
        event = body.get("event")
        if isinstance(event, dict) and is_from_bot(event, self.bot_user_id):
            return BoltResponse(status=200, body="")
        return await next()

    async def _drop_redeliveries(self, body: dict[str, Any], next: Any) -> BoltResponse | None:
        """Slack re-sends an event it thinks we missed (X-Slack-Retry-Num); take it once."""
        event_id = body.get("event_id")
        if event_id and not self._recent.first(str(event_id)):
            return BoltResponse(status=200, body="")
        return await next()

    async def _on_message(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        inbound = message_inbound(body, self.bot_user_id)
        if inbound is not None:
            self._spawn(self._deliver(inbound))

    async def _on_button(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        inbound = button_inbound(body)
        if inbound is not None:
            self._spawn(self._deliver(inbound))

    async def _on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        assert self.host is not None
        text = unescape((command.get("text") or "").strip())
        problem = self.host.check_summon(text)
        if problem is not None:  # answered in the ack itself: only the caller sees it
            await ack(text=to_mrkdwn(problem, italics=False), response_type="ephemeral")
            return
        await ack()
        self._spawn(self._summon_from_command(command, text, respond))

    # -- after the ack ---------------------------------------------------------------------
    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Hand `work` from the receiver thread to the main loop, where the host lives."""
        assert self._main is not None
        self._handed += 1
        self._main.call_soon_threadsafe(self._take, work)

    def _take(self, work: Coroutine[Any, Any, None]) -> None:
        self._taken += 1
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _summon_from_command(self, command: dict[str, Any], text: str, respond: Any) -> None:
        user, channel = command["user_id"], command["channel_id"]
        team, task = command["text"].strip().split(None, 1)  # Slack's own markup, as typed
        try:
            ts = await self.poster.root(channel, f"<@{user}> summoned *{team.lower()}*: {task}")
        except PlatformError as exc:
            log.warning("slack: /team could not post in %s: %s", channel, exc)
            with contextlib.suppress(Exception):
                await respond(text=f"I can't post in this channel ({_code(exc)}). Invite me with "
                                   f"`/invite @{self.bot_name}` and try again.",
                              response_type="ephemeral", replace_original=False)
            return
        key = command_key(command, ts)
        await self._deliver(Inbound(key=key, user=user, text=text, kind="summon",
                                    event_id=f"{key.workspace}:{channel}:{ts}"))

    async def _deliver(self, inbound: Inbound) -> None:
        assert self.host is not None
        try:
            if not inbound.display_name:
                inbound = replace(inbound, display_name=await self._display_name(inbound.user))
            handled = await self.host.handle(inbound)
            if handled.private:
                await self.poster.ephemeral(inbound.key, inbound.user, handled.private)
            elif inbound.kind == "reply" and handled.taken:
                # Taken into the run: say so on the message itself, for the person who
                # answered from a phone while an agent was at work.
                self.poster.acknowledge(inbound.key, inbound.event_id.rsplit(":", 1)[-1])
        except Exception:
            log.exception("slack: handling %s %s failed", inbound.kind, inbound.event_id)

    async def _display_name(self, user: str) -> str:
        """The person's display name for the transcript the models read (cached)."""
        if user not in self._names:
            name = ""
            with contextlib.suppress(Exception):
                info = (await self.client.users_info(user=user)).get("user") or {}
                profile = info.get("profile") or {}
                name = (profile.get("display_name") or profile.get("real_name")
                        or info.get("real_name") or info.get("name") or "")
            if len(self._names) > 10_000:
                self._names.clear()
            self._names[user] = name
        return self._names[user]

    @property
    def directory(self) -> SlackAdapter:
        """What the host asks about people: this adapter (see `roles`)."""
        return self

    async def roles(self, key: ThreadKey, user: str) -> frozenset[str]:
        """The labels (handle, name, id) of each Slack user group `user` is in.

        The host asks only while deciding an approval of a run that names `role:`
        approvers. Any failure means no roles: the host then refuses politely, as it
        would anyone who may not approve.
        """
        return frozenset[str]().union(*await self.usergroups.of(key.workspace, user))


class UserGroups:
    """Who is in which Slack user group, per workspace, from `usergroups.list`.

    A workspace's groups are fetched at most once per `ttl` (a burst of clicks shares
    one call, even while it is in flight) through `SlackPoster.call`, so Slack's rate
    limits are waited out like any other call. A failure (typically `missing_scope`:
    the app lacks `usergroups:read`) is logged once and counts as "in no group" for
    the same `ttl`.
    """

    def __init__(self, poster: SlackPoster, ttl: float = GROUPS_TTL, timeout: float = 30.0
                 ) -> None:
        self.poster = poster
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, tuple[float, list[tuple[frozenset[str], frozenset[str]]]]] = {}
        self._fetching: dict[str, asyncio.Task[list[tuple[frozenset[str], frozenset[str]]]]] = {}
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

    async def _groups(self, workspace: str) -> list[tuple[frozenset[str], frozenset[str]]]:
        cached = self._cache.get(workspace)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        task = self._fetching.get(workspace)
        if task is None:
            task = asyncio.ensure_future(self._fetch(workspace))
            self._fetching[workspace] = task
            task.add_done_callback(lambda _: self._fetching.pop(workspace, None))
        return await asyncio.shield(task)

    async def _fetch(self, workspace: str) -> list[tuple[frozenset[str], frozenset[str]]]:
        groups: list[tuple[frozenset[str], frozenset[str]]] = []
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self.poster.call("usergroups.list", include_users=True)
            groups = [(group_labels(g), frozenset(g.get("users") or ()))
                      for g in answer.get("usergroups") or ()]
            self._warned = {w for w in self._warned if w[0] != workspace}
        except Exception as exc:  # refused, unreachable, timed out: in no group, for now
            code = (_code(exc) if isinstance(exc, PlatformError) and isinstance(
                exc.__cause__, SlackApiError) else str(exc) or type(exc).__name__)
            if (workspace, code) not in self._warned:
                self._warned.add((workspace, code))
                hint = (" (user groups also need a paid Slack plan)"
                        if code == "plan_upgrade_required" else "")
                log.warning("slack: could not list user groups (%s), so nobody counts as a "
                            "member of a role: approver group; give the Slack app the "
                            "usergroups:read bot scope and reinstall it%s", code, hint)
        self._cache[workspace] = (time.monotonic() + self.ttl, groups)
        return groups


def _code(exc: PlatformError) -> str:
    cause = exc.__cause__
    if isinstance(cause, SlackApiError):
        return str(cause.response.get("error", "error"))
    return "error"
