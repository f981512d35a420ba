"""A small wire-level fake of Discord that the real discord.py client talks to.

One aiohttp server plays both halves of Discord:

- REST under `/api/v10` (users, gateway, application commands, channels,
  messages, threads, webhooks and their messages' edits and deletes (`deleted`),
  typing, interaction callbacks), recording every call in order in
  `FakeDiscord.calls`, with 429s injectable per route;
- the gateway websocket at `/gateway` (HELLO, IDENTIFY -> READY, GUILD_CREATE,
  heartbeats/ACK), through which tests dispatch MESSAGE_CREATE and
  INTERACTION_CREATE; `drop_gateway()` / `reopen_gateway()` take it away and
  give it back, and `say(..., deliver=False)` is a message written meanwhile.

As Discord documents: Create Message with a `nonce` and `enforce_nonce` returns
the author's earlier message with that nonce (within `nonce_window` seconds)
instead of making another; the nonce is echoed in the answer and MESSAGE_CREATE
but never stored, so Get Channel Messages (newest first, `before`/`after`/
`limit`) does not show it. A failure injected with `stored=True` lets Discord
take the call, then drops the connection before the answer.

Webhook posts and the bot's own posts are echoed back as MESSAGE_CREATE, as
Discord does, so a bot that forgets to ignore them loops; each keeps, under
`pinged`, whom Discord would have notified (by the text and `allowed_mentions`). The fixture is
`fake_discord`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.waiting import wait_until

__all__ = ["Call", "FakeDiscord", "fake_discord", "wait_until"]

API = "/api/v10"
GUILD_ID = 1_000_000_000_000_000_001
CHANNEL_ID = 1_000_000_000_000_000_010  # #general
OTHER_CHANNEL_ID = 1_000_000_000_000_000_011  # #random
PRIVATE_CHANNEL_ID = 1_000_000_000_000_000_012  # #mods-only: only Moderators see it
READONLY_CHANNEL_ID = 1_000_000_000_000_000_013  # #rules: everyone reads, only Moderators write
MODERATORS_ROLE_ID = 1_000_000_000_000_000_020
# Another server the bot is also in, with a #random of its own, and a DM with Alice.
OTHER_GUILD_ID = 1_000_000_000_000_000_002
FOREIGN_CHANNEL_ID = 1_000_000_000_000_000_030
DM_CHANNEL_ID = 1_000_000_000_000_000_040
VIEW_CHANNEL, SEND_MESSAGES = 1 << 10, 1 << 11
BOT_ID = 1_000_000_000_000_000_900
# Ids the tests use to act as people.
ALICE, BOB, CAROL, MALLORY = (1_000_000_000_000_000_100 + i for i in range(4))
OTHER_BOT = 1_000_000_000_000_000_199


@dataclass
class Call:
    """One REST request the fake received, and the status it answered with."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    body: Any
    status: int = 200
    at: float = field(default_factory=time.monotonic)

def _iso(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ts or time.time()))


