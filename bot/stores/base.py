"""The one store interface the host talks to. Implementations: SQLite, Redis.

A run is an append-only log of serialised events (JSON text, see
`teams.events.to_json`). The driver's appends state the log length they expect, so
a stale driver cannot write (optimistic concurrency); what people add goes in with
`append_external`, which needs no read. Every string a caller hands in is stored
(lone surrogates become U+FFFD), never refused. Failures are `StoreError` when
retrying may cure them and `PermanentStoreError` when it will not.

Everything else here exists so side effects happen once: leases (one driver per
run), post records (idempotency key -> platform message id) and inbound
de-duplication.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

__all__ = ["RunInfo", "Store", "queued", "soon"]

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as listed by `Store.runs`."""

    run_id: str
    thread: str
    length: int
    updated_at: float


class Store(ABC):
    """Durable state of every run. All methods are safe to call concurrently."""

    async def start(self) -> None:
        """Open connections / create schema. `__init__` does no I/O."""

    async def aclose(self) -> None:
        """Flush pending writes and close."""

    @property
    def shared(self) -> bool:
        """Whether other processes drive runs on this store too: a run created here may
        have been driven, and posted for, by another process that then died."""
        return False

    # -- run logs ---------------------------------------------------------
    @abstractmethod
    async def create_run(self, run_id: str, thread: str, events: list[str]) -> bool:
        """Create a run for `thread` with its first events; False if the thread has a run.

        The run is active (`active_runs` lists it) from the moment it exists, so a crash
        right after leaves a run that is resumed, not one that waits silently.
        """

    @abstractmethod
    async def run_for_thread(self, thread: str) -> str | None:
        """The run id living in `thread`, if any."""

    @abstractmethod
    async def thread_of(self, run_id: str) -> str | None:
        """The thread a run lives in (its `ThreadKey` string)."""

    @abstractmethod
    async def load(self, run_id: str, start: int = 0) -> list[str]:
        """The run's events from index `start` on (all of them by default).

        Reading a tail costs the tail, not the log: fold incrementally from a known
        length instead of reloading everything."""

    @abstractmethod
    async def append(self, run_id: str, expected: int, events: list[str]) -> int:
        """Append if the log has exactly `expected` events; return the new length.

        Raises `ConflictError` otherwise, and `PermanentStoreError` for an unknown run.
        """

    @abstractmethod
    async def append_external(self, run_id: str, events: list[str], *,
                              key: str | None = None) -> int:
        """Append at the end of the log whatever its length; return the new length.

        For what comes from outside the run's driver (a person's reply, a button): no
        read first and no retry loop. Appends are atomic and land in the order they
        reach the store (calls made one after another from one process land in that
        order). A driver's later `append` with its old `expected` length raises
        `ConflictError`, so it reloads the tail. With `key` (the inbound event id, say)
        an append is done once: a repeat with the same key appends nothing and returns
        the length the first one produced, so a caller that lost the answer (a dropped
        connection) may retry safely. Raises `PermanentStoreError` for an unknown run.
        """

    @abstractmethod
    async def runs(self, limit: int = 20) -> list[RunInfo]:
        """Most recently updated runs first."""

    # -- one driver per run ------------------------------------------------
    @abstractmethod
    async def acquire_lease(self, run_id: str, owner: str, ttl: float) -> bool:
        """Take (or renew, if `owner` holds it) the run's lease for `ttl` seconds."""

    @abstractmethod
    async def release_lease(self, run_id: str, owner: str) -> None:
        """Give the lease up if `owner` holds it."""

    # -- runs that need driving --------------------------------------------
    @abstractmethod
    async def set_active(self, run_id: str, active: bool) -> None:
        """Mark a run as mid-turn (a process must drive it) or settled (waits for a person)."""

    @abstractmethod
    async def active_runs(self) -> list[str]:
        """Runs marked active: the ones to resume after a crash."""

    @abstractmethod
    async def set_deadline(self, run_id: str, at: float | None) -> None:
        """Wake the run at `at` (its time limit, while it waits for a person); None: never."""

    @abstractmethod
    async def due_runs(self, now: float, limit: int = 100, grace: float = 60.0) -> list[str]:
        """Runs whose deadline is at or before `now`, earliest first. Each goes to one
        caller: its deadline moves to `now + grace`, so a caller that dies before
        handling it hands it on; handling it sets a new deadline or clears it."""

    # -- keyed side effects -------------------------------------------------
    @abstractmethod
    async def get_post(self, key: str) -> str | None:
        """The platform message id recorded for an idempotency key."""

    @abstractmethod
    async def put_post(self, key: str, message_id: str) -> None:
        """Record that the post with this key succeeded as `message_id`."""

    @abstractmethod
    async def first_sight(self, event_id: str, ttl: float = 86400.0) -> bool:
        """True the first time an inbound event id is seen within `ttl`; False after."""

    # -- small adapter state (webhook ids, ...) -------------------------------
    @abstractmethod
    async def kv_get(self, namespace: str, key: str) -> str | None:
        """A value an adapter stored."""

    @abstractmethod
    async def kv_set(self, namespace: str, key: str, value: str) -> None:
        """Store a small value for an adapter."""

    @abstractmethod
    async def kv_delete(self, namespace: str, key: str) -> None:
        """Forget a value (nothing happens if there is none)."""

    @abstractmethod
    async def kv_items(self, namespace: str) -> dict[str, str]:
        """Every key and value of a namespace (meant for small ones, such as an inbox)."""

    # -- work queue: runs that need a worker --------------------------------
    # A store holds one queue per `queue` name: a worker reads only the queue of the
    # platforms it serves, so a Slack worker never takes (or drops) a Discord run's turn.
    @abstractmethod
    async def enqueue(self, run_id: str, queue: str = "") -> None:
        """Ask some worker reading `queue` to drive `run_id`."""

    @abstractmethod
    async def next_work(self, consumer: str, timeout: float, queue: str = ""
                        ) -> list[tuple[str, str]]:
        """Up to a few (receipt, run_id) pairs of `queue` for this consumer; [] after
        `timeout` seconds."""

    @abstractmethod
    async def ack_work(self, receipt: str) -> None:
        """The work named by `receipt` is done."""


def queued(submit: Callable[Concatenate[S, P], asyncio.Future[T]]
           ) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """A store method made of `submit`, which only queues an operation and hands back its
    future: awaited, it is an ordinary `async def` method; `soon` gets the future itself."""
    async def method(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        return await submit(self, *args, **kwargs)

    method.__name__, method.__qualname__ = submit.__name__, submit.__qualname__
    method.__doc__ = submit.__doc__
    method.soon = submit  # type: ignore[attr-defined]
    return method


def soon(call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
         ) -> asyncio.Future[T]:
    """`call(*args)` (a store's method) started now, for a caller that goes on and awaits
    it later: `asyncio.ensure_future(call(*args))`, without the task and its extra passes
    of the event loop when the method only queues an operation (`queued`). A method a
    subclass or a wrapper overrides is called as it is."""
    submit = getattr(getattr(call, "__func__", None), "soon", None)
    if submit is None:
        return asyncio.ensure_future(call(*args, **kwargs))
    try:
        return submit(call.__self__, *args, **kwargs)  # type: ignore[attr-defined,no-any-return]
    except Exception as exc:  # raised when awaited, as from the coroutine
        failed: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed
