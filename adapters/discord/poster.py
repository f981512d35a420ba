"""Posting out: personas through one channel webhook, long text split, 429s waited out.

Every agent posts through the parent channel's "threadteam" webhook into the
run's thread with its own name and avatar. Where the bot may not manage
webhooks it posts as itself with the persona's name in bold, and says once per
channel which permission is missing. Posts to one thread are serialised, so
parts and turns appear in order. Every call goes through `DiscordApi` (api.py):
429s are waited out, never dropped; a Discord that stays down fails the post
with a `PlatformError` after the policy's retries.

Nothing is posted twice (see posted.py): the bot's own posts carry a nonce
Discord enforces; a webhook post whose answer was lost, and any post marked
`unsure` (an earlier process may have made it), is first looked for among the
thread's recent messages and adopted when found.

While an agent writes, its reply shows in a webhook message under its persona that
is edited as the text grows (_live.py); the reply's first part then lands in that
message, so it is posted once and whole.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
import discord

from threadteam.bot.errors import Refused
from threadteam.bot.memory import LocalMemory
from threadteam.bot.retry import Transient
from threadteam.bot.shapes import BOT_PERSONA, Memory, Outbound, ThreadKey
from threadteam.teams.persona import Persona

from ._live import LiveReplies
from ._locks import KeyedLocks
from ._webhooks import WEBHOOK_NAME, ChannelWebhooks
from .api import UNKNOWN_WEBHOOK, DiscordApi, DiscordError, classify
from .directory import find_channel
from .posted import LOOK_BACK, adoptable, nonce_of
from .text import emoji_of, host_text, split_message, webhook_username
from .views import approval_view, call_ref_digest

__all__ = ["WEBHOOK_NAME", "DiscordPoster"]

log = logging.getLogger(__name__)

_TYPING_EVERY = 8.0  # Discord shows "typing" for ~10 s per trigger
_TYPING_FOR = 300.0
# Agents' words ping nobody: not a user, not a role, not @everyone/@here, whatever the
# model wrote. The host's own notices may ping the people they name ("Your turn, @alice").
_NO_PINGS = discord.AllowedMentions.none()
_NOTICE_PINGS = discord.AllowedMentions(everyone=False, roles=False, users=True,
                                        replied_user=False)
_NEWEST_KEPT = 4096  # threads whose newest post is remembered


class DiscordPoster:
    """The host's `Poster` for Discord."""

    def __init__(self, client: discord.Client, *, memory: Memory | None = None,
                 api: DiscordApi | None = None) -> None:
        self.client = client
        self.api = api or DiscordApi()
        #: Webhook ids, split messages' parts, long call ids: outlive a restart.
        self.memory: Memory = memory if memory is not None else LocalMemory()
        self.ready = asyncio.Event()  # set once the client is logged in
        self._webhooks = ChannelWebhooks(client, self.api, self.memory)
        self._told: set[int] = set()  # channels told that webhooks are refused
        self._thread_locks = KeyedLocks()
        self._typing: dict[str, asyncio.Task[None]] = {}
        self._newest: dict[int, int] = {}  # thread -> the newest post seen to succeed there
        self._live = LiveReplies(client, self.api, self.memory,
                                 hook=lambda channel, _thread: self._webhooks.get(channel),
                                 send=self._send_live)

    # -- the Poster protocol ---------------------------------------------------------
    async def post(self, out: Outbound) -> str:
        """Post in the run's thread; long text goes out in several parts, the first id returned."""
        await self.ready.wait()
        channel, thread = await self._place(out.key)
        live = await self._live.finish(thread) if out.key.thread else None
        async with self._thread_locks[str(thread)]:
            self._stop_typing(thread)
            # The host's own notices come from the bot itself; agents through the webhook.
            hook = None if _is_bot(out) else await self._webhook(channel, thread)
            view, hashed = approval_view(out.approval) if out.approval else (None, [])
            for call_id in hashed:
                await self._kv_set(f"call:{call_ref_digest(call_id)}", call_id)
            chunks = split_message(self._content(out, hook is None)) or ["\u200b"]
            # An earlier attempt may have posted it (or some of its parts) already.
            ids = await self._already_posted(out, hook, thread, chunks) if out.unsure else []
            held = False
            if out.key.thread:  # the message showing the reply as it was written becomes it
                into, held = await self._live.claim(hook, channel, thread, live, out.persona,
                                                    adopted={int(i) for i in ids})
                if into and not ids and hook is not None and await self._become(
                        out, hook, channel, thread, into, chunks[0],
                        view if len(chunks) == 1 else None):
                    ids.append(self._posted(thread, str(into)))
            for i in range(len(ids), len(chunks)):
                last = i == len(chunks) - 1
                ids.append(await self._send(out, hook, channel, thread, chunks[i],
                                            view if last else None, part=i))
            if len(ids) > 1:
                await self._kv_set(f"parts:{ids[0]}", json.dumps(ids))
            if held:
                await self._live.posted(thread)
            return ids[0]

    async def edit(self, out: Outbound, message_id: str) -> None:
        """Replace a post's text (all its parts) and remove its buttons."""
        await self.ready.wait()
        channel, thread = await self._place(out.key)
        async with self._thread_locks[str(thread)]:
            stored = await self._kv_get(f"parts:{message_id}")
            ids = [int(i) for i in json.loads(stored)] if stored else [int(message_id)]
            hook = None if _is_bot(out) else await self._webhook(channel, thread)
            if hook is not None:
                try:
                    await self._edit_parts(out, ids, channel, thread, hook)
                    return
                except DiscordError as exc:
                    if exc.status not in (403, 404):
                        raise
                    # posted as the bot (before the webhook existed): edit it as the bot
            await self._edit_parts(out, ids, channel, thread, None)

    async def working(self, key: ThreadKey, persona: Persona) -> None:
        """Show the typing indicator in the thread until its next post (or a few minutes)."""
        if not key.thread:
            return
        thread = key.thread
        task = self._typing.get(thread)
        if task is not None and not task.done():
            return
        task = self._typing[thread] = asyncio.create_task(self._keep_typing(int(thread)))
        task.add_done_callback(lambda t: self._forget_typing(thread, t))

    def stream(self, key: ThreadKey, persona: Persona) -> Callable[[str], Awaitable[None]] | None:
        """Where an agent's text goes while it is written: a message under its persona."""
        if not key.thread or persona == BOT_PERSONA or not persona.display_name:
            return None
        return self._live.sink(key, persona)

    def mention(self, user: str) -> str:
        """`<@id>`: Discord renders it as the member's name."""
        return f"<@{user}>"

    async def aclose(self) -> None:
        """Stop the typing indicators and live edits, and close the webhook session."""
        await self._live.aclose()
        for task in self._typing.values():
            task.cancel()
        await asyncio.gather(*self._typing.values(), return_exceptions=True)
        self._typing.clear()
        await self._webhooks.aclose()

    async def _place(self, key: ThreadKey) -> tuple[int, int]:
        """(the webhook's channel, where the post appears): a run's thread or a plain channel.

        A key without a thread comes from a tool (`post_message`): the host has
        asked `DiscordDirectory.reach` for the channel's id, and whatever it
        names is still looked up in the run's own server only, so a post never
        lands in another server, a DM or a voice channel.
        """
        if key.thread:
            return int(key.channel), int(key.thread)
        guild = self.client.get_guild(int(key.workspace)) if key.workspace.isdigit() else None
        if guild is None:
            raise Refused("I can't see this run's server right now, so I won't post outside "
                          "the thread.")
        target = await find_channel(self.client, self.api, guild, key.channel)
        return target.id, target.id

    # -- sending ---------------------------------------------------------------------
    def _content(self, out: Outbound, as_bot: bool) -> str:
        if _is_bot(out):
            return host_text(out.text)
        if not as_bot:
            return out.text
        emoji = emoji_of(out.persona)
        name = f"{emoji} **{out.persona.display_name}**" if emoji else f"**{out.persona.display_name}**"
        return f"{name}: {out.text}"

    async def _send(self, out: Outbound, hook: discord.Webhook | None, channel: int,
                    thread: int, content: str, view: discord.ui.View | None, *,
                    part: int = 0) -> str:
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        if hook is not None:
            try:
                return await self._send_by_webhook(out, hook, channel, thread, content, extra)
            except DiscordError as exc:
                if exc.code != UNKNOWN_WEBHOOK:
                    raise
                # Someone deleted the webhook: make a new one and post again.
                log.info("webhook for channel %s is gone; creating another", channel)
                await self._webhooks.forget(channel)
                hook = await self._webhook(channel, thread)
                return await self._send(out, hook, channel, thread, content, view, part=part)
        # The same nonce on every try: Discord answers a repeat with the message it made.
        target = self.client.get_partial_messageable(thread)
        sent = await self.api.call(partial(target.send, content, allowed_mentions=_pings(out),
                                           nonce=nonce_of(out.idempotency_key, part), **extra),
                                   what="post in the thread")
        return self._posted(thread, str(sent.id))

    async def _send_by_webhook(self, out: Outbound, hook: discord.Webhook, channel: int,
                               thread: int, content: str, extra: dict[str, Any]) -> str:
        """Post one part through the webhook; after a try whose outcome is unknown (a
        timeout, a dropped connection, a 5xx), look for it in the thread before posting."""
        unknown = False
        after = self._newest.get(thread)

        async def attempt() -> str:
            nonlocal unknown
            if unknown:
                found = await self._find(out, hook, thread, [content], after)
                if found:
                    log.info("a post whose answer was lost is in thread %s; not posting it again",
                             thread)
                    return found[0]
            try:
                msg = await hook.send(content, username=webhook_username(out.persona),
                                      avatar_url=out.persona.avatar_url,
                                      thread=_in_thread(channel, thread), wait=True,
                                      allowed_mentions=_pings(out), **extra)
            except Exception as exc:
                unknown = unknown or isinstance(classify(exc), Transient)
                raise
            return str(msg.id)

        return self._posted(thread, await self.api.call(attempt, what="post in the thread"))

    async def _send_live(self, hook: discord.Webhook, channel: int, thread: int, content: str,
                         persona: Persona) -> str:
        """Post the message a reply is written into, in the thread's turn."""
        out = Outbound(ThreadKey("discord", "", str(channel), str(thread)), content,
                       f"live:{thread}", persona=persona, meta={"agent": persona.display_name})
        async with self._thread_locks[str(thread)]:
            self._stop_typing(thread)  # the message shows the work now
            return await self._send_by_webhook(out, hook, channel, thread, content, {})

    async def _become(self, out: Outbound, hook: discord.Webhook, channel: int, thread: int,
                      into: int, content: str, view: discord.ui.View | None) -> bool:
        """Turn the message a reply was written into into its first part; False if it is
        gone (someone deleted it): the part is posted instead."""
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        try:
            await self.api.call(lambda: hook.edit_message(
                into, content=content, thread=_in_thread(channel, thread),
                allowed_mentions=_pings(out), **extra), what="post in the thread")
        except DiscordError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _already_posted(self, out: Outbound, hook: discord.Webhook | None, thread: int,
                              chunks: list[str]) -> list[str]:
        """The ids of the parts of `out` an earlier process already posted (see posted.py)."""
        found = await self.api.call(lambda: self._find(out, hook, thread, chunks, None),
                                    what="check what is already in the thread")
        if found:
            log.info("post %s is already in thread %s (%d of %d parts); not posting them again",
                     out.idempotency_key, thread, len(found), len(chunks))
            self._posted(thread, found[-1])
        return found

    async def _find(self, out: Outbound, hook: discord.Webhook | None, thread: int,
                    chunks: list[str], after: int | None) -> list[str]:
        me = self.client.user
        try:
            page: list[Any] = await self.client.http.logs_from(thread, LOOK_BACK)
        except discord.Forbidden as exc:
            # Without Read Message History there is nothing to find: posting again risks a
            # twin, which beats losing the post.
            log.warning("can't read thread %s to look for a post (%s); posting it", thread, exc)
            return []
        return adoptable(page, chunks, webhook=str(hook.id) if hook else None,
                         username=webhook_username(out.persona), bot=str(me.id if me else ""),
                         after=after)

    def _posted(self, thread: int, message_id: str) -> str:
        """Remember the newest post seen to succeed in `thread` (the floor of a look-up)."""
        self._newest.pop(thread, None)
        self._newest[thread] = int(message_id)
        while len(self._newest) > _NEWEST_KEPT:
            del self._newest[next(iter(self._newest))]
        return message_id

    async def _edit_parts(self, out: Outbound, ids: list[int], channel: int, thread: int,
                          hook: discord.Webhook | None) -> None:
        chunks = split_message(self._content(out, hook is None)) or ["\u200b"]
        if len(chunks) > len(ids):  # a longer text keeps its tail in the last part it had
            chunks = [*chunks[:len(ids) - 1], "\n\n".join(chunks[len(ids) - 1:])[:2000]]
        for i, mid in enumerate(ids):
            fields: dict[str, Any] = {"view": None, "allowed_mentions": _pings(out)}
            if i < len(chunks):
                fields["content"] = chunks[i]
            edit: Callable[[], Awaitable[discord.Message]]
            if hook is not None:
                edit = partial(hook.edit_message, mid, thread=_in_thread(channel, thread), **fields)
            else:
                message = self.client.get_partial_messageable(thread).get_partial_message(mid)
                edit = partial(message.edit, **fields)
            await self.api.call(edit, what="edit a post")

    async def _keep_typing(self, thread: int) -> None:
        deadline = time.monotonic() + _TYPING_FOR
        try:
            while time.monotonic() < deadline:
                try:
                    await self.client.http.send_typing(thread)
                except (discord.HTTPException, aiohttp.ClientError) as exc:
                    log.debug("typing in %s failed: %s", thread, exc)  # cosmetic; never fatal
                await asyncio.sleep(_TYPING_EVERY)
        except asyncio.CancelledError:
            pass

    def _forget_typing(self, thread: str, task: asyncio.Task[None]) -> None:
        if self._typing.get(thread) is task:
            del self._typing[thread]

    def _stop_typing(self, thread: int) -> None:
        task = self._typing.pop(str(thread), None)
        if task is not None:
            task.cancel()

    # -- one webhook per parent channel ------------------------------------------------
    async def _webhook(self, channel: int, thread: int) -> discord.Webhook | None:
        """The channel's webhook; None where the bot may not manage them (and it says so once)."""
        hook = await self._webhooks.get(channel)
        if hook is None:
            await self._say_permission_missing(channel, thread)
        return hook

    async def _say_permission_missing(self, channel: int, thread: int) -> None:
        if channel in self._told or await self._kv_get(f"told:{channel}"):
            self._told.add(channel)
            return
        self._told.add(channel)
        await self._kv_set(f"told:{channel}", "1")
        text = ("Heads-up: I can't use webhooks in this channel, so each agent posts under my "
                "name with its own in bold. Give me the **Manage Webhooks** permission here to "
                "show every agent with its own name and avatar.")
        target = self.client.get_partial_messageable(thread)
        await self.api.call(lambda: target.send(text, allowed_mentions=_NO_PINGS,
                                                nonce=nonce_of(f"told:{channel}:{thread}")),
                            what="post in the thread")

    async def _kv_get(self, key: str) -> str | None:
        return await self.memory.get(key)

    async def _kv_set(self, key: str, value: str) -> None:
        await self.memory.set(key, value)

    async def call_id(self, ref: str) -> str:
        """The call id a button's `ref` names (a long one was stored under its digest)."""
        if ref.startswith("h."):
            return await self._kv_get(f"call:{ref[2:]}") or ref
        return ref


def _is_bot(out: Outbound) -> bool:
    return out.persona == BOT_PERSONA or not out.persona.display_name


def _pings(out: Outbound) -> discord.AllowedMentions:
    """Whom a post may notify: no one for an agent; the users it names for a host notice."""
    return _NOTICE_PINGS if _is_bot(out) and not out.meta.get("agent") else _NO_PINGS


def _in_thread(channel: int, thread: int) -> Any:
    """discord.py's `thread=` argument: the thread, or MISSING for the channel itself."""
    return discord.Object(thread) if thread != channel else discord.utils.MISSING