class FakeDiscord:
    """The fake server: state, recorded calls, injected failures, gateway sockets."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.identifies: list[dict] = []
        self._seq = itertools.count(1)
        self._ids = itertools.count(1_200_000_000_000_000_000)
        self._failures: list[dict] = []
        self.nonce_window = 300.0  # seconds Discord remembers an enforced nonce ("a few minutes")
        self._nonces: dict[tuple[str, str], tuple[int, float]] = {}  # (author, nonce) -> (id, when)
        self._gateway_open = asyncio.Event()
        self._gateway_open.set()
        self.manage_webhooks = True  # False: webhook routes answer 403 / 50013
        self.shards = 1
        self.message_content_allowed = True  # False: the portal toggle is off (close 4014)
        self.token = "fake-token"
        self.users: dict[int, dict] = {}
        self.member_roles: dict[int, list[int]] = {}
        self.channels: dict[int, dict] = {}
        self.messages: dict[int, dict] = {}
        self.deleted: list[dict] = []  # messages taken down (a webhook's own, by the webhook)
        self.webhooks: dict[int, dict] = {}
        self.interactions: dict[str, dict] = {}  # token -> interaction (with "responses")
        self.commands: list[dict] = []
        self.bot = self._user(BOT_ID, "threadteam", bot=True)
        for uid, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"), (MALLORY, "mallory")):
            self._user(uid, name)
        self._user(OTHER_BOT, "otherbot", bot=True)
        self.member_roles = {ALICE: [], BOB: [], CAROL: [MODERATORS_ROLE_ID], MALLORY: []}
        self.roles: dict[int, list[dict]] = {GUILD_ID: [
            self._role(GUILD_ID, "@everyone", 0, permissions="2248473465835073"),
            self._role(MODERATORS_ROLE_ID, "Moderators", 1)], OTHER_GUILD_ID: [
            self._role(OTHER_GUILD_ID, "@everyone", 0, permissions="2248473465835073")]}
        moderators_only = [_overwrite(GUILD_ID, deny=VIEW_CHANNEL),
                           _overwrite(MODERATORS_ROLE_ID, allow=VIEW_CHANNEL | SEND_MESSAGES)]
        read_only = [_overwrite(GUILD_ID, deny=SEND_MESSAGES),
                     _overwrite(MODERATORS_ROLE_ID, allow=SEND_MESSAGES)]
        for cid, name, guild, overwrites in (
                (CHANNEL_ID, "general", GUILD_ID, []), (OTHER_CHANNEL_ID, "random", GUILD_ID, []),
                (PRIVATE_CHANNEL_ID, "mods-only", GUILD_ID, moderators_only),
                (READONLY_CHANNEL_ID, "rules", GUILD_ID, read_only),
                (FOREIGN_CHANNEL_ID, "random", OTHER_GUILD_ID, [])):
            self.channels[cid] = {"id": str(cid), "type": 0, "name": name, "guild_id": str(guild),
                                  "position": 0, "permission_overwrites": overwrites, "nsfw": False}
        self.channels[DM_CHANNEL_ID] = {"id": str(DM_CHANNEL_ID), "type": 1,
                                        "recipients": [self.users[ALICE]], "last_message_id": None}
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def aclose(self) -> None:
        self._gateway_open.set()  # let a held connection through, to be closed with the rest
        for ws in list(self.sockets):
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        """What DISCORD_API_BASE should be to talk to this fake."""
        return self.url + API

    # -- what tests inject -------------------------------------------------------
    def fail(self, method: str, path: str, *, status: int = 429, times: int = 1,
             retry_after: float = 0.05, is_global: bool = False, code: int = 0,
             message: str = "injected failure", stored: bool = False) -> None:
        """Answer the next `times` calls matching (method, path regex) with an error;
        status 0 drops the connection without an answer. `stored`: Discord does what
        was asked (a post is stored and echoed) before the error or the drop."""
        self._failures.append({"method": method, "path": re.compile(path), "status": status,
                               "times": times, "retry_after": retry_after,
                               "global": is_global, "code": code, "message": message,
                               "stored": stored})

    async def drop_gateway(self) -> None:
        """The bot's gateway connections break, and no new one gets through until
        `reopen_gateway()` (the bot keeps trying, as after a network outage)."""
        self._gateway_open.clear()
        for ws in list(self.sockets):
            await ws.close(code=4000, message=b"Unknown error")  # resumable, as Discord says
        await wait_until(lambda: not self.sockets, what="the gateway connections to close")

    def reopen_gateway(self) -> None:
        """The outage is over: the bot's waiting connection goes through."""
        self._gateway_open.set()

    def next_id(self) -> int:
        """A fresh snowflake."""
        return next(self._ids)

    # -- what tests read -----------------------------------------------------------
    def calls_to(self, method: str, path: str, status: int | None = None) -> list[Call]:
        """Recorded calls whose method matches and whose path fully matches the regex."""
        rx = re.compile(path)
        return [c for c in self.calls if c.method == method and rx.fullmatch(c.path)
                and (status is None or c.status == status)]

    def posts_in(self, channel_id: int | str) -> list[dict]:
        """The messages a person sees in a channel or thread, in order."""
        cid = str(channel_id)
        return [m for m in self.messages.values() if m["channel_id"] == cid]

    def threads(self) -> list[dict]:
        """Threads in the order they were opened."""
        return [c for c in self.channels.values() if c["type"] == 11]

    def responses(self, token: str) -> list[dict]:
        """Interaction callbacks and follow-ups sent for one interaction."""
        return self.interactions[token]["responses"]

    # -- payload builders ------------------------------------------------------------
    def _user(self, uid: int, name: str, bot: bool = False) -> dict:
        user = {"id": str(uid), "username": name, "global_name": name.title(), "avatar": None,
                "discriminator": "0", "bot": bot, "public_flags": 0}
        self.users[uid] = user
        return user

    @staticmethod
    def _role(rid: int, name: str, position: int, permissions: str = "0") -> dict:
        return {"id": str(rid), "name": name, "permissions": permissions, "position": position,
                "color": 0, "hoist": False, "managed": False, "mentionable": True, "flags": 0}

    async def add_role(self, name: str, *holders: int, guild: int = GUILD_ID) -> int:
        """Someone creates a role (any name, even one taken) and gives it to `holders`."""
        rid = self.next_id()
        role = self._role(rid, name, len(self.roles[guild]))
        self.roles[guild].append(role)
        for uid in holders:
            self.member_roles[uid].append(rid)
        if self.sockets:
            await self.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild), "role": role},
                                guild=guild)
        return rid

    def member(self, uid: int, guild: int = GUILD_ID) -> dict:
        roles = self.member_roles.get(uid, []) if guild == GUILD_ID else []
        return {"user": self.users[uid], "roles": [str(r) for r in roles],
                "joined_at": _iso(), "deaf": False, "mute": False, "flags": 0, "nick": None,
                "permissions": "2248473465835073"}

    def guild(self, gid: int = GUILD_ID) -> dict:
        # Alice owns this server (so she may do anything in it); Mallory owns the other.
        people = list(self.member_roles) if gid == GUILD_ID else [ALICE, MALLORY]
        return {
            "id": str(gid), "name": "Fake Guild" if gid == GUILD_ID else "Other Guild",
            "icon": None, "owner_id": str(ALICE if gid == GUILD_ID else MALLORY),
            "roles": self.roles[gid], "emojis": [], "stickers": [], "features": [],
            "member_count": len(people) + 1,
            "members": [self.member(uid, gid) for uid in people] + [
                {**self.member(BOT_ID), "roles": []}],
            "channels": [c for c in self.channels.values()
                         if c["type"] == 0 and c["guild_id"] == str(gid)],
            "threads": [c for c in self.channels.values()
                        if c["type"] == 11 and c["guild_id"] == str(gid)
                        and not c["thread_metadata"]["archived"]],
            "presences": [], "voice_states": [], "stage_instances": [],
            "guild_scheduled_events": [], "soundboard_sounds": [], "large": False,
            "unavailable": False, "joined_at": _iso(), "mfa_level": 0, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "premium_tier": 0,
            "preferred_locale": "en-US", "nsfw_level": 0, "system_channel_id": None,
            "afk_channel_id": None, "afk_timeout": 300, "premium_progress_bar_enabled": False,
        }

    def _message(self, channel_id: int | str, author: dict, content: str, **extra: Any) -> dict:
        mid = self.next_id()
        guild = self.channels.get(int(channel_id), {}).get("guild_id")
        msg = {
            "id": str(mid), "channel_id": str(channel_id), "guild_id": guild,
            "author": author, "content": content, "timestamp": _iso(), "edited_timestamp": None,
            "tts": False, "mention_everyone": False, "mentions": [], "mention_roles": [],
            "attachments": [], "embeds": [], "pinned": False, "type": 0, "flags": 0,
            "components": [],
        }
        msg.update(extra)
        self.messages[mid] = msg
        return msg

    # -- gateway -----------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        await self._gateway_open.wait()  # held (not refused) during an outage
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            msg = json.loads(frame.data)
            op, data = msg["op"], msg.get("d")
            if op == 1:  # heartbeat
                await ws.send_json({"op": 11, "d": None, "s": None, "t": None})
            elif op == 2:  # identify
                self.identifies.append(data)
                await self._identify(ws, data)
            elif op == 6:  # resume: the session is not kept, so ask for a fresh identify
                await ws.send_json({"op": 9, "d": False, "s": None, "t": None})
        if ws in self.sockets:
            self.sockets.remove(ws)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict) -> None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if data.get("intents", 0) & (1 << 15) and not self.message_content_allowed:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard") or [0, 1]
        mine = [gid for gid in self.roles if (gid >> 22) % shard[1] == shard[0]]
        ready = {"v": 10, "user": {**self.bot, "verified": True, "mfa_enabled": False, "flags": 0},
                 "guilds": [{"id": str(gid), "unavailable": True} for gid in mine],
                 "session_id": f"session-{len(self.identifies)}",
                 "resume_gateway_url": self.url.replace("http", "ws") + "/gateway",
                 "application": {"id": str(BOT_ID), "flags": 0}, "shard": shard}
        ws.shard = shard  # type: ignore[attr-defined]
        self.sockets.append(ws)
        await self._send(ws, "READY", ready)
        for gid in mine:
            await self._send(ws, "GUILD_CREATE", self.guild(gid))

    async def _send(self, ws: web.WebSocketResponse, event: str, data: dict) -> None:
        await ws.send_json({"op": 0, "t": event, "s": next(self._seq), "d": data})

    async def dispatch(self, event: str, data: dict, guild: int = GUILD_ID) -> None:
        """Send a DISPATCH to the socket of the shard that owns the guild."""
        await wait_until(lambda: self.sockets, what="a gateway connection")
        for ws in list(self.sockets):
            shard = getattr(ws, "shard", [0, 1])
            if (guild >> 22) % shard[1] == shard[0] and not ws.closed:
                await self._send(ws, event, data)

    # -- what people do ------------------------------------------------------------------
    async def say(self, user: int, channel_id: int | str, content: str, *,
                  mention_bot: bool = False, deliver: bool = True) -> dict:
        """A person (or another bot) writes a message; dispatched as MESSAGE_CREATE, unless
        `deliver` is False: written while the bot is not connected, it is only stored."""
        if mention_bot:
            content = f"<@{BOT_ID}> {content}"
        mentions = [self.bot] if f"<@{BOT_ID}>" in content else []
        msg = self._message(channel_id, self.users[user], content, mentions=mentions)
        member = {k: v for k, v in self.member(user).items() if k != "user"}
        if deliver:
            await self.dispatch("MESSAGE_CREATE", {**msg, "member": member})
        return msg

    async def replay(self, message: dict) -> None:
        """MESSAGE_CREATE for a message already written (Discord replays what a resumed
        session missed)."""
        member = {k: v for k, v in self.member(int(message["author"]["id"])).items()
                  if k != "user"}
        await self.dispatch("MESSAGE_CREATE", {**message, "member": member})

    def _interaction(self, kind: int, user: int, channel_id: int | str, data: dict,
                     message: dict | None = None) -> dict:
        token = f"itoken-{self.next_id()}"
        channel = self.channels[int(channel_id)]
        payload = {
            "id": str(self.next_id()), "application_id": str(BOT_ID), "type": kind,
            "data": data, "guild_id": str(GUILD_ID), "channel_id": str(channel_id),
            "channel": channel, "member": self.member(user), "token": token, "version": 1,
            "app_permissions": "2248473465835073", "locale": "en-US", "guild_locale": "en-US",
            "entitlements": [], "authorizing_integration_owners": {"0": str(GUILD_ID)},
            "context": 0, "attachment_size_limit": 10485760,
        }
        if message is not None:
            payload["message"] = message
        self.interactions[token] = {**payload, "responses": []}
        return payload

    async def slash(self, user: int, channel_id: int | str, name: str, **options: str) -> str:
        """Invoke a slash command; returns the interaction token."""
        data = {"id": str(self.command_id(name)), "name": name, "type": 1,
                "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()]}
        payload = self._interaction(2, user, channel_id, data)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload["token"]

    async def autocomplete(self, user: int, channel_id: int | str, name: str, focused: str,
                           **options: str) -> str:
        """Type into a slash command option; returns the interaction token."""
        opts = [{"name": k, "type": 3, "value": v, **({"focused": True} if k == focused else {})}
                for k, v in options.items()]
        data = {"id": str(self.command_id(name)), "name": name, "type": 1, "options": opts}
        payload = self._interaction(4, user, channel_id, data)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload["token"]

    async def click(self, user: int, message_id: int | str, custom_id: str) -> str:
        """Press a button on a message; returns the interaction token."""
        msg = self.messages[int(message_id)]
        data = {"custom_id": custom_id, "component_type": 2}
        payload = self._interaction(3, user, msg["channel_id"], data, message=msg)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload["token"]

    def command_id(self, name: str) -> int:
        for cmd in self.commands:
            if cmd["name"] == name:
                return int(cmd["id"])
        raise AssertionError(f"command {name!r} was never synced (have {self.commands})")

    # -- REST ------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json":
                body = json.loads(raw or b"null")
            elif request.content_type.startswith("multipart/"):
                body = _payload_json(raw)
        call = Call(request.method, path, dict(request.query), body)
        self.calls.append(call)
        failure = self._take_failure(request.method, path)
        if failure is not None:
            if failure["stored"]:
                await self._answer(request, call, path)
            call.status = failure["status"]
            if failure["status"] == 0 and request.transport is not None:
                request.transport.close()  # the answer never comes
            return _error(failure)
        return await self._answer(request, call, path)

    async def _answer(self, request: web.Request, call: Call, path: str) -> web.Response:
        webhook_route = path.startswith(("/webhooks/", "/interactions/"))
        if not webhook_route and request.headers.get("Authorization") != f"Bot {self.token}":
            call.status = 401
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        for method, rx, handler in self._routes():
            m = re.fullmatch(rx, path)
            if m and method == request.method:
                status, answer = await handler(call, *m.groups())
                call.status = status
                if answer is None:
                    return web.Response(status=status)
                return _json(answer, status=status)
        call.status = 404
        return _json({"message": f"fake has no route {request.method} {path}",
                                  "code": 0}, status=404)

    def _take_failure(self, method: str, path: str) -> dict | None:
        for f in self._failures:
            if f["method"] == method and f["path"].fullmatch(path) and f["times"] > 0:
                f["times"] -= 1
                return f
        return None

    def _routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", r"/users/@me", self._me),
            ("GET", r"/oauth2/applications/@me", self._app_info),
            ("GET", r"/gateway/bot", self._gateway_bot),
            ("GET", r"/gateway", self._gateway_bot),
            ("PUT", r"/applications/(\d+)/commands", self._put_commands),
            ("PUT", r"/applications/(\d+)/guilds/(\d+)/commands", self._put_guild_commands),
            ("GET", r"/channels/(\d+)", self._get_channel),
            ("GET", r"/guilds/(\d+)/members/(\d+)", self._get_member),
            ("GET", r"/channels/(\d+)/messages", self._list_messages),
            ("POST", r"/channels/(\d+)/messages", self._bot_message),
            ("PATCH", r"/channels/(\d+)/messages/(\d+)", self._bot_edit),
            ("POST", r"/channels/(\d+)/typing", self._typing),
            ("POST", r"/channels/(\d+)/messages/(\d+)/threads", self._thread_from_message),
            ("POST", r"/channels/(\d+)/threads", self._thread_without_message),
            ("GET", r"/channels/(\d+)/webhooks", self._list_webhooks),
            ("POST", r"/channels/(\d+)/webhooks", self._create_webhook),
            ("POST", r"/webhooks/(\d+)/([^/]+)", self._execute_webhook),
            ("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/(\d+|@original)", self._edit_webhook_msg),
            ("GET", r"/webhooks/(\d+)/([^/]+)/messages/(\d+|@original)", self._get_webhook_msg),
            ("DELETE", r"/webhooks/(\d+)/([^/]+)/messages/(\d+)", self._delete_webhook_msg),
            ("POST", r"/interactions/(\d+)/([^/]+)/callback", self._interaction_callback),
        ]

    async def _me(self, call: Call) -> tuple[int, Any]:
        return 200, {**self.bot, "verified": True, "mfa_enabled": False, "flags": 0}

    async def _app_info(self, call: Call) -> tuple[int, Any]:
        return 200, {"id": str(BOT_ID), "name": "threadteam", "icon": None, "description": "",
                     "bot_public": True, "bot_require_code_grant": False,
                     "owner": self.users[ALICE], "verify_key": "00", "flags": 0,
                     "interactions_endpoint_url": None}

    async def _gateway_bot(self, call: Call) -> tuple[int, Any]:
        return 200, {"url": self.url.replace("http", "ws") + "/gateway", "shards": self.shards,
                     "session_start_limit": {"total": 1000, "remaining": 999,
                                             "reset_after": 0, "max_concurrency": 1}}

    async def _put_commands(self, call: Call, app: str) -> tuple[int, Any]:
        self.commands = [{**c, "id": str(self.next_id()), "application_id": app, "version": "1",
                          "default_member_permissions": None, "type": c.get("type", 1)}
                         for c in call.body]
        return 200, self.commands

    async def _put_guild_commands(self, call: Call, app: str, guild: str) -> tuple[int, Any]:
        return await self._put_commands(call, app)

    async def _get_channel(self, call: Call, cid: str) -> tuple[int, Any]:
        channel = self.channels.get(int(cid))
        return (200, channel) if channel else (404, {"message": "Unknown Channel", "code": 10003})

    async def _get_member(self, call: Call, gid: str, uid: str) -> tuple[int, Any]:
        people = self.guild(int(gid))["members"] if int(gid) in self.roles else []
        found = [m for m in people if m["user"]["id"] == uid]
        return (200, found[0]) if found else (404, {"message": "Unknown Member", "code": 10007})

    def _check_channel(self, cid: str) -> tuple[int, Any] | None:
        if int(cid) not in self.channels:
            return 404, {"message": "Unknown Channel", "code": 10003}
        return None

    async def _list_messages(self, call: Call, cid: str) -> tuple[int, Any]:
        """Get Channel Messages: newest first; `after` gives the oldest `limit` after it."""
        if (err := self._check_channel(cid)) is not None:
            return err
        limit = int(call.query.get("limit", 50))
        if not 1 <= limit <= 100:
            return 400, {"message": "Invalid Form Body: limit", "code": 50035}
        here = sorted((m for m in self.messages.values() if m["channel_id"] == cid),
                      key=lambda m: int(m["id"]))
        if "after" in call.query:
            picked = [m for m in here if int(m["id"]) > int(call.query["after"])][:limit]
        else:
            if "before" in call.query:
                here = [m for m in here if int(m["id"]) < int(call.query["before"])]
            picked = here[-limit:]
        # Discord keeps no nonce: it is only echoed when the message is created.
        return 200, [{k: v for k, v in m.items() if k != "nonce"} for m in reversed(picked)]

    async def _bot_message(self, call: Call, cid: str) -> tuple[int, Any]:
        if (err := self._check_channel(cid)) is not None:
            return err
        body = call.body or {}
        nonce = body.get("nonce")
        if nonce is not None and len(str(nonce)) > 25:
            return 400, {"message": "Invalid Form Body: nonce over 25 characters", "code": 50035}
        if nonce is not None and body.get("enforce_nonce"):
            earlier = self._nonces.get((self.bot["id"], str(nonce)))
            if earlier is not None and time.monotonic() - earlier[1] < self.nonce_window:
                return 200, self.messages[earlier[0]]  # the same message, not a new one
        extra = {"message_reference": body["message_reference"]} if "message_reference" in body else {}
        if nonce is not None:
            extra["nonce"] = str(nonce)
        msg = self._message(cid, self.bot, body.get("content", ""),
                            components=body.get("components", []),
                            pinged=_pinged(body.get("content", ""), body.get("allowed_mentions")),
                            **extra)
        if nonce is not None:
            self._nonces[(self.bot["id"], str(nonce))] = (int(msg["id"]), time.monotonic())
        await self.dispatch("MESSAGE_CREATE", msg)  # Discord echoes the bot's own posts
        return 200, msg

    async def _bot_edit(self, call: Call, cid: str, mid: str) -> tuple[int, Any]:
        msg = self.messages.get(int(mid))
        if msg is None or msg["channel_id"] != cid:
            return 404, {"message": "Unknown Message", "code": 10008}
        if msg["author"]["id"] != self.bot["id"]:
            return 403, {"message": "Cannot edit a message authored by another user", "code": 50005}
        return 200, self._apply_edit(msg, call.body or {})

    def _apply_edit(self, msg: dict, body: dict) -> dict:
        for k in ("content", "components"):
            if k in body:
                msg[k] = body[k]
        msg["edited_timestamp"] = _iso()
        return msg

    async def _typing(self, call: Call, cid: str) -> tuple[int, Any]:
        return (self._check_channel(cid) or (204, None))

    def _new_thread(self, parent: str, name: str, owner: str, tid: int | None = None) -> dict:
        tid = tid or self.next_id()
        thread = {"id": str(tid), "type": 11, "name": name[:100], "parent_id": parent,
                  "guild_id": self.channels[int(parent)]["guild_id"], "owner_id": owner,
                  "message_count": 0,
                  "member_count": 1, "rate_limit_per_user": 0, "flags": 0,
                  "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                      "archive_timestamp": _iso(), "locked": False}}
        self.channels[tid] = thread
        return thread

    async def _thread_from_message(self, call: Call, cid: str, mid: str) -> tuple[int, Any]:
        if (err := self._check_channel(cid)) is not None:
            return err
        if len(call.body.get("name", "")) > 100:
            return 400, {"message": "Invalid Form Body", "code": 50035}
        # a thread started from a message shares the message's id
        thread = self._new_thread(cid, call.body["name"], self.bot["id"], tid=int(mid))
        thread["thread_metadata"]["auto_archive_duration"] = call.body.get("auto_archive_duration",
                                                                           1440)
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return 201, thread

    async def _thread_without_message(self, call: Call, cid: str) -> tuple[int, Any]:
        if (err := self._check_channel(cid)) is not None:
            return err
        if len(call.body.get("name", "")) > 100:
            return 400, {"message": "Invalid Form Body", "code": 50035}
        thread = self._new_thread(cid, call.body["name"], self.bot["id"])
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return 201, thread

    def _forbidden(self) -> tuple[int, Any]:
        return 403, {"message": "Missing Permissions", "code": 50013}

    async def _list_webhooks(self, call: Call, cid: str) -> tuple[int, Any]:
        if not self.manage_webhooks:
            return self._forbidden()
        # Discord shows a webhook's token only to the application that made it.
        return 200, [w if w["application_id"] == self.bot["id"] else
                     {k: v for k, v in w.items() if k != "token"}
                     for w in self.webhooks.values() if w["channel_id"] == cid]

    async def _create_webhook(self, call: Call, cid: str) -> tuple[int, Any]:
        if not self.manage_webhooks:
            return self._forbidden()
        if self.channels.get(int(cid), {}).get("type") != 0:
            return 400, {"message": "Webhooks can only be created in text channels", "code": 0}
        wid = self.next_id()
        hook = {"id": str(wid), "type": 1, "token": f"wtoken-{wid}", "name": call.body["name"],
                "avatar": None, "channel_id": cid, "guild_id": self.channels[int(cid)]["guild_id"],
                "application_id": str(BOT_ID), "user": self.bot}
        self.webhooks[wid] = hook
        return 200, hook

    def _hook(self, wid: str, token: str) -> dict | None:
        hook = self.webhooks.get(int(wid))
        return hook if hook and hook["token"] == token else None

    async def _execute_webhook(self, call: Call, wid: str, token: str) -> tuple[int, Any]:
        if wid == self.bot["id"]:  # interaction follow-up
            return await self._followup(call, token)
        hook = self._hook(wid, token)
        if hook is None:
            return 404, {"message": "Unknown Webhook", "code": 10015}
        target = call.query.get("thread_id") or hook["channel_id"]
        channel = self.channels.get(int(target))
        if channel is None or not (target == hook["channel_id"]
                                   or channel.get("parent_id") == hook["channel_id"]):
            return 400, {"message": "Unknown thread for this webhook", "code": 10003}
        body = call.body or {}
        content = body.get("content", "")
        if len(content) > 2000:
            return 400, {"message": "Invalid Form Body: content over 2000", "code": 50035}
        author = {"id": wid, "username": body.get("username") or hook["name"],
                  "avatar": None, "discriminator": "0000", "bot": True}
        msg = self._message(target, author, content, webhook_id=wid,
                            components=body.get("components", []),
                            avatar_url=body.get("avatar_url"),
                            pinged=_pinged(content, body.get("allowed_mentions")))
        await self.dispatch("MESSAGE_CREATE", msg)  # Discord echoes webhook posts to the bot
        return 200, msg if call.query.get("wait") in ("true", "True", "1") else None

    async def _edit_webhook_msg(self, call: Call, wid: str, token: str, mid: str) -> tuple[int, Any]:
        if wid == self.bot["id"]:
            ix = self.interactions.get(token)
            if ix is None:
                return 404, {"message": "Unknown Webhook", "code": 10015}
            ix["responses"].append({"edit": mid, **(call.body or {})})
            return 200, self._message(ix["channel_id"], self.bot, (call.body or {}).get("content", ""))
        hook = self._hook(wid, token)
        msg = self.messages.get(int(mid)) if mid.isdigit() else None
        if hook is None or msg is None or msg.get("webhook_id") != wid:
            return 404, {"message": "Unknown Message", "code": 10008}
        return 200, self._apply_edit(msg, call.body or {})

    async def _delete_webhook_msg(self, call: Call, wid: str, token: str,
                                  mid: str) -> tuple[int, Any]:
        hook = self._hook(wid, token)
        msg = self.messages.get(int(mid))
        if hook is None or msg is None or msg.get("webhook_id") != wid:
            return 404, {"message": "Unknown Message", "code": 10008}
        self.deleted.append(self.messages.pop(int(mid)))
        return 204, None

    async def _get_webhook_msg(self, call: Call, wid: str, token: str, mid: str) -> tuple[int, Any]:
        ix = self.interactions.get(token)
        if wid == self.bot["id"] and ix and mid == "@original" and ix.get("original"):
            return 200, ix["original"]
        msg = self.messages.get(int(mid)) if mid.isdigit() else None
        return (200, msg) if msg else (404, {"message": "Unknown Message", "code": 10008})

    async def _followup(self, call: Call, token: str) -> tuple[int, Any]:
        ix = self.interactions.get(token)
        if ix is None:
            return 404, {"message": "Unknown Webhook", "code": 10015}
        ix["responses"].append({"followup": True, **(call.body or {})})
        msg = self._message(ix["channel_id"], self.bot, (call.body or {}).get("content", ""))
        return 200, msg

    async def _interaction_callback(self, call: Call, iid: str, token: str) -> tuple[int, Any]:
        ix = self.interactions.get(token)
        if ix is None or ix["id"] != iid:
            return 404, {"message": "Unknown interaction", "code": 10062}
        if any("type" in r for r in ix["responses"]):
            return 400, {"message": "Interaction has already been acknowledged.", "code": 40060}
        body = call.body or {}
        ix["responses"].append(body)
        data = body.get("data") or {}
        if body.get("type") in (4, 5) and not (data.get("flags", 0) & 64):
            ix["original"] = self._message(ix["channel_id"], self.bot, data.get("content", ""),
                                           interaction_metadata={
                                               "id": iid, "type": ix["type"],
                                               "user": ix["member"]["user"],
                                               "authorizing_integration_owners":
                                                   ix["authorizing_integration_owners"]})
        if body.get("type") == 7 and ix.get("message"):
            self._apply_edit(self.messages[int(ix["message"]["id"])], data)
        if call.query.get("with_response") in ("1", "true", "True"):
            original = ix.get("original") if body.get("type") in (4, 5) else None
            answer: dict = {"interaction": {
                "id": iid, "type": ix["type"],
                "response_message_id": original["id"] if original else None,
                "response_message_loading": body.get("type") == 5,
                "response_message_ephemeral": bool(data.get("flags", 0) & 64)}}
            if original:
                answer["resource"] = {"type": body["type"], "message": original}
            return 200, answer
        return 204, None


def _pinged(content: str, allowed: dict | None) -> list[str]:
    """Whom a new message notifies, by Discord's rules: `everyone`, `user:<id>`, `role:<id>`.

    Without `allowed_mentions` every mention in the text pings (Discord's default).
    """
    if allowed is None:
        allowed = {"parse": ["everyone", "users", "roles"]}
    parse = set(allowed.get("parse", []))
    out = ["everyone"] if "everyone" in parse and re.search(r"@(everyone|here)", content) else []
    users, roles = set(allowed.get("users", [])), set(allowed.get("roles", []))
    out += [f"user:{u}" for u in re.findall(r"<@!?(\d+)>", content) if "users" in parse or u in users]
    out += [f"role:{r}" for r in re.findall(r"<@&(\d+)>", content) if "roles" in parse or r in roles]
    return list(dict.fromkeys(out))  # each is notified once


def _overwrite(target: int, *, allow: int = 0, deny: int = 0, member: bool = False) -> dict:
    """A channel permission overwrite for a role (or a member)."""
    return {"id": str(target), "type": 1 if member else 0, "allow": str(allow), "deny": str(deny)}


def _json(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    # discord.py decodes JSON only when Content-Type is exactly application/json
    # (no charset), as Discord sends it.
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})


