"""A small wire-level fake of Slack that the real slack_sdk / slack_bolt talk to.

One aiohttp server on 127.0.0.1 plays Slack's three faces:

- the Web API under `/api/<method>` (auth.test, chat.postMessage, chat.update, chat.delete,
  chat.postEphemeral, chat.startStream / appendStream / stopStream,
  assistant.threads.setStatus, reactions.*, users.info, usergroups.list,
  conversations.list, conversations.members, conversations.replies, conversations.history,
  apps.connections.open), recording every call in order in `FakeSlack.calls`,
  with `ratelimited` 429 + Retry-After bursts and other errors injectable, before the
  call takes effect (`fail`, `rate_limit`) or after it (`drop_answer`: the call is done,
  then the connection drops with no answer; `fail_after`: done, then a 5xx). Messages
  keep their `metadata`, which conversations.replies / .history return only with
  `include_all_metadata`, as Slack does. Message ts are the wall clock (as Slack's).
- Socket Mode: `apps.connections.open` hands out `ws://.../link`, which says
  hello and then carries the envelopes tests push, and the acks coming back;
- the Events API sender: payloads POSTed to the app's HTTP endpoint, signed
  with v0 HMAC-SHA256 like Slack does (or forged/stale on purpose), and
  `response_url`s that record what the app sends to them. Like Slack, an event
  answered with anything but a 2xx, or not within 3 seconds (not acked, in Socket
  Mode), is sent again (`X-Slack-Retry-Num` 1 to 3; at once, then after a minute and
  five minutes, which the fake shortens to `retry_delays`).

Streams behave as Slack documents and as apps have measured: `chat.startStream` needs
`thread_ts`, and outside a DM `recipient_user_id` and `recipient_team_id`
(`missing_recipient_user_id` / `missing_recipient_team_id` otherwise); its answer is
`{ok, channel, ts}` only. The streamed message is in the thread at once, with
`streaming_state` "in_progress" and its text as a `markdown` block, under the persona
(`username`, `icons`) unless `stream_faces` is False (a workspace that shows streams under
the app's own name); appends to a stream that stopped answer
`message_not_in_streaming_state`, as do appends to one older than `stream_lifetime`
(Slack ends a stream about five minutes after it began), and `chat.stopStream` sets its
metadata when given.
`stream_refusal` makes every `chat.startStream` answer that error (a workspace or plan
without streaming).

Like Slack, it echoes the bot's own posts back as `message` events (so an
app that forgets to ignore itself loops), and sends a mention both as
`app_mention` and as `message`. The fixture is `fake_slack`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from aiohttp import web

from tests.fakes.waiting import wait_until

__all__ = ["Call", "Delivery", "FakeSlack", "fake_slack", "wait_until"]

BOT_TOKEN = "xoxb-" + "1-fake-bot-token"  # built, so no scanner mistakes it for a real one
APP_TOKEN = "xapp-" + "1-A0FAKE-fake-app-token"
SIGNING_SECRET = "fake-signing-secret-0123456789"
TEAM = "T0FAKE"
APP_ID = "A0FAKE"
BOT_USER = "U0BOT"
BOT_ID = "B0BOT"
CHANNEL = "C0GENERAL"
OTHER_CHANNEL = "C0ANNOUNCE"
PRIVATE_CHANNEL = "G0LEADS"
# People the tests act as, and another app's bot.
ALICE, BOB, MALLORY = "U0ALICE", "U0BOB", "U0MALLORY"
DM_ALICE = "D0ALICE"
OTHER_BOT_ID, OTHER_BOT_USER = "B0OTHER", "U0OTHERBOT"
NAMES = {ALICE: "alice", BOB: "bob", MALLORY: "mallory", BOT_USER: "threadteam"}


@dataclass
class Call:
    """One Web API request the fake received, and how it answered."""

    method: str
    params: dict[str, Any]
    token: str
    status: int = 200
    error: str | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class Delivery:
    """One payload the fake sent to the app, and what came back (HTTP status or socket ack)."""

    kind: str  # events_api | slash_commands | interactive
    payload: dict[str, Any]
    via: str  # http | socket
    status: int = 0  # 0: no answer in time (no ack, in Socket Mode)
    response: Any = None
    seconds: float = 0.0
    retry_num: int = 0  # X-Slack-Retry-Num: 0 for the first attempt

def sign(body: str, timestamp: int | str, secret: str = SIGNING_SECRET) -> str:
    """Slack's request signature: v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class FakeSlack:
    """The fake server: messages, recorded calls, injected failures, deliveries."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: list[dict[str, Any]] = []  # messages taken down with chat.delete
        # The workspace's user groups as Slack stores them: id, team_id, name, handle, users
        # (and date_delete, non-zero for a disabled group). Make usergroups.list fail
        # (missing_scope, plan_upgrade_required) with `fail("usergroups.list", ...)`.
        self.usergroups: list[dict[str, Any]] = []
        # The workspace's channels as conversations.list / conversations.members see them:
        # id -> name, is_private, is_archived, members. A DM (D...) is in none of these.
        self.channels: dict[str, dict[str, Any]] = {
            CHANNEL: {"name": "general", "members": [ALICE, BOB, MALLORY, BOT_USER]},
            OTHER_CHANNEL: {"name": "announcements", "members": [ALICE, BOB, BOT_USER]},
            PRIVATE_CHANNEL: {"name": "leads", "is_private": True, "members": [BOB, BOT_USER]},
            "C0OLD": {"name": "old-news", "is_archived": True, "members": [ALICE, BOB]},
        }
        self.page_size = 0  # when set, list methods answer at most this many items a page
        self.deliveries: list[Delivery] = []
        self.responses: list[dict[str, Any]] = []  # what the app sent to response_urls
        self.events_url: str | None = None  # the app's HTTP endpoint, for Events API mode
        self.echo = True
        self.status_error: str | None = None  # make assistant.threads.setStatus fail so
        self.stream_refusal: str | None = None  # make every chat.startStream fail so
        self.stream_faces = True  # False: streams show the app's name, not `username`
        self.stream_lifetime = 300.0  # seconds after which Slack ends a stream by itself
        self._streams: dict[str, float] = {}  # stream ts -> when it began (monotonic)
        # Slack re-sends an event not answered with a 2xx at once, after 1 and after 5
        # minutes; the fake, after these many seconds. Empty: no re-delivery.
        self.retry_delays: tuple[float, ...] = (0.0, 0.1, 0.3)
        self.http_timeout = 3.0  # seconds Slack waits for an HTTP answer (and for an ack)
        self.sockets: list[web.WebSocketResponse] = []
        self.hellos = 0
        self._failures: list[dict[str, Any]] = []
        self._after: list[dict[str, Any]] = []  # failures once the call has taken effect
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._echoes: set[asyncio.Task[Any]] = set()
        self._clock = itertools.count(1)
        self._last_ts = 0.0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._socket)
        app.router.add_post("/respond/{id}", self._respond)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()

    async def aclose(self) -> None:
        await self.drain()
        for ws in list(self.sockets):
            await ws.close()
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """What SLACK_API_URL should be to talk to this fake."""
        return self.url + "/api/"

    def env(self, *, socket_mode: bool = False) -> dict[str, str]:
        """SLACK_* variables pointing an app at this fake."""
        env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_API_URL": self.api_url,
               "SLACK_SIGNING_SECRET": SIGNING_SECRET}
        if socket_mode:
            env["SLACK_APP_TOKEN"] = APP_TOKEN
        return env

    # -- what tests inject -----------------------------------------------------------------
    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next `times` calls to `method` with 429 `ratelimited` + Retry-After."""
        self._failures.append({"method": method, "times": times, "status": 429,
                               "error": "ratelimited", "retry_after": retry_after, "page": None})

    def fail(self, method: str, error: str, *, times: int = 1, status: int = 200,
             page: str | None = None, skip: int = 0) -> None:
        """Answer the next `times` calls to `method` (after letting `skip` through) with
        `{"ok": false, "error": error}`, or with `page` as an HTML body (a proxy's error
        page) when given."""
        self._failures.append({"method": method, "times": times, "status": status,
                               "error": error, "retry_after": None, "page": page, "skip": skip})

    def clear_failures(self) -> None:
        """Forget every failure injected and not yet used."""
        self._failures.clear()
        self._after.clear()

    def drop_answer(self, method: str, *, times: int = 1) -> None:
        """Let the next `times` calls to `method` take effect, then drop the connection
        without answering (the answer lost on the way back)."""
        self._after.append({"method": method, "times": times, "status": None, "error": None})

    def fail_after(self, method: str, error: str = "internal_error", *, times: int = 1,
                   status: int = 500) -> None:
        """Let the next `times` calls to `method` take effect, then answer with an error
        (Slack's own trouble after the fact: an HTTP 5xx, or a `fatal_error`)."""
        self._after.append({"method": method, "times": times, "status": status, "error": error})

    # -- what tests read ---------------------------------------------------------------------
    def calls_to(self, method: str, *, ok: bool | None = None) -> list[Call]:
        """Recorded calls to one method, in order (`ok=True`: only the ones that succeeded)."""
        return [c for c in self.calls if c.method == method
                and (ok is None or (c.error is None) == ok)]

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Replies in a thread as people see them, oldest first (the root excluded)."""
        return sorted((m for (ch, ts), m in self.messages.items()
                       if ch == channel and m.get("thread_ts") == thread_ts and ts != thread_ts),
                      key=lambda m: m["ts"])

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        return self.messages[(channel, ts)]

    # -- the Web API ----------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if raw:
            if request.content_type == "application/json":
                params.update(json.loads(raw))
            else:
                params.update(dict(parse_qsl(raw.decode())))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or str(params.pop("token", ""))
        params.pop("token", None)
        call = Call(method, params, token)
        self.calls.append(call)
        for failure in self._failures:
            if failure["method"] == method and failure.get("skip"):
                failure["skip"] -= 1
                continue
            if failure["method"] == method and failure["times"] > 0:
                failure["times"] -= 1
                call.status, call.error = failure["status"], failure["error"]
                headers = {"Retry-After": str(failure["retry_after"])} \
                    if failure["retry_after"] is not None else {}
                if failure["page"] is not None:
                    return web.Response(text=failure["page"], status=failure["status"],
                                        content_type="text/html")
                return web.json_response({"ok": False, "error": failure["error"]},
                                         status=failure["status"], headers=headers)
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != expected:
            call.error = "invalid_auth" if token else "not_authed"
            return web.json_response({"ok": False, "error": call.error})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            call.error = "unknown_method"
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        body = handler(params, request)
        if not body.get("ok"):
            call.error = body.get("error")
        for after in self._after:
            if after["method"] == method and after["times"] > 0 and body.get("ok"):
                after["times"] -= 1
                if after["status"] is None:  # done; the answer never leaves
                    call.status, call.error = 0, "dropped"
                    assert request.transport is not None
                    request.transport.close()
                    return web.Response()
                call.status, call.error = after["status"], after["error"]
                return web.json_response({"ok": False, "error": after["error"]},
                                         status=after["status"])
        return web.json_response(body)

    def _next_ts(self) -> str:
        """A message ts as Slack makes them: the time (µs), distinct and increasing."""
        now = max(time.time(), self._last_ts + 0.000001)
        self._last_ts = now
        return f"{now:.6f}"

    def _m_auth_test(self, p: dict, r: web.Request) -> dict:
        return {"ok": True, "url": "https://fake.slack.com/", "team": "Fake", "user": "threadteam",
                "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": False}

    def _m_apps_connections_open(self, p: dict, r: web.Request) -> dict:
        ws = self.url.replace("http://", "ws://")
        return {"ok": True, "url": f"{ws}/link/?ticket={uuid.uuid4().hex}&app_id={APP_ID}"}

    def _m_users_info(self, p: dict, r: web.Request) -> dict:
        uid = p.get("user", "")
        if uid not in NAMES:
            return {"ok": False, "error": "user_not_found"}
        name = NAMES[uid]
        return {"ok": True, "user": {"id": uid, "team_id": TEAM, "name": name,
                                     "real_name": name.title(), "is_bot": uid == BOT_USER,
                                     "profile": {"display_name": name.title(),
                                                 "real_name": name.title()}}}

    def _m_usergroups_list(self, p: dict, r: web.Request) -> dict:
        def flag(name: str) -> bool:
            return str(p.get(name, "")).lower() in ("true", "1")

        out = []
        for group in self.usergroups:
            if group.get("date_delete") and not flag("include_disabled"):
                continue
            g = {"team_id": TEAM, "is_usergroup": True, "description": "", "is_external": False,
                 "date_create": 1_700_000_000, "date_update": 1_700_000_000, "date_delete": 0,
                 "auto_type": None, "created_by": ALICE, "updated_by": ALICE,
                 "deleted_by": None, "prefs": {"channels": [], "groups": []}, **group}
            users = list(g.pop("users", []))
            if flag("include_count"):
                g["user_count"] = len(users)
            if flag("include_users"):
                g["users"] = users
            out.append(g)
        return {"ok": True, "usergroups": out}

    def _page(self, items: list[Any], p: dict) -> tuple[list[Any], dict[str, str]]:
        """Cursor pagination as Slack does it: `limit`, then `response_metadata.next_cursor`."""
        start = int(p.get("cursor") or 0)
        size = int(p.get("limit") or 100)
        if self.page_size:
            size = min(size, self.page_size)
        page = items[start:start + size]
        more = start + size < len(items)
        return page, {"next_cursor": str(start + size) if more else ""}

    def _m_conversations_list(self, p: dict, r: web.Request) -> dict:
        types = set(str(p.get("types") or "public_channel").split(","))
        skip_archived = str(p.get("exclude_archived", "")).lower() in ("true", "1")
        out = []
        for cid, ch in self.channels.items():
            private = bool(ch.get("is_private"))
            if ("private_channel" if private else "public_channel") not in types:
                continue
            if private and BOT_USER not in ch.get("members", []):
                continue  # a private channel is listed only to its members
            if skip_archived and ch.get("is_archived"):
                continue
            out.append({"id": cid, "name": ch["name"], "is_channel": not private,
                        "is_group": private, "is_private": private, "is_im": False,
                        "is_archived": bool(ch.get("is_archived")), "context_team_id": TEAM,
                        "is_member": BOT_USER in ch.get("members", []),
                        "num_members": len(ch.get("members", []))})
        page, meta = self._page(out, p)
        return {"ok": True, "channels": page, "response_metadata": meta}

    def _m_conversations_members(self, p: dict, r: web.Request) -> dict:
        ch = self.channels.get(p.get("channel", ""))
        if ch is None or (ch.get("is_private") and BOT_USER not in ch.get("members", [])):
            return {"ok": False, "error": "channel_not_found"}
        page, meta = self._page(list(ch.get("members", [])), p)
        return {"ok": True, "members": page, "response_metadata": meta}

    def _m_chat_postMessage(self, p: dict, r: web.Request) -> dict:
        channel = p.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not (p.get("text") or p.get("blocks")):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        msg: dict[str, Any] = {"type": "message", "ts": ts, "channel": channel,
                               "text": p.get("text", ""), "bot_id": BOT_ID, "app_id": APP_ID,
                               "user": BOT_USER, "team": TEAM}
        if p.get("username"):  # a customised author shows as a bot_message
            msg.update(subtype="bot_message", username=p["username"])
            msg["icons"] = {k.split("_", 1)[1]: p[k] for k in ("icon_emoji", "icon_url") if p.get(k)}
            msg.pop("user")
        if p.get("thread_ts"):
            msg["thread_ts"] = p["thread_ts"]
        if p.get("blocks"):
            msg["blocks"] = _json(p["blocks"])
        if p.get("metadata"):
            msg["metadata"] = _json(p["metadata"])
        self.messages[(channel, ts)] = msg
        self._echo(dict(msg))
        return {"ok": True, "channel": channel, "ts": ts, "message": msg}

    def _m_conversations_replies(self, p: dict, r: web.Request) -> dict:
        """A thread, oldest first: its root, then its replies (`oldest`/`latest` bound them)."""
        channel, ts = p.get("channel", ""), p.get("ts", "")
        root = self.messages.get((channel, ts))
        replies = self.thread(channel, ts)
        if root is None and not replies:
            return {"ok": False, "error": "thread_not_found"}
        page, meta = self._page(self._window([root, *replies] if root else replies, p), p)
        return {"ok": True, "messages": [self._shown(m, p) for m in page],
                "has_more": bool(meta["next_cursor"]), "response_metadata": meta}

    def _m_conversations_history(self, p: dict, r: web.Request) -> dict:
        """A channel's top-level messages, newest first."""
        channel = p.get("channel", "")
        if not channel.startswith(("C", "G", "D")):
            return {"ok": False, "error": "channel_not_found"}
        top = sorted((m for (ch, ts), m in self.messages.items()
                      if ch == channel and m.get("thread_ts", ts) == ts),
                     key=lambda m: m["ts"], reverse=True)
        page, meta = self._page(self._window(top, p), p)
        return {"ok": True, "messages": [self._shown(m, p) for m in page],
                "has_more": bool(meta["next_cursor"]), "response_metadata": meta}

    @staticmethod
    def _window(messages: list[dict[str, Any]], p: dict) -> list[dict[str, Any]]:
        inclusive = str(p.get("inclusive", "")).lower() in ("true", "1")
        oldest, latest = float(p.get("oldest") or 0), float(p.get("latest") or "inf")
        return [m for m in messages
                if (oldest <= float(m["ts"]) if inclusive else oldest < float(m["ts"]))
                and (float(m["ts"]) <= latest if inclusive else float(m["ts"]) < latest)]

    @staticmethod
    def _shown(message: dict[str, Any], p: dict) -> dict[str, Any]:
        """A message as a conversations.* read returns it: metadata only when asked for."""
        if str(p.get("include_all_metadata", "")).lower() in ("true", "1"):
            return dict(message)
        return {k: v for k, v in message.items() if k != "metadata"}

    def _m_chat_update(self, p: dict, r: web.Request) -> dict:
        msg = self.messages.get((p.get("channel"), p.get("ts")))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        previous = dict(msg)
        msg["text"] = p.get("text", msg["text"])
        if "blocks" in p:
            msg["blocks"] = _json(p["blocks"])
        if "metadata" in p:  # as Slack: left as it was unless given; {} clears it
            msg["metadata"] = _json(p["metadata"])
            if not msg["metadata"]:
                del msg["metadata"]
        msg["edited"] = {"user": BOT_USER, "ts": self._next_ts()}
        self._echo({"type": "message", "subtype": "message_changed", "hidden": True,
                    "channel": msg["channel"], "ts": self._next_ts(), "message": dict(msg),
                    "previous_message": previous})
        return {"ok": True, "channel": msg["channel"], "ts": msg["ts"], "text": msg["text"]}

    def _m_chat_delete(self, p: dict, r: web.Request) -> dict:
        msg = self.messages.pop((p.get("channel"), p.get("ts")), None)
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        self.deleted.append(msg)
        self._echo({"type": "message", "subtype": "message_deleted", "hidden": True,
                    "channel": msg["channel"], "ts": self._next_ts(), "deleted_ts": msg["ts"],
                    "previous_message": dict(msg)})
        return {"ok": True, "channel": msg["channel"], "ts": msg["ts"]}

    def _m_chat_postEphemeral(self, p: dict, r: web.Request) -> dict:
        if not (p.get("channel") and p.get("user")):
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_chat_startStream(self, p: dict, r: web.Request) -> dict:
        if self.stream_refusal:
            return {"ok": False, "error": self.stream_refusal}
        channel, thread_ts = p.get("channel"), p.get("thread_ts")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not thread_ts:
            return {"ok": False, "error": "invalid_arguments"}
        if not str(channel).startswith("D"):
            for needed in ("recipient_user_id", "recipient_team_id"):
                if not p.get(needed):
                    return {"ok": False, "error": f"missing_{needed}"}
        ts = self._next_ts()
        msg: dict[str, Any] = {"type": "message", "ts": ts, "channel": channel,
                               "thread_ts": thread_ts, "text": "", "bot_id": BOT_ID,
                               "app_id": APP_ID, "user": BOT_USER, "team": TEAM,
                               "streaming_state": "in_progress"}
        if p.get("username") and self.stream_faces:
            msg.update(subtype="bot_message", username=p["username"])
            msg["icons"] = {k.split("_", 1)[1]: p[k] for k in ("icon_emoji", "icon_url") if p.get(k)}
            msg.pop("user")
        self._stream_text(msg, p)
        self.messages[(channel, ts)] = msg
        self._streams[ts] = time.monotonic()
        self._echo(dict(msg))
        return {"ok": True, "channel": channel, "ts": ts}

    def _streaming(self, msg: dict[str, Any]) -> bool:
        """Is `msg` a stream still running (not stopped, not past Slack's time limit)?"""
        began = self._streams.get(msg["ts"], 0.0)
        if msg.get("streaming_state") == "in_progress" and \
                time.monotonic() - began > self.stream_lifetime:
            msg["streaming_state"] = "completed"
        return msg.get("streaming_state") == "in_progress"

    def _m_chat_appendStream(self, p: dict, r: web.Request) -> dict:
        msg = self.messages.get((p.get("channel"), p.get("ts")))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if not self._streaming(msg):
            return {"ok": False, "error": "message_not_in_streaming_state"}
        if not (p.get("markdown_text") or p.get("chunks")):
            return {"ok": False, "error": "no_text"}
        self._stream_text(msg, p)
        return {"ok": True, "channel": msg["channel"], "ts": msg["ts"]}

    def _m_chat_stopStream(self, p: dict, r: web.Request) -> dict:
        msg = self.messages.get((p.get("channel"), p.get("ts")))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if not self._streaming(msg):
            return {"ok": False, "error": "message_not_in_streaming_state"}
        self._stream_text(msg, p)
        msg["streaming_state"] = "completed"
        if p.get("metadata"):
            msg["metadata"] = _json(p["metadata"])
        if p.get("blocks"):
            msg["blocks"] = [*msg.get("blocks", []), *_json(p["blocks"])]
        return {"ok": True, "channel": msg["channel"], "ts": msg["ts"], "message": dict(msg)}

    @staticmethod
    def _stream_text(msg: dict[str, Any], p: dict) -> None:
        """Add a stream call's markdown (`markdown_text`, or `markdown_text` chunks) to `msg`."""
        added = str(p.get("markdown_text") or "") + "".join(
            str(c.get("text", "")) for c in _json(p.get("chunks") or [])
            if isinstance(c, dict) and c.get("type") == "markdown_text")
        msg["text"] += added
        msg["blocks"] = [{"type": "markdown", "text": msg["text"]}] if msg["text"] else []

    def _m_assistant_threads_setStatus(self, p: dict, r: web.Request) -> dict:
        if self.status_error:
            return {"ok": False, "error": self.status_error}
        return {"ok": True}

    def _m_reactions_add(self, p: dict, r: web.Request) -> dict:
        return {"ok": True}

    def _m_reactions_remove(self, p: dict, r: web.Request) -> dict:
        return {"ok": True}

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        self.responses.append({"id": request.match_info["id"], **(await request.json())})
        return web.Response(text="ok")

    # -- Socket Mode ------------------------------------------------------------------------------
    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        self.hellos += 1
        await ws.send_json({"type": "hello", "num_connections": len(self.sockets),
                            "debug_info": {"host": "fake-slack", "build_number": 1,
                                           "approximate_connection_time": 18060},
                            "connection_info": {"app_id": APP_ID}})
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                future = self._acks.pop(data.get("envelope_id", ""), None)
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            self.sockets.remove(ws)
        return ws

    # -- sending to the app -------------------------------------------------------------------------
    async def deliver(self, kind: str, payload: dict[str, Any], *, retry_num: int = 0,
                      via: str | None = None) -> Delivery:
        """Send one payload the way the app is connected (Socket Mode if a socket is open).

        An event (events_api) answered with anything but a 2xx, or not in time, is sent
        again as Slack does, up to 3 times; the last attempt is returned, and every
        attempt is in `deliveries`.
        """
        reason = "http_timeout" if retry_num else ""
        while True:
            d = await self._deliver_once(kind, payload, retry_num, reason, via)
            if (200 <= d.status < 300 or kind != "events_api"
                    or retry_num >= min(3, len(self.retry_delays))):
                return d
            await asyncio.sleep(self.retry_delays[retry_num])
            retry_num += 1
            reason = "http_error" if d.status else "http_timeout"

    async def _deliver_once(self, kind: str, payload: dict[str, Any], retry_num: int,
                            reason: str, via: str | None) -> Delivery:
        via = via or ("socket" if self.sockets else "http")
        d = Delivery(kind, payload, via, retry_num=retry_num)
        if via == "socket" and reason:
            reason = "timeout"
        start = time.perf_counter()
        if via == "socket":
            envelope_id = str(uuid.uuid4())
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._acks[envelope_id] = future
            await self.sockets[-1].send_json({
                "envelope_id": envelope_id, "type": kind, "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": retry_num, "retry_reason": reason})
            try:
                d.response = await asyncio.wait_for(future, self.http_timeout)
                d.status = 200
            except TimeoutError:
                self._acks.pop(envelope_id, None)
        else:
            body, content_type = _encode(kind, payload)
            headers = {"Content-Type": content_type}
            if retry_num:
                headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": reason}
            try:
                d.status, d.response = await asyncio.wait_for(self.post_signed(body, headers),
                                                              self.http_timeout)
            except TimeoutError:
                d.status = 0
        d.seconds = time.perf_counter() - start
        self.deliveries.append(d)
        return d

    async def post_signed(self, body: str, headers: dict[str, str] | None = None, *,
                          timestamp: int | None = None, secret: str = SIGNING_SECRET,
                          signature: str | None = None, unsigned: bool = False
                          ) -> tuple[int, str]:
        """POST `body` to the app's endpoint, signed (or stale, forged, unsigned if asked)."""
        assert self.events_url and self._session, "set fake_slack.events_url first"
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {"Content-Type": "application/json", **(headers or {})}
        if not unsigned:
            headers["X-Slack-Request-Timestamp"] = str(ts)
            headers["X-Slack-Signature"] = signature or sign(body, ts, secret)
        async with self._session.post(self.events_url, data=body.encode(), headers=headers) as resp:
            return resp.status, await resp.text()

    def envelope(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """An Events API `event_callback` around `event`."""
        return {"token": "legacy-verification-token", "team_id": TEAM, "api_app_id": APP_ID,
                "event": event, "type": "event_callback",
                "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
                "event_time": int(time.time()), "is_ext_shared_channel": False,
                "authorizations": [{"enterprise_id": None, "team_id": TEAM, "user_id": BOT_USER,
                                    "is_bot": True, "is_enterprise_install": False}]}

    async def send_event(self, event: dict[str, Any], *, event_id: str | None = None,
                         retry_num: int = 0, via: str | None = None) -> Delivery:
        return await self.deliver("events_api", self.envelope(event, event_id),
                                  retry_num=retry_num, via=via)

    async def say(self, user: str, text: str, *, channel: str = CHANNEL,
                  thread_ts: str | None = None, via: str | None = None) -> str:
        """A person posts a message: Slack sends `message`, and `app_mention` if it names the bot."""
        ts = self.add_message(user, text, channel=channel, thread_ts=thread_ts)
        event = dict(self.messages[(channel, ts)])
        is_dm = channel.startswith("D")
        await self.send_event(event, via=via)
        if f"<@{BOT_USER}>" in text and not is_dm:
            mention = {k: v for k, v in event.items() if k != "channel_type"}
            await self.send_event({**mention, "type": "app_mention"}, via=via)
        return ts

    def add_message(self, user: str, text: str, *, channel: str = CHANNEL,
                    thread_ts: str | None = None) -> str:
        """A person's message, stored without an event being sent (as if the app were not
        subscribed to it); its ts."""
        ts = self._next_ts()
        event = {"type": "message", "user": user, "text": text, "ts": ts, "channel": channel,
                 "event_ts": ts, "team": TEAM, "client_msg_id": str(uuid.uuid4()),
                 "channel_type": "im" if channel.startswith("D") else "channel"}
        if thread_ts:
            event["thread_ts"] = thread_ts
        self.messages[(channel, ts)] = event
        return ts

    async def slash(self, text: str, *, user: str = ALICE, channel: str = CHANNEL,
                    command: str = "/team", via: str | None = None) -> Delivery:
        """A person runs a slash command."""
        payload = {"token": "legacy-verification-token", "team_id": TEAM, "team_domain": "fake",
                   "channel_id": channel, "channel_name": "general", "user_id": user,
                   "user_name": NAMES.get(user, user), "command": command, "text": text,
                   "api_app_id": APP_ID, "is_enterprise_install": "false",
                   "response_url": f"{self.url}/respond/{uuid.uuid4().hex[:8]}",
                   "trigger_id": f"{next(self._clock)}.{uuid.uuid4().hex[:8]}"}
        return await self.deliver("slash_commands", payload, via=via)

    async def click(self, channel: str, ts: str, action_id: str, *, user: str = ALICE,
                    via: str | None = None) -> Delivery:
        """A person presses the button `action_id` on the message `ts` (it must be there)."""
        msg = self.messages[(channel, ts)]
        button = next((e for b in msg.get("blocks", []) if b.get("type") == "actions"
                       for e in b.get("elements", []) if e.get("action_id") == action_id), None)
        if button is None:
            raise AssertionError(f"message {ts} has no {action_id!r} button: {msg.get('blocks')}")
        block = next(b for b in msg["blocks"] if button in b.get("elements", []))
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": NAMES.get(user, user), "name": NAMES.get(user, user),
                     "team_id": TEAM},
            "api_app_id": APP_ID, "token": "legacy-verification-token",
            "container": {"type": "message", "message_ts": ts, "channel_id": channel,
                          "is_ephemeral": False, **({"thread_ts": msg["thread_ts"]}
                                                    if msg.get("thread_ts") else {})},
            "trigger_id": f"{next(self._clock)}.{uuid.uuid4().hex[:8]}",
            "team": {"id": TEAM, "domain": "fake"}, "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "general"},
            "message": dict(msg), "state": {"values": {}},
            "response_url": f"{self.url}/respond/{uuid.uuid4().hex[:8]}",
            "actions": [{"action_id": action_id, "block_id": block.get("block_id", "b"),
                         "text": button["text"], "value": button.get("value", ""),
                         "style": button.get("style"), "type": "button",
                         "action_ts": f"{time.time():.6f}"}],
        }
        return await self.deliver("interactive", payload, via=via)

    # -- echoes ------------------------------------------------------------------------------------
    def _echo(self, event: dict[str, Any]) -> None:
        """Slack sends the bot's own posts back to it as events; so do we."""
        if not self.echo or not (self.sockets or self.events_url):
            return
        event.pop("blocks", None)
        event.setdefault("event_ts", event["ts"])
        event["channel_type"] = "im" if event["channel"].startswith("D") else "channel"
        task = asyncio.ensure_future(self.send_event(event))
        self._echoes.add(task)
        task.add_done_callback(self._echoes.discard)

    async def drain(self) -> None:
        """Wait until every echo the fake started has been delivered."""
        while self._echoes:
            await asyncio.gather(*list(self._echoes), return_exceptions=True)

    def echoes(self) -> list[Delivery]:
        """Deliveries of the bot's own posts back to it."""
        return [d for d in self.deliveries if d.kind == "events_api"
                and d.payload["event"].get("bot_id") == BOT_ID]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _encode(kind: str, payload: dict[str, Any]) -> tuple[str, str]:
    """The HTTP body Slack sends for each kind of payload."""
    if kind == "events_api":
        return json.dumps(payload), "application/json"
    if kind == "slash_commands":
        return urlencode(payload), "application/x-www-form-urlencoded"
    return urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"


@pytest.fixture
async def fake_slack():
    """A started FakeSlack; closed after the test."""
    fake = FakeSlack()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.aclose()
