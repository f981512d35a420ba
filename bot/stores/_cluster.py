"""Redis Cluster for the Redis store: telling a cluster from a server, the cluster client,
and what its failures mean in plain words.

redis-py's cluster client follows MOVED and ASK redirects, learns the slot map and
sends a pipeline as one batch per node. What this module adds: a pipeline that refuses
a command before it is queued (so a batch is never cut short half sent, which a
cluster pipeline would then not know how to resend), and sentences for the cluster's
own failures: a node unreachable, slots no node serves, a redirect loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.crc import key_slot

from threadteam.bot.errors import PermanentStoreError, StoreError
from threadteam.bot.stores._text import clean

__all__ = ["CheckedClusterPipeline", "cluster_client", "cluster_error", "is_cluster",
           "plain_error"]

_SLOTS = 16384
_PLAIN = (str, bytes, int, float)  # argument types every connection packs as they are


async def is_cluster(url: str, address: str) -> bool:
    """Whether the Redis at `url` (`address` in errors) runs in cluster mode (`INFO cluster`).

    A server that refuses INFO (some managed services rename it) is taken for a plain
    one; `?cluster=true` says otherwise. Connection errors reach the caller.
    """
    probe = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5,
                                    single_connection_client=True)
    try:
        try:
            info = await probe.info("cluster")
        except rx.ResponseError as exc:
            if "SELECT is not allowed in cluster mode" in str(exc):  # the URL's /db is not 0
                raise PermanentStoreError(
                    f"Redis at {address} is a Redis Cluster node, and a cluster has "
                    "only database 0: end THREADTEAM_STORE with /0.") from None
            return False
        return bool(info.get("cluster_enabled"))
    finally:
        await probe.aclose()


class _NamedFailures:
    """A connection whose failures say which node they came from (`exc.connection`):
    in a pipeline, redis-py hands a lost node's error on without saying whose it is."""

    host: str
    port: int

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().send_packed_command(*args, **kwargs)  # type: ignore[misc]
        except (rx.ConnectionError, rx.TimeoutError) as exc:
            setattr(exc, "connection", self)  # noqa: B010 (redis-py reads it so)
            raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except (rx.ConnectionError, rx.TimeoutError) as exc:
            setattr(exc, "connection", self)  # noqa: B010 (redis-py reads it so)
            raise


def cluster_client(url: str, *, max_connections: int, connection_class: Callable[[type], type],
                   **options: Any) -> RedisCluster:
    """A cluster client (not yet initialised) for `url`, packing with `connection_class`;
    `options`: how its connections behave (as the plain client's)."""
    client = RedisCluster.from_url(url, max_connections=max_connections, **options)
    # Every node the client learns of is made from these arguments.
    base = client.connection_kwargs["connection_class"]
    named = type(f"Named{base.__name__}", (_NamedFailures, base), {})
    packing = connection_class(named)
    client.connection_kwargs["connection_class"] = packing
    for node in client.startup_nodes:
        node.connection_class = packing
    return client


class CheckedClusterPipeline(ClusterPipeline):
    """A cluster pipeline that refuses a command it could not send, before queueing it.

    A cluster pipeline sends one batch per node at once; a command that fails to pack
    on one node leaves the others sent, so a batch may not be retried without it as a
    single server's may. Each command is therefore packed once (`check`) when queued,
    and a script or command over keys of two slots is refused there too.
    """

    def __init__(self, client: RedisCluster, check: Callable[..., Any]) -> None:
        super().__init__(client, transaction=False)
        self._check = check

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Queue one command, or raise what sending it would raise."""
        if not all(type(a) in _PLAIN and (type(a) is not str or a.isascii()) for a in args):
            # Keys are hashed to their slot before packing, so their text is mended here;
            # anything else is packed once to be sure it can be (ASCII text and numbers,
            # nearly every command, need neither).
            args = tuple(clean(a) if isinstance(a, str) else a for a in args)
            self._check(*args)
        name = str(args[0]).upper()
        if name in ("EVAL", "EVALSHA") and int(args[2]) > 1:
            keys = args[3:3 + int(args[2])]
            if len({key_slot(str(k).encode()) for k in keys}) > 1:
                raise rx.DataError(f"{name} over keys of several hash slots: {keys!r}")
        return super().execute_command(*args, **kwargs)


def cluster_error(exc: BaseException, address: str) -> StoreError | None:
    """The sentence for a cluster's own failure, or None when `exc` is not one."""
    where = f"the Redis Cluster at {address}"
    check = f"Check it with: redis-cli --cluster check {address}"
    if isinstance(exc, rx.SlotNotCoveredError | rx.ClusterDownError) or (
            isinstance(exc, rx.RedisClusterException) and "not covered" in str(exc)):
        covered = re.search(r"(\d+) of \d+ covered", str(exc))
        told = f" ({covered.group(1)} of {_SLOTS} slots are)" if covered else ""
        return StoreError(
            f"Some hash slots of {where} are served by no node{told}: a node is down or "
            f"slots were never assigned. {check}")
    if isinstance(exc, rx.ClusterError) and "TTL exhausted" in str(exc):
        return StoreError(
            f"The nodes of {where} kept redirecting a command to one another (a redirect "
            "loop): they disagree on who serves a slot, or a node announces an address "
            f"that does not lead back to it from here (cluster-announce-ip/-port). {check}")
    if isinstance(exc, rx.RedisClusterException):
        cause = exc.__cause__
        if isinstance(cause, rx.AuthenticationError | rx.AuthorizationError):
            return PermanentStoreError(
                f"{where[0].upper()}{where[1:]} refused the credentials: "
                f"{str(cause).rstrip('.')}. Check the password in THREADTEAM_STORE.")
        if "not enabled" in str(exc):
            return PermanentStoreError(
                f"Redis at {address} is not a cluster node (cluster_enabled:0); remove "
                "cluster=true from THREADTEAM_STORE.")
        if "cannot be connected" in str(exc):
            detail = str(cause).rstrip(".") if cause is not None else "no node answered"
            return StoreError(f"Could not reach any node of {where}: {detail}. Check that "
                              "the cluster is running and THREADTEAM_STORE points at a node.")
        return PermanentStoreError(f"{where[0].upper()}{where[1:]} failed: {exc}")
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError) and not isinstance(
            exc, rx.AuthenticationError | rx.AuthorizationError):
        node = _node_of(exc)
        return StoreError(f"Could not reach {f'node {node}' if node else 'a node'} of {where}: "
                          f"{str(exc).rstrip('.')}. The node is down or unreachable from "
                          f"here; a cluster fails over only to a replica. {check}")
    return None


def _node_of(exc: BaseException) -> str | None:
    """The `host:port` of the node a connection error came from, where redis-py says."""
    failed = getattr(exc, "last_failed_node_name", None)
    if isinstance(failed, str):
        return failed
    node = getattr(exc, "connection", None)
    host, port = getattr(node, "host", None), getattr(node, "port", None)
    if host and port:
        return f"{host}:{port}"
    said = re.search(r"(?:connecting to|reading from|writing to) ([\w.\-\[\]:]+:\d+)", str(exc))
    return said.group(1) if said else None


def plain_error(exc: BaseException, address: str) -> StoreError | None:
    """A redirect a plain client cannot follow: the server is a cluster node."""
    if isinstance(exc, rx.AskError):  # MovedError is one too
        return PermanentStoreError(
            f"Redis at {address} is a Redis Cluster node: it sent a key to another node "
            f"({exc.host}:{exc.port}). Remove cluster=false from THREADTEAM_STORE so the "
            "store uses the cluster client.")
    return None
