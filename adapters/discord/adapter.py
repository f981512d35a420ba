"""The Discord adapter: gateway events in, through a short filter, to the host; posts out.

Summons (`/team` or a mention in a channel) open a thread where the run lives;
messages in a run's thread become replies; Approve / Deny presses become
button events. The bot's own posts, webhook echoes and other bots are dropped
before anything else happens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands

from threadteam.bot.errors import ConfigError, PlatformError, StoreError, transient
from threadteam.bot.retry import PLATFORM_RETRY, RetryPolicy
from threadteam.bot.shapes import Inbound, Memory, ThreadKey

from . import inbound
from ._catch_up import CatchUp
from ._locks import KeyedLocks
from .api import DiscordApi, DiscordError, point_gateway, point_rest
from .client import explain, make_client
from .commands import team_command
from .directory import DiscordDirectory
from .posted import nonce_of
from .poster import DiscordPoster
from .text import host_text, split_message, thread_name
from .views import ApprovalButton

if TYPE_CHECKING:
    from threadteam.bot.host import Host

__all__ = ["DiscordAdapter"]

log = logging.getLogger(__name__)

_ANSWER_WITHIN = 2.0  # Discord wants an interaction answered within 3 s
_QUIET = discord.AllowedMentions.none()
_STEADY = 60.0  # seconds connected after which a new failure starts the backoff afresh
_ARCHIVE_AFTER: Literal[10080] = 10080  # minutes: a run may wait days for a person, so keep its thread open a week
_NO_THREAD = ("I can't open a thread here: give me the **Create Public Threads** permission "
              "in this channel.")


class DiscordAdapter:
    """Connects one host to Discord: `start(host)`, serve, `aclose()`.

    Built before the host, which takes its `poster` and `directory`; `memory`
    keeps webhook ids and long call ids across restarts; `retry` is the platform
    retry policy (tests shorten its backoff).
    """

    def __init__(self, token: str, *, api_base: str | None = None, shards: int | None = None,
                 sync_commands: bool = True, memory: Memory | None = None,
                 retry: RetryPolicy = PLATFORM_RETRY) -> None:
        self.token = token.strip()
        self.api_base = api_base or None
        self.sync_commands = sync_commands
        self.api = DiscordApi(retry)
        self.client = make_client(self, shards)
        self._poster = DiscordPoster(self.client, memory=memory, api=self.api)
        self._directory = DiscordDirectory(self.client, self.api)
        self.host: Host | None = None
        self.tree = app_commands.CommandTree(self.client)
        self.tree.add_command(team_command(self))
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._thread_locks = KeyedLocks()
        self.catch_up = CatchUp(self.client, self.api, self._poster.memory, self._thread_locks,
                                self._to_run)

    @property
    def _host(self) -> Host:
        """The host events go to; Discord's events reach the adapter only after `start`."""
        if self.host is None:
            raise RuntimeError("DiscordAdapter.start(host) has not been called")
        return self.host

    @property
    def poster(self) -> DiscordPoster:
        """What the host posts through."""
        return self._poster

    @property
    def directory(self) -> DiscordDirectory:
        """What the host asks about people (roles, where they may post)."""
        return self._directory

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self, host: Host, *, within: float = 60.0) -> None:
        """Log in, hand events to `host`, connect the gateway; return once it is READY.

        A token, intent or sharding problem is raised as a `ConfigError` sentence
        saying what to fix; Discord unreachable as a `PlatformError`.
        """
        await self._login()
        self.host = host
        await self._connect(within)

    async def _login(self) -> None:
        """Check the token and register the buttons and `/team`."""
        if not self.token:
            raise ConfigError("DISCORD_BOT_TOKEN is not set: create a bot at "
                              "https://discord.com/developers/applications and export its token.")
        point_rest(self.api_base)
        try:
            await self.client.login(self.token)
        except Exception as exc:
            await self.client.close()
            raise explain(exc, self.api_base) from exc
        self._poster.ready.set()

    async def _connect(self, within: float) -> None:
        """Open the gateway and return once it is READY (events flow to the host from then on)."""
        self._task = asyncio.create_task(self._serve())
        ready = asyncio.create_task(self.connected.wait())
        done, _ = await asyncio.wait({self._task, ready}, timeout=within,
                                     return_when=asyncio.FIRST_COMPLETED)
        if ready in done:
            return
        ready.cancel()
        failure: BaseException = TimeoutError(f"no READY from the gateway within {within:.0f}s")
        if self._task.done() and not self._task.cancelled() and self._task.exception():
            failure = self._task.exception()  # type: ignore[assignment]
        await self.aclose()
        raise explain(failure, self.api_base) from failure

    async def _serve(self) -> None:
        """discord.py's connection loop, kept going.

        discord.py reconnects by itself after network trouble. A payload its parser
        cannot read is skipped before it gets here (`client`); anything else that ends
        the loop unexpectedly is logged and the gateway opened afresh (the catch-up then
        reads what was missed meanwhile). Refusals (token, intents, sharding) still end
        it, as does any failure of the sharded client, which closes itself first.
        """
        failures = 0
        while True:
            opened = time.monotonic()
            try:
                await self.client.connect(reconnect=True)
                return
            except discord.DiscordException:
                raise
            except Exception as exc:
                if self.client.is_closed():
                    raise
                failures = 1 if time.monotonic() - opened > _STEADY else failures + 1
                delay = self.api.policy.backoff(failures)
                log.warning("the Discord gateway stopped on an event it could not read (%r); "
                            "connecting again in %.1fs", exc, delay)
                if self.client.ws is not None:
                    await self.client.ws.close(code=4000)
                await asyncio.sleep(delay)

    async def setup(self) -> None:
        """Runs inside login (discord.py's setup_hook): gateway URL, buttons, `/team`."""
        if self.api_base:
            await point_gateway(self.client.http)
        # Buttons posted by any earlier process are understood from their custom_id alone.
        self.client.add_dynamic_items(ApprovalButton)
        if self.sync_commands:
            try:
                await self.tree.sync()
            except discord.HTTPException as exc:
                log.error("could not register /team (%s): invite the bot with the "
                          "applications.commands scope (threadteam run discord --print-invite); "
                          "mentions still work", exc)

    async def wait_closed(self) -> None:
        """Until the gateway connection ends; a fatal close is raised as a sentence."""
        if self._task is None:
            return
        try:
            await self._task
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise explain(exc, self.api_base) from exc

    async def aclose(self) -> None:
        """Disconnect; safe to call twice."""
        await self.catch_up.aclose()
        await self._poster.aclose()
        await self.client.close()
        if self._task is not None:
            try:
                await self._task
            except Exception as exc:  # already reported by whoever waited on it
                log.debug("gateway task ended with %r", exc)

    def on_gateway_ready(self) -> None:
        """READY or RESUMED (at start, or after a disconnect): read what people wrote in
        open runs' threads meanwhile, which Discord never re-delivers."""
        if self.host is not None:
            self.catch_up.soon(self.host.open_threads)

    def on_unreadable(self, event: str, exc: Exception) -> None:
        """discord.py could not read a gateway payload (`client` skips it): said in one line,
        and the open runs' threads are read again in case it carried a person's message."""
        log.warning("discord.py could not read a %s from the gateway (%s: %s); skipped it, "
                    "and the open runs' threads are read again", event, type(exc).__name__, exc)
        log.debug("the unreadable %s in full", event, exc_info=exc)
        self.on_gateway_ready()

    def log_error(self, event: str) -> None:
        log.exception("error while handling Discord event %s", event)

    def team_choices(self) -> list[tuple[str, str]]:
        return self.host.team_choices() if self.host is not None else []

    # -- messages ------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        """A reply in a run's thread, or a mention that summons a team."""
        if (why := inbound.unreadable(message)) is not None:
            log.warning("skipped message %s from Discord: %s", getattr(message, "id", "?"), why)
            return
        me = self.client.user
        if self.host is None or me is None or inbound.ignored(message, me):
            return
        text = inbound.addressed_text(message, me)
        channel: Any = message.channel
        guild_id = message.guild.id if message.guild else None
        if isinstance(channel, discord.PartialMessageable):
            # Not in the cache (a thread archived before this process started):
            # ask which channel it is, so its parent is known.
            cid = channel.id
            try:
                channel = await self.api.call(lambda: self.client.fetch_channel(cid),
                                              what="look up this thread")
            except PlatformError as exc:
                log.info("message %s in an unknown channel: %s", message.id, exc)
                return
        if not isinstance(channel, discord.Thread):
            if text is not None:
                await self._summon_by_mention(message, text)
            return
        key = inbound.key_of(channel, guild_id)
        await self.catch_up.before_live(key.thread)
        # One thread's messages reach the host in the order Discord sent them.
        async with self._thread_locks[key.thread]:
            if self.catch_up.handed(key.thread, message.id):
                return  # read by the catch-up before it came live
            if key.thread in self.catch_up.behind:
                return  # read after the one the host could not take, in order, by the catch-up
            summon = ours = False
            try:
                if await self._host.thread_status(key) is not None:
                    ours = True  # a run's thread
                    event = inbound.from_message(message, key,
                                                 message.content if text is None else text)
                elif text is not None:
                    if (problem := self._host.check_summon(text)) is not None:
                        await self._reply(message, problem)
                        return
                    # Whatever the thread held before the summon is not the run's.
                    await self.catch_up.saw(key.thread, message.id)
                    event = inbound.from_message(message, key, text, kind="summon")
                    summon = True
                else:
                    return  # a thread without a run is none of our business
                answer = (await self._host.handle(event)).private
            except StoreError as exc:
                if not transient(exc):
                    raise
                answer = self._not_taken(message, key, exc, summon,
                                         quiet=not ours and text is None)
            else:
                if event.kind == "reply":
                    await self.catch_up.saw(key.thread, message.id)
        if answer:
            await self._reply(message, answer)

    def _not_taken(self, message: discord.Message, key: ThreadKey, exc: StoreError,
                   summon: bool, quiet: bool) -> str | None:
        """The host could not take `message` (its store failed): a summon is refused with
        a word; anything else is read again with what follows it once the store works
        (the thread hears so, unless `quiet`: it may have no run, and nobody called the bot)."""
        log.warning("discord: the host could not take message %s in thread %s (%s)%s",
                    message.id, key.thread, exc,
                    "" if summon else "; the thread is read again once the store works")
        if summon:
            return ("I could not start that team just now: the bot's storage is failing. "
                    "Please mention me again in a minute.")
        self.catch_up.fell_behind(key)  # later messages here wait for it: one word is enough
        if quiet:
            return None
        return ("I could not take that just now: the bot's storage is failing. Nothing is "
                "lost: your message, and what follows it here, reach the team once it works "
                "again.")

    async def _to_run(self, message: discord.Message, key: ThreadKey) -> None:
        """A message caught up after a (re)connect: handed to the host as a live reply is."""
        me = self.client.user
        text = inbound.addressed_text(message, me) if me is not None else None
        event = inbound.from_message(message, key, message.content if text is None else text)
        answer = (await self._host.handle(event)).private
        await self.catch_up.saw(key.thread, message.id)
        if answer:
            await self._reply(message, answer)

    async def _summon_by_mention(self, message: discord.Message, text: str) -> None:
        if (problem := self._host.check_summon(text)) is not None:
            await self._reply(message, problem)
            return
        task = text.split(None, 1)[1] if " " in text else text
        try:
            thread = await self.api.call(lambda: message.create_thread(
                name=thread_name(task), auto_archive_duration=_ARCHIVE_AFTER),
                what="open a thread")
        except PlatformError as exc:
            await self._reply(message, _NO_THREAD if _forbidden(exc) else str(exc))
            return
        key = inbound.key_of(thread, message.guild.id if message.guild else None)
        answer = (await self._host.handle(
            inbound.from_message(message, key, text, kind="summon"))).private
        if answer:
            await self._reply(message, answer)

    async def _reply(self, message: discord.Message, text: str) -> None:
        """Answer a person's message, naming them, in as many parts as it takes."""
        naming = discord.AllowedMentions(everyone=False, roles=False, users=[message.author],
                                         replied_user=True)
        for i, part in enumerate(split_message(host_text(text))):
            nonce = nonce_of(f"reply:{message.id}", i)  # a retry returns the same message
            if i == 0:
                send = partial(message.reply, part, mention_author=True, allowed_mentions=naming,
                               nonce=nonce)
            else:
                send = partial(message.channel.send, part, allowed_mentions=_QUIET, nonce=nonce)
            await self.api.call(send, what="answer you")

    async def _private(self, event: Inbound) -> str | None:
        return (await self._host.handle(event)).private

    # -- /team ---------------------------------------------------------------------------
    async def on_team_command(self, interaction: discord.Interaction, team: str,
                              task: str) -> None:
        """Check the summon, answer within 3 s, open the thread, hand the run to the host."""
        # Options that are not text (a malformed interaction) read as missing: usage follows.
        team, task = (v if isinstance(v, str) else "" for v in (team, task))
        text = f"{team.strip()} {task.strip()}".strip()
        if (problem := self._host.check_summon(text)) is not None:
            await interaction.response.send_message(host_text(problem)[:2000], ephemeral=True)
            return
        channel = interaction.channel
        intro = f"{interaction.user.mention} summoned **{team.strip()}**: {task.strip()}"
        if isinstance(channel, discord.Thread):
            key = inbound.key_of(channel, interaction.guild_id)
            if await self._host.thread_status(key) is not None:
                await interaction.response.send_message(
                    "This thread already has a run. Use /team in a channel to start another.",
                    ephemeral=True)
                return
            await interaction.response.send_message(intro[:2000], allowed_mentions=_QUIET)
            await self.catch_up.saw(key.thread, interaction.id)  # what came before is not the run's
        else:
            answered = await interaction.response.send_message(intro[:2000],
                                                               allowed_mentions=_QUIET)
            message = answered.resource
            if not isinstance(message, discord.Message):
                message = await interaction.original_response()
            try:
                thread = await self.api.call(lambda: message.create_thread(
                    name=thread_name(task), auto_archive_duration=_ARCHIVE_AFTER),
                    what="open a thread")
            except PlatformError as exc:
                await interaction.followup.send(_NO_THREAD if _forbidden(exc) else str(exc),
                                                ephemeral=True)
                return
            key = inbound.key_of(thread, interaction.guild_id)
        try:
            answer = (await self._host.handle(inbound.summon(interaction, key, text))).private
        except StoreError as exc:
            if not transient(exc):
                raise
            log.warning("discord: could not start %r in thread %s: the store failed (%s)",
                        text, key.thread, exc)
            answer = ("I could not start that team just now: the bot's storage is failing. "
                      "Please try `/team` again in a minute.")
        if answer:
            await interaction.followup.send(host_text(answer)[:2000], ephemeral=True)

    # -- Approve / Deny ------------------------------------------------------------------
    async def on_click(self, interaction: discord.Interaction, action: str, ref: str) -> None:
        """A button press: the host decides; a refusal is shown only to the person who pressed."""
        if self.host is None:
            return
        call_id = await self._poster.call_id(ref)
        key = inbound.key_of(interaction.channel, interaction.guild_id)  # type: ignore[arg-type]
        handling = asyncio.ensure_future(
            self._private(inbound.from_button(interaction, key, action, call_id)))
        try:
            answer = await asyncio.wait_for(asyncio.shield(handling), _ANSWER_WITHIN)
        except TimeoutError:
            # Acknowledge in time; the refusal, if any, follows.
            await interaction.response.defer()
            if answer := await handling:
                await interaction.followup.send(host_text(answer)[:2000], ephemeral=True)
            return
        except Exception:
            log.exception("button %s on call %s failed", action, call_id)
            answer = "Sorry, that didn't work; please try again or reply `status`."
        if answer:
            await interaction.response.send_message(host_text(answer)[:2000], ephemeral=True)
        else:
            # The host edits the request itself ("Approved by ..."), so just acknowledge.
            await interaction.response.defer()


def _forbidden(exc: PlatformError) -> bool:
    return isinstance(exc, DiscordError) and exc.status == 403
