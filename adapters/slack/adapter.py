"""The Slack adapter: a slack_bolt AsyncApp in Socket Mode or behind an HTTP endpoint.

    receiver thread:  Slack ──► bolt (signature, auth, ignore self) ──► ignore bots
                        ──► already stored? 200 ──► listener: translate to Inbound
                        ──► kept in the inbox (one store write) ──► listener: 200, or 503
    main loop:        ──► host.handle(inbound) ──► dropped from the inbox
                        ──► ephemeral reply or 👀, if any

An event is acknowledged only once it is stored (`intake`, `threadteam.bot.inbox`):
kept in the platform's inbox by the receiver thread itself, with a store connection
of its own, so the 200 never waits behind the runs on the main loop. If the store
fails, or is too slow for Slack's 3 seconds, the answer is 503 and Slack sends the
event again; what is kept and the host has not taken (the host failed, the process
died) is handed to it again, in order, from the inbox. Without an inbox (a host
without a store of its own to share), the listener waits for `host.handle` itself. Clicks and /team, which Slack never re-sends, are acknowledged at once;
if the host cannot take one, the person is told to try again. The host and the
poster live on the main loop (see `receive` for why two loops); bolt runs with
`process_before_response`, so the answer goes back the moment a listener returns.
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
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from threadteam.bot.errors import ConfigError, PlatformError
from threadteam.bot.inbox import Inbox
from threadteam.bot.shapes import Handled, Inbound, Memory

from .api import SlackApi, SlackError
from .directory import SlackDirectory
from .inbound import (
    ALWAYS_ACTION,
    APPROVE_ACTION,
    DENY_ACTION,
    button_inbound,
    command_key,
    is_from_bot,
    message_inbound,
    unescape,
)
from .intake import Intake, Report
from .poster import SlackPoster
from .receive import EVENTS_PATH, Receiver
from .text import no_broadcasts, to_mrkdwn

if TYPE_CHECKING:
    from threadteam.bot.host import Host

__all__ = ["EVENTS_PATH", "SlackAdapter", "SlackConfig"]

log = logging.getLogger("threadteam.slack")

COMMAND = "/team"
NAME_WAIT = 1.0  # seconds an event waits for its author's display name before going without
_SLACK_RETRIES = 3  # Slack re-sends an event at most 3 times
_TOKEN = re.compile(r"x[a-z]{3}-[A-Za-z0-9-]+")  # xoxb-…, xapp-…: what Slack issues
_NOT_TAKEN = ("Sorry, I could not save that just now, so nothing happened. "
              "Please try again in a moment.")
# A mention Slack stopped re-sending while the store failed (after some five minutes). A
# plain message in a thread gets no word: the bot cannot tell whether the thread is a run's.
_LOST = ("Sorry, I could not save your message, so no team got it: the bot's storage has "
         "been failing for some minutes. Please send it again later.")


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
        if not _TOKEN.fullmatch(bot):
            raise ConfigError("SLACK_BOT_TOKEN is malformed: after xoxb- a token has only "
                              "letters, digits and dashes; copy it again from OAuth & Permissions")
        if app and not app.startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN must be an app-level token starting with xapp- "
                              "(Basic Information > App-Level Tokens, scope connections:write)")
        if app and not _TOKEN.fullmatch(app):
            raise ConfigError("SLACK_APP_TOKEN is malformed: after xapp- a token has only "
                              "letters, digits and dashes; copy it again from Basic Information "
                              "> App-Level Tokens")
        if not app and not secret:
            raise ConfigError("SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify "
                              "requests (or set SLACK_APP_TOKEN to use Socket Mode)")
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"SLACK_API_URL must be an http(s) URL, got {url!r}")
        return cls(bot_token=bot, signing_secret=secret, app_token=app, api_url=url)


class SlackAdapter:
    """Connects one Slack workspace to a Host: events in, posts out through `poster`.

    Lifecycle: construct (cheap, no I/O), `await start(host)` (checks the bot token,
    then receives), `await aclose()` (after the host, which posts through `poster`).
    """

    def __init__(self, config: SlackConfig, *, memory: Memory | None = None,
                 inbox: Inbox | None = None) -> None:
        self.config = config
        self._inbox = inbox
        self._in_hand: set[str] = set()  # kept events on their way to the host (main loop)
        self._keeping: set[asyncio.Task[None]] = set()  # inbox writes (receiver loop)
        self._sweeper: asyncio.Task[None] | None = None
        self._base_url = (config.api_url.rstrip("/") + "/" if config.api_url
                          else AsyncWebClient.BASE_URL)
        self.client = AsyncWebClient(token=config.bot_token, base_url=self._base_url)
        self.api = SlackApi(self.client)
        self._poster = SlackPoster(self.api, memory=memory)
        self._directory = SlackDirectory(self.api)
        self.bot_user_id = ""
        self.bot_name = "threadteam"
        self.host: Host | None = None
        self._receiver: Receiver | None = None
        self._main: asyncio.AbstractEventLoop | None = None
        self._intake = Intake()
        self._failing = False  # the host's last handle failed: said once, until it works
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
            who = await self.api.once("auth.test", timeout=30.0)
        except SlackError as exc:
            await self.aclose()
            if exc.answered:
                raise ConfigError(f"SLACK_BOT_TOKEN was refused by Slack ({exc.code})") from None
            where = self.config.api_url or "slack.com"
            raise ConfigError(f"Slack could not be reached at {where} ({exc.code})") from None
        self.bot_user_id = who.get("user_id", "")
        self.bot_name = who.get("user") or self.bot_name

    @property
    def poster(self) -> SlackPoster:
        """The host's `Poster` for this workspace."""
        return self._poster

    @property
    def directory(self) -> SlackDirectory:
        """What the host asks about people: roles (user groups) and channel reach."""
        return self._directory

    async def start(self, host: Host, *, port: int | None = None, bind: str = "0.0.0.0") -> None:
        """Check the bot token (unless `connect` did), then receive: Socket Mode if an app
        token is set, else HTTP on `port` (3000 by default) at `bind`."""
        if not self.bot_user_id:
            await self.connect()
        self.host = host
        self._main = asyncio.get_running_loop()
        self._receiver = Receiver(
            bot_token=self.config.bot_token, base_url=self._base_url,
            signing_secret=self.config.signing_secret, app_token=self.config.app_token,
            bot_user_id=self.bot_user_id, build_bolt=self._build_bolt,
            on_open=self._inbox.start if self._inbox else None,
            on_close=self._inbox.aclose if self._inbox else None)
        try:
            await self._receiver.start(port=port, bind=bind)
        except BaseException:
            await self.aclose()
            raise
        if self._inbox is not None:  # what a process that died had kept, and what fails now
            self._sweeper = asyncio.create_task(self._hand_over_left(), name="slack-inbox")

    async def stop(self) -> None:
        """Stop receiving and let the work already acked reach the host (briefly)."""
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            await receiver.stop()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await self.settle(timeout=5.0)

    async def aclose(self) -> None:
        """Stop receiving and close the Web API session (after the host: it posts through it)."""
        await self.stop()
        for t in list(self._tasks):
            t.cancel()
        self._directory.cancel()
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
            logger=_bolt_log(),
        )
        bolt.use(self._ignore_bots)
        bolt.use(self._drop_redeliveries)
        bolt.event("app_mention")(self._on_message)
        bolt.event("message")(self._on_message)
        bolt.command(COMMAND)(self._on_command)
        bolt.action(re.compile(f"^({APPROVE_ACTION}|{ALWAYS_ACTION}|{DENY_ACTION})$"))(
            self._on_button)
        bolt.error(self._on_error)
        return bolt

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> None:
        """A listener failed on what Slack sent: one line in the log, the traceback at debug."""
        kind = body.get("type") if isinstance(body, dict) else None
        log.warning("slack: could not handle a %s request (%s: %s)", kind or "Slack",
                    type(error).__name__, error)
        log.debug("slack: the failure in full", exc_info=error)

    async def _ignore_bots(self, body: dict[str, Any], next: Any) -> BoltResponse | None:
        """Other bots' posts, and our own persona posts echoed back, go no further."""
        event = body.get("event")
        if isinstance(event, dict) and is_from_bot(event, self.bot_user_id):
            return BoltResponse(status=200, body="")
        return await next()

    async def _drop_redeliveries(self, body: dict[str, Any], next: Any) -> BoltResponse | None:
        """Slack re-sends an event it thinks we missed (X-Slack-Retry-Num); one the host
        already has is answered at once."""
        event_id = body.get("event_id")
        if event_id and self._intake.safe(str(event_id)):
            return BoltResponse(status=200, body="")
        return await next()

    async def _on_message(self, ack: Any, body: dict[str, Any],
                          request: AsyncBoltRequest) -> BoltResponse | None:
        inbound = message_inbound(body, self.bot_user_id)
        if inbound is not None:
            event_id = str(body.get("event_id") or inbound.event_id)
            again = _retry_num(request) > 0
            hand = self._keep if self._inbox is not None else self._hand
            if not await self._intake.take(event_id, partial(hand, inbound, again)):
                # Not stored (yet): Slack sends it again, and the host takes it once.
                if _retry_num(request) >= _SLACK_RETRIES:
                    log.error("slack: Slack has given up re-sending event %s (%s by %s in %s); "
                              "it is lost", event_id, inbound.kind, inbound.user, inbound.key)
                    if inbound.kind == "summon":  # said to the bot: told it never arrived
                        self._spawn(self._tell(inbound, _LOST))
                return BoltResponse(status=503, body="")
        await ack()
        return None

    async def _on_button(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()  # Slack never re-sends a click: a failure is told to the person instead
        inbound = button_inbound(body)
        if inbound is not None:
            self._spawn(self._deliver(inbound))

    async def _on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        assert self.host is not None
        text = unescape((command.get("text") or "").strip())
        problem = self.host.check_summon(text)
        if problem is not None:  # answered in the ack itself: only the caller sees it
            await ack(text=no_broadcasts(to_mrkdwn(problem, italics=False)),
                      response_type="ephemeral")
            return
        # Acked first: the root post must be made before the run can be stored, and the
        # two may not fit in Slack's 3 seconds (a failure is told to the person).
        await ack()
        self._spawn(self._summon_from_command(command, text, respond))

    # -- on the main loop --------------------------------------------------------------------
    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Hand `work` from the receiver thread to the main loop, where the host lives."""
        assert self._main is not None
        self._handed += 1
        try:
            self._main.call_soon_threadsafe(self._take, work)
        except RuntimeError:  # the main loop has closed
            self._handed -= 1
            work.close()
            raise

    def _take(self, work: Coroutine[Any, Any, None]) -> None:
        self._taken += 1
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _keep(self, inbound: Inbound, again: bool, report: Report) -> None:
        """On the receiver loop: keep `inbound` in the inbox, report whether it is, and
        hand it to the host."""
        task = asyncio.ensure_future(self._keep_now(inbound, again, report))
        self._keeping.add(task)
        task.add_done_callback(self._keeping.discard)

    async def _keep_now(self, inbound: Inbound, again: bool, report: Report) -> None:
        assert self._inbox is not None
        try:
            await self._inbox.keep(inbound)
        except Exception as exc:
            self._said(False, inbound, exc)
            report(False)
            return
        report(True)
        self._spawn(self._take_kept(inbound, again))

    async def _take_kept(self, inbound: Inbound, again: bool) -> None:
        """On the main loop: the host takes a kept event; the inbox forgets it once it has."""
        assert self._inbox is not None
        if inbound.event_id in self._in_hand:
            return
        self._in_hand.add(inbound.event_id)
        try:
            named = await self._named(inbound)
            with self._poster.doubting() if again else contextlib.nullcontext():
                handled = await self._handle(named)
            if handled is None:
                return  # still kept: handed over again shortly
            try:
                await self._inbox.done(inbound.event_id)
            except Exception:  # handed over again later; the host takes an event once
                log.debug("slack: could not clear %s from the inbox", inbound.event_id,
                          exc_info=True)
            await self._follow_up(named, handled)
        finally:
            self._in_hand.discard(inbound.event_id)

    async def _hand_over_left(self) -> None:
        """Hand the host, oldest first, what is kept and was not taken: by a process that
        died, or because the host failed (a store outage)."""
        assert self._inbox is not None
        every = self._inbox.retry_after
        while True:
            try:
                for kept in await self._inbox.left(older_than=every):
                    if kept.inbound.event_id in self._in_hand:
                        continue
                    if time.time() - kept.at > self._inbox.give_up_after:
                        log.error("slack: the host could not take %s %s (by %s in %s) for %.0f s; "
                                  "it is given up", kept.inbound.kind, kept.inbound.event_id,
                                  kept.inbound.user, kept.inbound.key, time.time() - kept.at)
                        await self._inbox.done(kept.inbound.event_id)
                        continue
                    await self._take_kept(kept.inbound, again=True)
            except Exception as exc:
                log.debug("slack: the inbox could not be read (%s)", exc)
            await asyncio.sleep(every / 2)

    def _hand(self, inbound: Inbound, again: bool, report: Report) -> None:
        """From the receiver thread: the host is to store `inbound` (`again`: Slack re-sent
        it); `report` says if it did."""
        self._spawn(self._store(inbound, again, report))

    async def _store(self, inbound: Inbound, again: bool, report: Report) -> None:
        """Hand `inbound` to the host and report whether it took it; then the courtesies.

        For an event Slack sent again, what the host posts is looked for first: the
        earlier try may have posted it and then failed to store, or died.
        """
        try:
            inbound = await self._named(inbound)
            with self._poster.doubting() if again else contextlib.nullcontext():
                handled = await self._handle(inbound)
        except BaseException:
            report(False)
            raise
        report(handled is not None)
        if handled is not None:
            await self._follow_up(inbound, handled)

    async def _summon_from_command(self, command: dict[str, Any], text: str, respond: Any) -> None:
        user, channel = command["user_id"], command["channel_id"]
        team, task = command["text"].strip().split(None, 1)  # Slack's own markup, as typed
        try:
            ts = await self.poster.root(channel, f"<@{user}> summoned *{team.lower()}*: {task}",
                                        key=f"summon:{command.get('trigger_id') or ''}")
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
        """A click or a /team summon, which Slack never re-sends: if the host cannot take
        it, the person is told to try again."""
        handled = await self._handle(await self._named(inbound))
        if handled is None:
            await self._tell(inbound, _NOT_TAKEN)
            return
        await self._follow_up(inbound, handled)

    async def _tell(self, inbound: Inbound, text: str) -> None:
        """`text` for the person who did `inbound` only (a failure to say it is logged)."""
        try:
            await self.poster.ephemeral(inbound.key, inbound.user, text)
        except Exception as exc:
            log.warning("slack: could not tell %s that their %s was not taken (%s)",
                        inbound.user, inbound.kind, exc)

    async def _named(self, inbound: Inbound) -> Inbound:
        """`inbound` with the person's display name, if Slack says it soon enough: the
        event is not held up for a name (an unknown one is looked up for the next time)."""
        if inbound.display_name:
            return inbound
        name = await self._directory.display_name(inbound.user, wait=NAME_WAIT)
        return replace(inbound, display_name=name) if name else inbound

    async def _handle(self, inbound: Inbound) -> Handled | None:
        """`host.handle`; None if it failed (said once in the log, until it works again)."""
        assert self.host is not None
        try:
            handled = await self.host.handle(inbound)
        except Exception as exc:
            self._said(False, inbound, exc)
            return None
        self._said(True, inbound)
        return handled

    def _said(self, ok: bool, inbound: Inbound, exc: Exception | None = None) -> None:
        """A failure to store or take an event, in the log once until it works again."""
        if not ok:
            if not self._failing:
                later = ("it is kept, and handed over again until the host can"
                         if inbound.event_id in self._in_hand
                         else "Slack is asked to send events again until it can")
                log.warning("slack: the host could not take a %s (%s: %s); %s", inbound.kind,
                            type(exc).__name__, exc, later)
            log.debug("slack: %s %s not taken", inbound.kind, inbound.event_id, exc_info=exc)
            self._failing = True
        elif self._failing:
            log.warning("slack: the host takes events again")
            self._failing = False

    async def _follow_up(self, inbound: Inbound, handled: Handled) -> None:
        """What the person sees once the host has their act: a private answer, or 👀."""
        try:
            if handled.private:
                await self.poster.ephemeral(inbound.key, inbound.user, handled.private)
            elif inbound.kind == "reply" and handled.taken:
                # Taken into the run: say so on the message itself, for the person who
                # answered from a phone while an agent was at work.
                self.poster.acknowledge(inbound.key, inbound.event_id.rsplit(":", 1)[-1])
        except Exception as exc:
            log.warning("slack: could not answer %s %s (%s)", inbound.kind, inbound.event_id, exc)


class _SaidOurselves(logging.Filter):
    """Drops what bolt and slack_sdk log that the adapter says better itself, or that is
    no news: bolt's "As you gave `client` as well, `token` will be unused" on every start
    (it reads SLACK_BOT_TOKEN from the environment although it is handed a client), and
    Socket Mode's "Failed to retrieve WSS URL", three lines quoting Slack's whole answer,
    for a refused app token that start-up reports in one line naming SLACK_APP_TOKEN."""

    _DROP = ("As you gave `client` as well", "Failed to retrieve WSS URL")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        if message.startswith(self._DROP):
            log.debug("slack: %s", message.splitlines()[0])
            return False
        return True


def _bolt_log() -> logging.Logger:
    """The logger bolt and its Socket Mode client write to: warnings and worse (their info
    is session bookkeeping), as for the `slack_bolt` loggers, unless the log asks for debug;
    less what is said better elsewhere."""
    logger = logging.getLogger("threadteam.slack.bolt")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.DEBUG if logging.getLogger().level == logging.DEBUG
                        else logging.WARNING)
    if not any(isinstance(f, _SaidOurselves) for f in logger.filters):
        logger.addFilter(_SaidOurselves())
    return logger


def _retry_num(request: AsyncBoltRequest) -> int:
    """Which re-delivery of an event this is (0: the first try)."""
    values = request.headers.get("x-slack-retry-num") or ["0"]
    value = str(values[0] if isinstance(values, list | tuple) else values)
    return int(value) if value.isdigit() else 0


def _code(exc: PlatformError) -> str:
    return exc.code if isinstance(exc, SlackError) else "error"
