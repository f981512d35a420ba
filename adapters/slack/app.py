"""The Slack adapter: a slack_bolt AsyncApp in Socket Mode or behind an HTTP endpoint.

    Slack ──► bolt (signature, auth, ignore self) ──► ignore bots ──► de-duplicate
          ──► listener: ack at once, translate to Inbound ──► task: host.handle()

Every listener acks before any work (bolt runs with `process_before_response`, so
the ack goes back the moment the listener returns, and the listener only spawns
the work as a task). The host is reached after the ack, never before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import ConfigError, PlatformError
from bot.shapes import Inbound

from ._format import to_mrkdwn
from ._inbound import (
    APPROVE_ACTION,
    DENY_ACTION,
    RecentIds,
    button_inbound,
    command_key,
    is_from_bot,
    message_inbound,
)
from ._outbound import SlackPoster

if TYPE_CHECKING:
    from bot.host import Host

__all__ = ["EVENTS_PATH", "SlackAdapter", "SlackConfig"]

log = logging.getLogger("threadteam.slack")

EVENTS_PATH = "/slack/events"
COMMAND = "/team"


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

    def __init__(self, config: SlackConfig) -> None:
        self.config = config
        base = config.api_url.rstrip("/") + "/" if config.api_url else AsyncWebClient.BASE_URL
        self.client = AsyncWebClient(token=config.bot_token, base_url=base)
        self.poster = SlackPoster(self.client)
        self.bot_user_id = ""
        self.bot_name = "threadteam"
        self.host: Host | None = None
        self.port: int | None = None
        self._recent = RecentIds()
        self._names: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._bolt: AsyncApp | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._verifier = SignatureVerifier(config.signing_secret or "-")

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
        self._bolt = self._build_bolt()
        try:
            if self.config.socket_mode:
                await self._start_socket_mode()
            else:
                await self._start_http(bind, 3000 if port is None else port)
        except BaseException:
            await self.aclose()
            raise

    async def stop(self) -> None:
        """Stop receiving and let the work already acked reach the host (briefly)."""
        socket_mode, self._socket = self._socket, None
        if socket_mode is not None:
            with contextlib.suppress(Exception):
                await socket_mode.close_async()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self.settle(timeout=5.0)

    async def aclose(self) -> None:
        """Stop receiving and close the Web API session (after the host: it posts through it)."""
        await self.stop()
        for t in list(self._tasks):
            t.cancel()
        if self.client.session is not None:
            await self.client.session.close()
            self.client.session = None

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait for the work spawned after acks to finish (tests, shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)

    @property
    def url(self) -> str:
        """The HTTP endpoint on loopback (HTTP mode)."""
        return f"http://127.0.0.1:{self.port}{EVENTS_PATH}"

    async def _start_http(self, bind: str, port: int) -> None:
        web_app = web.Application()
        web_app.router.add_post(EVENTS_PATH, self._on_http)
        web_app.router.add_get("/healthz", self._on_health)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, bind, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"--port {port}: cannot listen on {bind}:{port} "
                              f"({exc.strerror or exc})") from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("slack: serving %s on port %s", EVENTS_PATH, self.port)

    async def _start_socket_mode(self) -> None:
        assert self._bolt is not None
        self._socket = _SocketModeHandler(self._bolt, self.config.app_token,
                                          web_client=self.client)
        self._socket.bot_user_id = self.bot_user_id
        client = self._socket.client
        try:
            # Asked here, not inside connect(), which would retry a refused token forever.
            client.wss_uri = await client.issue_new_wss_url()
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown_error")
            raise ConfigError(f"SLACK_APP_TOKEN was refused by Slack ({error})") from None
        await self._socket.connect_async()
        log.info("slack: connected in Socket Mode")

    async def _on_http(self, request: web.Request) -> web.StreamResponse:
        assert self._bolt is not None
        body = await request.text()
        if self._verified_bot_echo(body, request.headers):
            return web.Response(status=200)
        bolt_request = AsyncBoltRequest(body=body, query=request.query_string,
                                        headers=request.headers)  # type: ignore[arg-type]
        return await to_aiohttp_response(await self._bolt.async_dispatch(bolt_request))

    def _verified_bot_echo(self, body: str, headers: Mapping[str, str]) -> bool:
        """A signed event carrying a bot's post: 3 of every 4 events a run brings in.

        Slack sends each persona post back; answering those before bolt's request
        machinery halves the endpoint's work per turn. Unsigned bodies go on to
        bolt, which refuses them.
        """
        if '"bot_id"' not in body and '"bot_message"' not in body:
            return False
        if not self._verifier.is_valid(body, headers.get("X-Slack-Request-Timestamp", ""),
                                       headers.get("X-Slack-Signature", "")):
            return False
        try:
            event = json.loads(body).get("event")
        except (ValueError, AttributeError):
            return False
        return isinstance(event, dict) and is_from_bot(event, self.bot_user_id)

    async def _on_health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "mode": "http"})

    # -- bolt wiring ----------------------------------------------------------------------
    def _build_bolt(self) -> AsyncApp:
        bolt = AsyncApp(
            client=self.client,
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
        text = (command.get("text") or "").strip()
        problem = self.host.check_summon(text)
        if problem is not None:  # answered in the ack itself: only the caller sees it
            await ack(text=to_mrkdwn(problem, italics=False), response_type="ephemeral")
            return
        await ack()
        self._spawn(self._summon_from_command(command, text, respond))

    # -- after the ack ---------------------------------------------------------------------
    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _summon_from_command(self, command: dict[str, Any], text: str, respond: Any) -> None:
        user, channel = command["user_id"], command["channel_id"]
        team, task = text.split(None, 1)
        try:
            ts = await self.poster.root(channel, f"<@{user}> summoned *{team.lower()}*: "
                                                 f"{to_mrkdwn(task)}")
        except PlatformError as exc:
            log.warning("slack: /team could not post in %s: %s", channel, exc)
            with contextlib.suppress(Exception):
                await respond(text=f"I can't post in this channel ({_code(exc)}). Invite me with "
                                   f"`/invite @{self.bot_name}` and try again.",
                              response_type="ephemeral", replace_original=False)
            return
        key = command_key(command, ts)
        await self._deliver(Inbound(key=key, user=user, text=text, kind="summon",
                                    event_id=f"{key.workspace}:{channel}:{ts}",
                                    display_name=command.get("user_name", "")))

    async def _deliver(self, inbound: Inbound) -> None:
        assert self.host is not None
        try:
            if not inbound.display_name:
                inbound = replace(inbound, display_name=await self._display_name(inbound.user))
            private = await self.host.handle(inbound)
            if private:
                await self.poster.ephemeral(inbound.key, inbound.user, private)
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


class _SocketModeHandler(AsyncSocketModeHandler):
    """Acks bots' posts (our persona posts echoed back) without running them through bolt."""

    bot_user_id = ""

    async def handle(self, client: Any, req: SocketModeRequest) -> None:  # type: ignore[override]
        event = req.payload.get("event") if req.type == "events_api" else None
        if isinstance(event, dict) and is_from_bot(event, self.bot_user_id):
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            return
        await super().handle(client, req)


def _code(exc: PlatformError) -> str:
    cause = exc.__cause__
    if isinstance(cause, SlackApiError):
        return str(cause.response.get("error", "error"))
    return "error"