def _payload_json(raw: bytes) -> Any:
    """The `payload_json` part of a multipart body (discord.py sends files that way)."""
    m = re.search(rb'name="payload_json"\r\n(?:[^\r\n]*\r\n)*\r\n(.*?)\r\n--', raw, re.S)
    return json.loads(m.group(1)) if m else None


def _error(failure: dict) -> web.Response:
    status, retry_after = failure["status"], failure["retry_after"]
    if status != 429:
        return _json({"message": failure["message"], "code": failure["code"]},
                     status=status or 500)
    headers = {
        "Retry-After": str(max(1, round(retry_after))),
        "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
        "X-RateLimit-Bucket": "fakebucket",
        "X-RateLimit-Scope": "global" if failure["global"] else "user",
        # Discord's 429s come through Google's front end; discord.py treats a 429
        # without `Via` as a Cloudflare ban and does not retry it.
        "Via": "1.1 google",
    }
    if failure["global"]:
        headers["X-RateLimit-Global"] = "true"
    return _json({"message": "You are being rate limited.",
                              "retry_after": retry_after, "global": failure["global"]},
                             status=429, headers=headers)


@pytest.fixture
async def fake_discord():
    """A running fake Discord; point a client at `fake_discord.api_base`."""
    fake = FakeDiscord()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.aclose()
