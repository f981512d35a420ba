"""Receiving from Slack on a thread and event loop of its own, so a request never queues
behind a run.

The main event loop drives runs: model calls, store appends, posts. Served
there, a request would queue behind every run that happened to be ready (at 200
events/s that was tens of milliseconds). So bolt, the HTTP server and the Socket
Mode connection live on a second loop, on a daemon thread; a listener hands the
event to the main loop and answers once the host has stored it (`intake`), or at
once for what needs no store. Both loops share the GIL, which the receiver gets
back within the switch interval (set to 0.5 ms at start) when it has a request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.payload import Payload
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from threadteam.bot.errors import ConfigError

from . import EVENTS_PATH
from .inbound import is_from_bot

__all__ = ["EVENTS_PATH", "Receiver"]

log = logging.getLogger("threadteam.slack")

_SWITCH_INTERVAL = 0.0005  # seconds; the interpreter's default is 0.005
_SIGNATURE_MAX_AGE = 60 * 5  # seconds: an older signed request may be a replay


class Receiver:
    """Slack's requests in, on the receiver thread: HTTP on `port`, or Socket Mode."""

    def __init__(self, *, bot_token: str, base_url: str, signing_secret: str, app_token: str,
                 bot_user_id: str, build_bolt: Callable[[AsyncWebClient], AsyncApp],
                 on_open: Callable[[], Awaitable[None]] | None = None,
                 on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        """`on_open`/`on_close`: run on the receiver loop before it receives and after it
        stops (the inbox's store connection lives there)."""
        self.port: int | None = None
        self._on_open, self._on_close = on_open, on_close
        self._bot_token, self._base_url = bot_token, base_url
        self._app_token, self._bot_user_id = app_token, bot_user_id
        self._build_bolt = build_bolt
        self._secret = (signing_secret or "-").encode()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._bolt: AsyncApp | None = None
        self._client: AsyncWebClient | None = None
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None

    async def start(self, *, port: int | None, bind: str) -> None:
        """Start the thread; return once it listens (or is connected), or raise why not."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Every socket call the receiver makes (accept, recv, send) gives up the GIL, and
        # while the main loop computes, getting it back takes up to the switch interval:
        # at the default 5 ms an ack paid that several times over.
        sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL))
        self._thread = threading.Thread(target=self._run, args=(ready, port, bind),
                                        name="slack-receiver", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(ready)

    async def stop(self) -> None:
        """Stop receiving: close the server or socket, then the thread's loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed on its own
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 10.0)

    # -- on the receiver thread --------------------------------------------------------------
    def _run(self, ready: concurrent.futures.Future[None], port: int | None, bind: str) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open(port, bind))
        except BaseException as exc:
            loop.run_until_complete(self._close())
            loop.close()
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self, port: int | None, bind: str) -> None:
        # Bolt gets a client of this loop's own (for its one auth.test, and Socket Mode's
        # connection URL); the main loop's client, which posts, is never touched here.
        self._client = AsyncWebClient(token=self._bot_token, base_url=self._base_url,
                                      session=aiohttp.ClientSession())
        if self._on_open is not None:
            await self._on_open()
        self._bolt = self._build_bolt(self._client)
        if self._app_token:
            await self._open_socket_mode()
        else:
            await self._open_http(bind, 3000 if port is None else port)

    async def _close(self) -> None:
        socket_mode, self._socket = self._socket, None
        if socket_mode is not None:
            with contextlib.suppress(Exception):
                await socket_mode.close_async()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._client is not None and self._client.session is not None:
            await self._client.session.close()
        if self._on_close is not None:
            with contextlib.suppress(Exception):
                await self._on_close()

    async def _open_http(self, bind: str, port: int) -> None:
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

    async def _open_socket_mode(self) -> None:
        assert self._bolt is not None
        handler = self._socket = _SocketModeHandler(self._bolt, self._app_token,
                                                    web_client=self._client)
        handler.bot_user_id = self._bot_user_id
        try:
            # Asked here, not inside connect(), which would retry a refused token forever.
            handler.client.wss_uri = await handler.client.issue_new_wss_url()
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown_error")
            raise ConfigError(f"SLACK_APP_TOKEN was refused by Slack ({error})") from None
        await handler.connect_async()
        log.info("slack: connected in Socket Mode")

    async def _on_http(self, request: web.Request) -> web.StreamResponse:
        assert self._bolt is not None
        raw = await request.read()
        if not self._signed(raw, request.headers):
            return web.Response(status=401)  # forged, stale, unsigned or malformed: quietly
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return web.Response(status=400)
        if _is_bot_echo(body, self._bot_user_id):
            return web.Response(status=200)
        bolt_request = AsyncBoltRequest(body=body, query=request.query_string,
                                        headers=request.headers)  # type: ignore[arg-type]
        bolt_response = await self._bolt.async_dispatch(bolt_request)
        response = await to_aiohttp_response(bolt_response)
        if isinstance(response.body, Payload):
            # bolt's body is a str, which aiohttp sends as a payload after the headers: a
            # second socket write, and a second wait for the GIL. As bytes (headers and
            # content type already set) it goes out with the headers in one write.
            response.body = bolt_response.body.encode()
        return response

    async def _on_health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "mode": "http"})

    def _signed(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Slack's v0 signature over `body`, made within five minutes, checked before
        anything else reads the request. Headers of any other shape (empty, not a
        number, not ASCII, absurdly long) are simply not a signature."""
        timestamp = headers.get("X-Slack-Request-Timestamp", "")
        signature = headers.get("X-Slack-Signature", "")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12
                and signature.isascii() and signature.startswith("v0=")
                and len(signature) <= 128):
            return False
        if abs(time.time() - int(timestamp)) > _SIGNATURE_MAX_AGE:
            return False
        expected = hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + body,
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest("v0=" + expected, signature)


def _is_bot_echo(body: str, bot_user_id: str) -> bool:
    """A (signed) event carrying a bot's post: 3 of every 4 events a run brings in.

    Slack sends each persona post back; answering those before bolt's request
    machinery halves the endpoint's work per turn.
    """
    if '"bot_id"' not in body and '"bot_message"' not in body:
        return False
    try:
        event = json.loads(body).get("event")
    except (ValueError, AttributeError):
        return False
    return isinstance(event, dict) and is_from_bot(event, bot_user_id)


class _SocketModeHandler(AsyncSocketModeHandler):
    """Acks bots' posts (our persona posts echoed back) without running them through bolt."""

    bot_user_id = ""

    async def handle(self, client: Any, req: SocketModeRequest) -> None:  # type: ignore[override]
        event = req.payload.get("event") if req.type == "events_api" else None
        if isinstance(event, dict) and is_from_bot(event, self.bot_user_id):
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
            return
        await super().handle(client, req)
