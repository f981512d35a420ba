"""How many runs people may start: budgets the host enforces, not the team.

- Per person: at most `active_per_user` runs that have not finished (a run waiting a
  week for an approval still counts; a finished one does not).
- Per workspace or guild: at most `per_hour` summons in any sliding hour.

Counts live in the store (its small key-value space), so a restart forgets nothing.
One process decides one workspace's summons at a time; several processes sharing a
store may each admit one summon past a limit in the same instant (the counts are
read and written, not incremented atomically), never more.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .shapes import ThreadKey
from .stores.base import Store

__all__ = ["SummonGate", "SummonLimits"]

_NS = "limits"
_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class SummonLimits:
    """`THREADTEAM_MAX_ACTIVE_RUNS_PER_USER` and `THREADTEAM_MAX_RUNS_PER_HOUR`."""

    active_per_user: int = 3
    per_hour: int = 60


class SummonGate:
    """Admits or refuses a summon, and remembers the runs it admitted."""

    def __init__(self, store: Store, limits: SummonLimits, clock: Callable[[], float],
                 is_active: Callable[[str], Awaitable[bool]]) -> None:
        self.store, self.limits, self.clock, self.is_active = store, limits, clock, is_active
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, key: ThreadKey) -> asyncio.Lock:
        """Held around check-then-create, so one process never races itself past a limit."""
        place = f"{key.platform}:{key.workspace}"
        return self._locks.setdefault(place, asyncio.Lock())

    async def refusal(self, key: ThreadKey, user: str) -> str | None:
        """Why `user` may not start a run in `key`'s workspace now, or None."""
        mine = await self._active_runs(key, user)
        if len(mine) >= self.limits.active_per_user:
            n = self.limits.active_per_user
            return (f"You already have {len(mine)} active runs (the limit is {n} per person). "
                    f"Finish or `stop` one of them, then summon the team again.")
        recent = await self._recent(key)
        if len(recent) >= self.limits.per_hour:
            wait = max(1, int((min(recent) + _HOUR - self.clock()) // 60) + 1)
            return (f"This workspace has started {len(recent)} runs in the last hour (the limit "
                    f"is {self.limits.per_hour}). Try again in about {wait} min.")
        return None

    async def admitted(self, key: ThreadKey, user: str, run_id: str) -> None:
        """Count a run that was just created."""
        mine = await self._active_runs(key, user)
        await self.store.kv_set(_NS, self._user_key(key, user), json.dumps([*mine, run_id]))
        recent = await self._recent(key)
        await self.store.kv_set(_NS, self._hour_key(key), json.dumps([*recent, self.clock()]))

    async def _active_runs(self, key: ThreadKey, user: str) -> list[str]:
        raw = await self.store.kv_get(_NS, self._user_key(key, user))
        runs = json.loads(raw) if raw else []
        return [r for r in runs if await self.is_active(r)]

    async def _recent(self, key: ThreadKey) -> list[float]:
        raw = await self.store.kv_get(_NS, self._hour_key(key))
        since = self.clock() - _HOUR
        return [t for t in (json.loads(raw) if raw else []) if t > since]

    @staticmethod
    def _user_key(key: ThreadKey, user: str) -> str:
        return f"active:{key.platform}:{key.workspace}:{user}"

    @staticmethod
    def _hour_key(key: ThreadKey) -> str:
        return f"hour:{key.platform}:{key.workspace}"
