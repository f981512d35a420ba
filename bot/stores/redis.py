"""The shared store: Redis (a server or a Redis Cluster), for several worker processes.

Keys (`p` is the prefix, `g` is `p` on a server and `p{p}` on a cluster), and the
hash slot each lands in on a cluster:

    p{run}:meta    hash: thread, updated_at      p{run}:log    list of events
    p{run}:lease   owner, with a PX expiry       p{run}:appended  hash: key -> length
        the slot of {run}: one run's keys are together, so the Lua scripts over them
        (create, append, append_external, acquire, release) touch one slot.
    g runs         zset run id by updated time   g active      set of run ids
    g deadlines    zset run id by time to wake it
    g work, g work:<queue>   streams, each with the consumer group "workers"
        the index: the slot of the tag {p}, one known slot on purpose. Each command
        names one of these keys (the due-runs script: deadlines only), so nothing
        needs them together today; together they are one node an operator can find
        (CLUSTER KEYSLOT {p}), and the queue's group keeps its semantics as on a server.
    p thread:<thread>  -> run id                 p post:<key>   platform message id
    p seen:<id>    de-dup marker, PX             p kv:<ns>      hash (adapter memory, limits)
        sharded: each key in the slot of its own name; every command names one key.

On a plain server `g` is `p`, the names this store always had, so a deployment keeps
its data. No command or script names keys of two slots, and a pipeline may hold
commands for several nodes: the cluster client sends one batch per node.

Every string is made encodable where commands are packed (lone surrogates become
U+FFFD), and one command's failure reaches only its own caller (see `_autopipe`).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster

from threadteam.bot.errors import ConflictError, PermanentStoreError, StoreError
from threadteam.bot.stores._autopipe import AutoPipeline, Command
from threadteam.bot.stores._cluster import (
    CheckedClusterPipeline,
    cluster_client,
    cluster_error,
    is_cluster,
    plain_error,
)
from threadteam.bot.stores._text import clean, clean_args
from threadteam.bot.stores.base import RunInfo, Store

__all__ = ["RedisStore"]

_GROUP = "workers"
#: How every connection to Redis behaves, on a server or a cluster's nodes. RESP2 and
#: decoded text: the reply shapes this module reads (and cheaper to parse). No read
#: timeout (redis-py 6+ defaults to 5 s): it armed and cancelled a timer on every reply,
#: ~10% of the bot's CPU with 1,000-3,000 runs at once, and a blocking read of the work
#: queue waits longer anyway; a server that stalls (a failover, a fork) is waited for.
#: What the timeout caught, a server gone without a word (a host down, a network cut),
#: TCP keepalive finds in about 25 s (a unix socket has no such silence to fear).
_CONNECTION: dict[str, Any] = dict(
    decode_responses=True, protocol=2, socket_connect_timeout=5, socket_timeout=None)
_KEEPALIVE: dict[str, Any] = dict(socket_keepalive=True, socket_keepalive_options={
    opt: value for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if (opt := getattr(socket, name, None)) is not None})
_BATCH = 100  # runs one read of the queue (claimed or new) hands out at most
_CHUNK = 500  # RPUSH arguments per call inside Lua (unpack has a stack limit)

_PUSH = f"""
local function push(key, first)
  for i = first, #ARGV, {_CHUNK} do
    redis.call('RPUSH', key, unpack(ARGV, i, math.min(i + {_CHUNK} - 1, #ARGV)))
  end
end
"""

# KEYS: meta, log. ARGV: thread, now, events... -> 1 created, 0 run id taken
_CREATE = _PUSH + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'thread', ARGV[1], 'updated_at', ARGV[2])
push(KEYS[2], 3)
return 1
"""

# KEYS: meta, log. ARGV: expected, now, events... -> {1, new length} | {0, actual} | {-1, 0}
_APPEND = _PUSH + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local n = redis.call('LLEN', KEYS[2])
if n ~= tonumber(ARGV[1]) then return {0, n} end
push(KEYS[2], 3)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
return {1, n + #ARGV - 2}
"""

# KEYS: meta, log, appended. ARGV: now, key ('' for none), events...
#   -> {1, new length} appended | {2, length then} appended before under key | {-1, 0} no run
_APPEND_EXTERNAL = _PUSH + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if ARGV[2] ~= '' then
  local done = redis.call('HGET', KEYS[3], ARGV[2])
  if done then return {2, tonumber(done)} end
end
push(KEYS[2], 3)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
local n = redis.call('LLEN', KEYS[2])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], n) end
return {1, n}
"""

# KEYS: lease. ARGV: owner, ttl ms -> 1 held by owner now, 0 someone else holds it
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: owner
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _address_of(url: str) -> str:
    """`host:port` (or a socket's path) of a Redis URL: what an error may show (never the
    password)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or 'localhost'}:{port}"


class RedisStore(Store):
    """Run logs, leases, de-duplication and a work queue shared by worker processes."""

    def __init__(self, url: str, prefix: str = "tt:", *, reclaim_after: float = 60.0,
                 max_connections: int = 64, cluster: bool | None = None) -> None:
        self._url = url
        self._address = _address_of(url)
        self._p = prefix
        self._g = prefix  # the index keys' prefix: `p{p}` once start() finds a cluster
        self._cluster = cluster  # None: find out at start
        self._routes: Any = None  # the cluster client, to route blocking reads by key
        self._reclaim_ms = _ms(reclaim_after)
        self._groups: set[str] = set()
        self._max_connections = max_connections
        self._r: aioredis.Redis | RedisCluster | None = None
        self._pipe: AutoPipeline | None = None
        self._shas: dict[str, str] = {}
        self._touches: dict[str, float] = {}
        self._last_update = 0.0

    @property
    def prefix(self) -> str:
        """The prefix of every key this store writes."""
        return self._p

    def _run_key(self, run_id: str, part: str) -> str:
        return f"{self._p}{{{run_id}}}:{part}"

    @property
    def shared(self) -> bool:
        """Yes: several worker processes share a Redis."""
        return True

    @property
    def cluster(self) -> bool | None:
        """Whether the store talks to a Redis Cluster (None until start() found out)."""
        return self._cluster

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        """Connect (to a server or, found by asking it, a cluster), check it answers, and
        create the work queue's consumer group."""
        if self._r is not None:
            return
        if not self._cluster:  # unknown, or said to be a plain server: ask
            with self._errors():
                found = await is_cluster(self._url, self._address)
            if self._cluster is False and found:
                raise PermanentStoreError(
                    f"Redis at {self._address} is a Redis Cluster node; remove cluster=false "
                    "from THREADTEAM_STORE so the store uses the cluster client.")
            self._cluster = found
        if self._cluster:
            self._connect_cluster()
        else:
            self._connect_server()
        r = self._r
        assert r is not None
        try:
            with self._errors():
                if isinstance(r, RedisCluster):
                    await r.initialize()
                await r.ping()
                for name, source in _SCRIPTS.items():
                    self._shas[name] = await r.script_load(source)
                await self._ensure_group()
        except BaseException:
            await self.aclose()
            raise

    def _connect_server(self) -> None:
        # A blocking pool: a burst waits for a free connection instead of failing.
        over_tcp = {} if self._url.startswith("unix:") else _KEEPALIVE
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url, max_connections=self._max_connections, timeout=30, **_CONNECTION,
            **over_tcp)
        pool.connection_class = _hiredis_packing(pool.connection_class)
        self._r = r = aioredis.Redis.from_pool(pool)
        self._pipe = AutoPipeline(r, check=_HiredisPack().pack_command)

    def _connect_cluster(self) -> None:
        self._g = f"{self._p}{{{self._p}}}"
        try:
            client = cluster_client(self._url, max_connections=self._max_connections,
                                    connection_class=_hiredis_packing, **_CONNECTION,
                                    **_KEEPALIVE)
        except Exception as exc:  # a bad URL for a cluster (a database other than 0)
            raise PermanentStoreError(
                f"Redis at {self._address}: {exc}. A cluster has only database 0 "
                "(redis://host:port/0) and no unix sockets.") from None
        check = _HiredisPack().pack_command
        self._r = self._routes = client
        # A node's connections do not queue for a free one, they fail: a quarter stays
        # free for blocking reads of the work queue and one-off commands.
        self._pipe = AutoPipeline(client, check=check,
                                  pipeline=lambda: CheckedClusterPipeline(  # type: ignore[abstract]
                                      client, check),
                                  max_in_flight=max(self._max_connections * 3 // 4, 1))

    async def _ensure_group(self, stream: str | None = None) -> None:
        assert self._r is not None
        stream = stream or self._work
        try:
            await self._r.xgroup_create(stream, _GROUP, id="0", mkstream=True)
        except rx.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # the group exists: another worker made it
                raise
        self._groups.add(stream)

    async def aclose(self) -> None:
        """Wait for commands in flight, then close the connection pool."""
        if self._r is not None and self._pipe is not None:
            await self._pipe.aclose()
            await self._r.aclose()
            self._r = self._pipe = None

    @property
    def _work(self) -> str:
        return f"{self._g}work"

    def _stream(self, queue: str) -> str:
        """The stream of one work queue (the default one keeps its old name)."""
        return f"{self._g}work:{queue}" if queue else self._work

    def _q(self, command: Command) -> asyncio.Future[Any]:
        if self._pipe is None:
            raise StoreError("The Redis store is not open; call start() first (or it was closed).")
        return self._pipe.call(command)

    def _script(self, name: str, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        sha = self._shas[name]
        # As a plain command: redis-py refuses its script methods in a cluster pipeline.
        return self._q(lambda p: p.execute_command("EVALSHA", sha, len(keys), *keys, *args))

    async def _script_reply(
        self, reply: asyncio.Future[Any], name: str, keys: list[str], args: list[Any]
    ) -> Any:
        try:
            return await reply
        except rx.NoScriptError:
            # The server lost its script cache (restart, SCRIPT FLUSH); EVAL re-caches it.
            assert self._r is not None
            mended: Any = clean_args((*keys, *args))  # a cluster hashes keys before packing
            return await self._r.eval(_SCRIPTS[name], len(keys), *mended)

    async def _run_script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._script_reply(self._script(name, keys, args), name, keys, args)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        # Every redis-py error becomes a StoreError here, and only here: a plain one
        # when retrying may cure it, a PermanentStoreError when it will not.
        try:
            try:
                yield
            except (rx.RedisError, rx.RedisClusterException) as exc:
                # A cluster's own failures (and a redirect a server's client cannot
                # follow) first: never a bare MOVED or "TTL exhausted".
                said = (cluster_error(exc, self._address) if self._cluster
                        else plain_error(exc, self._address))
                if said is not None:
                    raise said from exc
                raise
        except (rx.AuthenticationError, rx.AuthorizationError) as exc:
            raise PermanentStoreError(
                f"Redis at {self._address} refused the credentials: {str(exc).rstrip('.')}. "
                "Check the password in THREADTEAM_STORE (redis://:PASSWORD@host:port/db)."
            ) from exc
        except (rx.ConnectionError, rx.TimeoutError) as exc:
            raise StoreError(
                f"Could not reach Redis at {self._address}: {str(exc).rstrip('.')}. "
                "Check that redis-server is running and THREADTEAM_STORE points at it."
            ) from exc
        except rx.ResponseError as exc:
            kind = StoreError if _transient_reply(exc) else PermanentStoreError
            raise kind(f"Redis at {self._address} failed: {exc}") from exc
        except (rx.DataError, TypeError, ValueError) as exc:
            raise PermanentStoreError(
                f"Redis at {self._address} cannot store a value: {exc}") from exc
        except rx.RedisError as exc:
            raise StoreError(f"Redis at {self._address} failed: {exc}") from exc

    def _now(self) -> float:
        # Strictly increasing per process so `runs()` has a stable order within one tick.
        now = max(time.time(), self._last_update + 1e-6)
        self._last_update = now
        return now

    # -- run logs ---------------------------------------------------------
    async def create_run(self, run_id: str, thread: str, events: list[str]) -> bool:
        """Create a run for `thread` with its first events, active from birth; False if
        the thread has a run."""
        run_id, thread = clean(run_id), clean(thread)  # compared with what Redis hands back
        now = self._now()
        keys = [self._run_key(run_id, "meta"), self._run_key(run_id, "log")]
        thread_key = f"{self._p}thread:{thread}"
        with self._errors():
            # The run's keys and the indexes live in different slots, so this is two
            # steps: write the run, then claim the thread, mark the run active and list
            # it, in that order in one pipeline (one write on the wire). A crash in
            # between leaves an unlisted run that nothing points at; after it, a run
            # that is active from the moment its thread points at it. A loser of the
            # thread is active for an instant, which `active_runs` sees through.
            if not await self._run_script("create", keys, [thread, now, *events]):
                if await self.thread_of(run_id) != thread:
                    raise PermanentStoreError(
                        f"A run with id {run_id!r} already exists in another thread.")
                # A retried create: this run exists; if a crash cut the first try short
                # of claiming the thread, finish the job.
                if not await self._q(lambda p: p.set(thread_key, run_id, nx=True)):
                    return False  # the thread has a run (this one, or a rival's)
                await asyncio.gather(self._q(lambda p: p.sadd(f"{self._g}active", run_id)),
                                     self._q(lambda p: p.zadd(f"{self._g}runs", {run_id: now})))
                return True
            claimed, _, _ = await asyncio.gather(
                self._q(lambda p: p.set(thread_key, run_id, nx=True)),
                self._q(lambda p: p.sadd(f"{self._g}active", run_id)),
                self._q(lambda p: p.zadd(f"{self._g}runs", {run_id: now})),
            )
            if not claimed:
                await asyncio.gather(self._q(lambda p: p.srem(f"{self._g}active", run_id)),
                                     self._q(lambda p: p.zrem(f"{self._g}runs", run_id)),
                                     # One key a command: a cluster pipeline would
                                     # answer one DEL over several slots twice.
                                     *(self._delete(k) for k in keys))
                return False
        return True

    def _delete(self, key: str) -> asyncio.Future[Any]:
        return self._q(lambda p: p.delete(key))

    async def run_for_thread(self, thread: str) -> str | None:
        """The run id living in `thread`, if any."""
        with self._errors():
            return await self._run_of(thread)

    async def thread_of(self, run_id: str) -> str | None:
        """The thread a run lives in."""
        with self._errors():
            return await self._thread_of(run_id)

    def _run_of(self, thread: str) -> asyncio.Future[Any]:
        return self._q(lambda p: p.get(f"{self._p}thread:{thread}"))

    def _thread_of(self, run_id: str) -> asyncio.Future[Any]:
        return self._q(lambda p: p.hget(self._run_key(run_id, "meta"), "thread"))

    def _length_of(self, run_id: str) -> asyncio.Future[Any]:
        return self._q(lambda p: p.llen(self._run_key(run_id, "log")))

    async def load(self, run_id: str, start: int = 0) -> list[str]:
        """The run's events from index `start` on."""
        with self._errors():
            return await self._q(lambda p: p.lrange(self._run_key(run_id, "log"), max(start, 0), -1))

    async def append(self, run_id: str, expected: int, events: list[str]) -> int:
        """Append if the log has exactly `expected` events; return the new length."""
        now = self._now()
        keys = [self._run_key(run_id, "meta"), self._run_key(run_id, "log")]
        args = [expected, now, *events]
        with self._errors():
            # The touch travels in the same pipeline, so it is not awaited apart.
            # After a conflict it merely restates that the run changed just now.
            reply = self._script("append", keys, args)
            self._touch(run_id, now)
            status, length = await self._script_reply(reply, "append", keys, args)
        if status == -1:
            raise PermanentStoreError(f"No run {run_id!r} in the store; it cannot be appended to.")
        if status == 0:
            raise ConflictError(run_id, expected, int(length))
        return int(length)

    async def append_external(self, run_id: str, events: list[str], *,
                              key: str | None = None) -> int:
        """Append at the end, whatever the length, in one atomic script; the new length."""
        now = self._now()
        keys = [self._run_key(run_id, "meta"), self._run_key(run_id, "log"),
                self._run_key(run_id, "appended")]
        with self._errors():
            # EVAL, not EVALSHA: a script cache lost mid-burst would send the NOSCRIPT
            # fallbacks after later appends and reorder them. The body is small.
            reply = self._q(lambda p: p.execute_command(
                "EVAL", _APPEND_EXTERNAL, len(keys), *keys, now, "" if key is None else key,
                *events))
            self._touch(run_id, now)
            status, length = await reply
        if status == -1:
            raise PermanentStoreError(f"No run {run_id!r} in the store; it cannot be appended to.")
        return int(length)

    def _touch(self, run_id: str, now: float) -> None:
        """Move a listed run to `now` in the runs listing, in one ZADD per pipeline."""
        first = not self._touches
        self._touches[run_id] = now
        if first:
            # The command is built when the pipeline is sent, so it carries every
            # touch of this loop turn; XX: only runs create_run listed are touched.
            # Nobody awaits it (one caller's cancellation must not cancel it for
            # all); its error, if any, is the one the appends in its pipeline see.
            touched = self._q(lambda p: p.zadd(f"{self._g}runs", self._take_touches(), xx=True))
            touched.add_done_callback(_retrieve)

    def _take_touches(self) -> dict[str, float]:
        touches, self._touches = self._touches, {}
        return touches

    async def runs(self, limit: int = 20) -> list[RunInfo]:
        """Most recently updated runs first."""
        if limit <= 0:  # ZREVRANGE 0 -1 would mean "all of them"
            return []
        with self._errors():
            ranked = await self._q(
                lambda p: p.zrevrange(f"{self._g}runs", 0, limit - 1, withscores=True)
            )
            threads = [self._thread_of(r) for r, _ in ranked]
            lengths = [self._length_of(r) for r, _ in ranked]
            details = await asyncio.gather(*threads, *lengths)
        n = len(ranked)
        return [
            RunInfo(run_id, details[i] or "", int(details[n + i]), float(score))
            for i, (run_id, score) in enumerate(ranked)
        ]

    # -- one driver per run ------------------------------------------------
    async def acquire_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        """Take (or renew, if `owner` holds it) the run's lease for `ttl` seconds."""
        with self._errors():
            return bool(await self._run_script(
                "acquire", [self._run_key(run_id, "lease")], [owner, _ms(ttl)]
            ))

    async def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease up if `owner` holds it."""
        with self._errors():
            await self._run_script("release", [self._run_key(run_id, "lease")], [owner])

    # -- runs that need driving --------------------------------------------
    async def set_active(self, run_id: str, active: bool) -> None:
        """Mark a run as mid-turn or settled."""
        key = f"{self._g}active"
        with self._errors():
            await self._q(lambda p: p.sadd(key, run_id) if active else p.srem(key, run_id))

    async def active_runs(self) -> list[str]:
        """Runs marked active: the ones to resume after a crash."""
        key = f"{self._g}active"
        with self._errors():
            ids = sorted(await self._q(lambda p: p.smembers(key)))
            if not ids:
                return []
            # Only runs that own their thread: a create that lost its thread to a rival
            # is marked active for an instant (and for good if it crashed right then).
            threads = await asyncio.gather(*(self._thread_of(r) for r in ids))
            owners = await asyncio.gather(*(self._run_of(t) for t in threads if t))
            owner_of = dict(zip([t for t in threads if t], owners, strict=True))
            live, stale = [], []
            for run_id, thread in zip(ids, threads, strict=True):
                owner = owner_of.get(thread) if thread else None
                if thread is None or (owner is not None and owner != run_id):
                    stale.append(run_id)
                else:
                    live.append(run_id)
            if stale:
                await self._q(lambda p: p.srem(key, *stale))
            return live

    async def set_deadline(self, run_id: str, at: float | None) -> None:
        """Wake the run at `at` (its time limit, while it waits for a person); None: never."""
        key = f"{self._g}deadlines"
        with self._errors():
            await self._q(lambda p: p.zrem(key, run_id) if at is None
                          else p.zadd(key, {run_id: at}))

    async def due_runs(self, now: float, limit: int = 100, grace: float = 60.0) -> list[str]:
        """Runs whose deadline has passed, earliest first; each goes to one caller."""
        with self._errors():
            return list(await self._run_script("due", [f"{self._g}deadlines"],
                                               [now, limit, now + grace]))

    # -- keyed side effects -------------------------------------------------
    async def get_post(self, key: str) -> str | None:
        """The platform message id recorded for an idempotency key."""
        with self._errors():
            return await self._q(lambda p: p.get(f"{self._p}post:{key}"))

    async def put_post(self, key: str, message_id: str) -> None:
        """Record that the post with this key succeeded as `message_id`."""
        with self._errors():
            await self._q(lambda p: p.set(f"{self._p}post:{key}", message_id))

    async def first_sight(self, event_id: str, ttl: float = 86400.0) -> bool:
        """True the first time an inbound event id is seen within `ttl`; False after."""
        key = f"{self._p}seen:{event_id}"
        with self._errors():
            return bool(await self._q(lambda p: p.set(key, 1, nx=True, px=_ms(ttl))))

    # -- small adapter state --------------------------------------------------
    async def kv_get(self, namespace: str, key: str) -> str | None:
        """A value an adapter stored."""
        with self._errors():
            return await self._q(lambda p: p.hget(f"{self._p}kv:{namespace}", key))

    async def kv_set(self, namespace: str, key: str, value: str) -> None:
        """Store a small value for an adapter."""
        with self._errors():
            await self._q(lambda p: p.hset(f"{self._p}kv:{namespace}", key, value))

    async def kv_delete(self, namespace: str, key: str) -> None:
        """Forget a value (nothing happens if there is none)."""
        with self._errors():
            await self._q(lambda p: p.hdel(f"{self._p}kv:{namespace}", key))

    async def kv_items(self, namespace: str) -> dict[str, str]:
        """Every key and value of a namespace (one hash)."""
        with self._errors():
            items = await self._q(lambda p: p.hgetall(f"{self._p}kv:{namespace}"))
        return dict(items)

    # -- work queue: a stream with one consumer group -----------------------------
    async def enqueue(self, run_id: str, queue: str = "") -> None:
        """Ask some worker (in any process) reading `queue` to drive `run_id`."""
        stream = self._stream(queue)
        with self._errors():
            await self._q(lambda p: p.xadd(stream, {"run": run_id}))

    async def next_work(self, consumer: str, timeout: float, queue: str = ""
                        ) -> list[tuple[str, str]]:
        """Up to a few (receipt, run_id) pairs of `queue`; [] after `timeout` seconds."""
        stream = self._stream(queue)
        with self._errors():
            if stream not in self._groups:
                await self._ensure_group(stream)
            try:
                taken = await self._take(consumer, timeout, stream)
            except rx.ResponseError as exc:
                # A Redis restarted without persistence has lost the group: make it again.
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group(stream)
                taken = await self._take(consumer, timeout, stream)
        return [(f"{queue}|{entry}", run_id) for entry, run_id in taken]

    async def _take(self, consumer: str, wait: float, stream: str) -> list[tuple[str, str]]:
        # Work a dead consumer took and never acked comes first; new work travels in the
        # same pipeline, read without blocking.
        replies: list[Any] = list(await asyncio.gather(
            self._q(lambda p: p.xautoclaim(
                stream, _GROUP, consumer, self._reclaim_ms, "0-0", count=_BATCH)),
            self._q(lambda p: self._read_group(p, consumer, stream)),
            return_exceptions=True))
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        claimed, fresh = replies
        entries: list[Any] = [e for e in claimed[1] if e and e[1]]  # deleted ones come back empty
        entries += [e for _, stream_entries in fresh or [] for e in stream_entries]
        if not entries:
            # A blocking read holds its connection, so it bypasses the auto-pipeline.
            assert self._r is not None
            answer: Any = await self._read_group(self._r, consumer, stream, block=wait)
            entries = [e for _, stream_entries in answer or [] for e in stream_entries]
        return [(entry_id, fields["run"]) for entry_id, fields in entries]

    def _read_group(self, client: Any, consumer: str, stream: str,
                    block: float | None = None) -> Any:
        """XREADGROUP of new entries, on a pipeline or a client (blocking `block` s)."""
        ms = int(block * 1000) if block is not None else 0
        if self._routes is None:
            return client.xreadgroup(_GROUP, consumer, {stream: ">"}, count=_BATCH,
                                     block=ms if ms > 0 else None)
        # The cluster client finds XREADGROUP's key by asking a node (COMMAND GETKEYS)
        # every time: a round trip per read. The stream's node is known, so say it.
        args: list[Any] = ["GROUP", _GROUP, consumer, "COUNT", _BATCH]
        if ms > 0:
            args += ["BLOCK", ms]
        return client.execute_command("XREADGROUP", *args, "STREAMS", stream, ">",
                                      target_nodes=self._routes.get_node_from_key(stream))

    async def ack_work(self, receipt: str) -> None:
        """The work named by `receipt` is done."""
        queue, _, entry = receipt.rpartition("|")
        stream = self._stream(queue)
        with self._errors():
            # Deleting acked entries keeps the stream as long as the work outstanding.
            await asyncio.gather(
                self._q(lambda p: p.xack(stream, _GROUP, entry)),
                self._q(lambda p: p.xdel(stream, entry)),
            )


# The runs whose deadline has passed, moved on by a grace period: each goes to one worker.
_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return ids
"""

_SCRIPTS = {"create": _CREATE, "append": _APPEND, "acquire": _ACQUIRE, "release": _RELEASE,
            "due": _DUE}

# Error replies that may pass by themselves: memory freed, a script finished, a
# replica promoted, a snapshot that works again, a cluster that settles.
_TRANSIENT_ERRORS = (rx.OutOfMemoryError, rx.ReadOnlyError, rx.TryAgainError,
                     rx.ClusterDownError)
_TRANSIENT_PREFIXES = ("BUSY", "MISCONF", "NOREPLICAS", "LOADING", "TRYAGAIN", "CLUSTERDOWN")


def _transient_reply(exc: rx.ResponseError) -> bool:
    return isinstance(exc, _TRANSIENT_ERRORS) or str(exc).startswith(_TRANSIENT_PREFIXES)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


class _HiredisPack:
    """Commands packed by hiredis (C) instead of redis-py's asyncio connection (Python).

    The same bytes for every argument redis-py accepts (this is how redis-py's own sync
    client packs when hiredis is installed); an argument it would refuse is a DataError.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        args = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args)
        try:
            try:
                return [hiredis.pack_command(args)]
            except UnicodeEncodeError:
                # A lone surrogate: the store boundary stores U+FFFD in its place.
                mended: Any = tuple(clean(a) if isinstance(a, str) else a for a in args)
                return [hiredis.pack_command(mended)]
        except TypeError as exc:
            raise rx.DataError(str(exc)) from exc


def _hiredis_packing(cls: type) -> type:
    """`cls` (the pool's connection class, as the URL's scheme chose it) packing with hiredis."""
    return type(f"Hiredis{cls.__name__}", (_HiredisPack, cls), {})
