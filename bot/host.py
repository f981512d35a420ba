"""The host: turns what people do in threads into runs, and keeps the runs moving.

It is the adapters' one front door: `handle` an inbound event, `check_summon`,
`team_choices`, `thread_status`, `latest_run` and `resume`. Adapters never reach
the store or the runner; the host asks an adapter's `Directory` about people.

`handle()` never waits for a model: it de-duplicates the event, checks who may
do what, appends the person's event to the run's log and queues the run. A
worker loop takes queued runs and drives each until it waits for a person; a
waiting run holds no task and no memory — it is only rows in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.engine import (
    AssessProgress,
    AwaitApproval,
    AwaitHuman,
    AwaitPlanReview,
    CallModel,
    Delegate,
    ModelSource,
    Select,
    SelectWithModel,
    WriteAnswer,
    WritePlan,
    decide,
)
from threadteam.teams.events import (
    ApprovalDecided,
    Event,
    HumanMessage,
    PlanReviewed,
    PlanWritten,
    RunContinued,
    RunFinished,
    RunPaused,
    RunResumed,
    StopRequested,
    TaskStarted,
    from_json,
    to_json,
    try_from_json,
)
from threadteam.teams.state import RunState

from .commands import HELP, Command, parse_command
from .errors import ConflictError, PermanentStoreError, PlatformError, StoreError, transient
from .limits import SummonGate, SummonLimits
from .render import approval_key, approval_number, render
from .retry import RetryPolicy
from .runner import Runner
from .shapes import Directory, Handled, Inbound, Outbound, Poster, RunSummary, ThreadKey
from .stores.base import Store
from .telemetry import record_wait

log = logging.getLogger("threadteam.host")

#: How many runs' folded states the host keeps to answer replies without rereading logs,
#: and how many events they may hold in all: a fold holds its thread's whole transcript,
#: so a count alone let a few long runs keep a process's memory growing.
_FOLDS_KEPT = 512
_FOLD_EVENTS_KEPT = 20_000

_STEERING = ("continue", "retry", "stop")
#: The longest piece of a person's text the host repeats back in a public notice.
_ECHO_LIMIT = 64

__all__ = ["Host"]

#: How long one read of the work queue may block; also bounds how long aclose() takes.
_POLL = 0.25
#: How often the host looks for runs whose time limit has passed (seconds).
_TIMER_EVERY = 1.0
# A run the store failed under is tried again after 1 s, doubling each time it fails
# again, up to every 30 s.
STORE_RETRY = RetryPolicy(first_backoff=1.0, max_backoff=30.0)


class Host:
    """Hosts every run of one process; many processes may share one store."""

    def __init__(self, *, store: Store, catalog: TeamCatalog, models: ModelSource, poster: Poster,
                 directory: Directory | None = None, worker_id: str | None = None,
                 clock: Callable[[], float] = time.time, lease_ttl: float = 10.0,
                 limits: SummonLimits | None = None, platform: str | None = None,
                 adopt: bool = True, store_retry: RetryPolicy = STORE_RETRY) -> None:
        self.store, self.catalog, self.models, self.poster = store, catalog, models, poster
        self.directory = directory
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.runner = Runner(store=store, catalog=catalog, models=models, poster=poster,
                             owner=self.worker_id, clock=clock, lease_ttl=lease_ttl,
                             rehearsal_notice=self._rehearsal_notice, directory=directory)
        # A run belongs to the platform that started it: a host serving `platform` drives
        # only that platform's runs (None: any, for tests). `adopt`: also pick up the
        # platform's runs started elsewhere (resumed at start, swept after a crash); the
        # console adopts nothing, so a new `chat` shows only its own run.
        self.platform, self.adopt = platform, adopt
        self._queue = platform or ""
        self._own: set[str] = set()
        self._new: set[str] = set()  # runs created here and not yet driven
        self.gate = (SummonGate(store, limits, clock, self._is_active)
                     if limits is not None else None)
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._folds: dict[str, _Fold] = {}  # insertion order = least recently used first
        self._fold_events = 0  # the events the kept folds hold
        self._locks: dict[str, list[Any]] = {}
        self._again: set[str] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._outstanding = 0
        #: Set when work ends or a run starts waiting on a question: `idle` looks again.
        self._moved = asyncio.Event()
        self.runner.questions.on_open = self._moved.set
        self._closing = False
        #: Runs the store failed under (how many times in a row), and their retry timers.
        self._store_failed: dict[str, int] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._later: set[asyncio.Task[None]] = set()  # kept: the loop holds tasks weakly
        self.store_retry = store_retry
        self._queue_outage = _Outage("reading the work queue", 1.0)
        self._timer_outage = _Outage("checking run time limits", _TIMER_EVERY)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the worker loop and resume every run that was mid-turn when a process died."""
        # Runs keep many small long-lived objects and make next to no cyclic garbage; at
        # CPython's default threshold (700 new objects) the collector rescans them all the
        # time: a quarter of the CPU with 1,000 runs at once, and at 10,000 runs a
        # threshold of 10,000 still spent 30% of the CPU (18.6 s against 13.1 s for
        # `benchmarks/concurrency.py --runs 10000`). At 300,000 a turn's objects mostly
        # die before a collection looks at them: 10,000 runs took 8.2-8.5 s against
        # 8.9-9.6 s at 100,000, for the same peak memory (also in benchmarks/memory_fuzz.py).
        young, *older = gc.get_threshold()
        gc.set_threshold(max(young, 300_000), *older)
        self._loops = [asyncio.create_task(self._work_loop(), name="threadteam-work"),
                       asyncio.create_task(self._sweep_loop(), name="threadteam-sweep"),
                       asyncio.create_task(self._timer_loop(), name="threadteam-timers")]
        if self.adopt:
            for run_id in await self._mine(await self.store.active_runs()):
                log.info("resuming run %s", run_id)
                await self._enqueue(run_id)

    async def aclose(self) -> None:
        """Stop taking work; runs in flight stay marked active and resume on the next start."""
        self._closing = True
        for timer in self._retries.values():
            timer.cancel()
        # The work loop ends on its own after its current short read: cancelling a blocking
        # queue read mid-flight can leave a shared connection pool in a bad state.
        work, others = (self._loops[0], self._loops[1:]) if self._loops else (None, [])
        for t in [*others, *self._driving.values()]:
            t.cancel()
        for t in [*others, *self._driving.values(), *([work] if work else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.runner.aclose()  # MCP sessions and the servers this process started

    async def idle(self, limit: float = 30.0) -> None:
        """Wait until no turn this host queued or runs is left (one-process tests and scripts).

        With several hosts on one store another host may take this one's work; wait on
        the store or the thread instead.
        """
        deadline = time.monotonic() + limit
        while True:
            self._moved.clear()
            # A run whose tool call waits on a person's answer is waiting for a person too.
            if max(self._outstanding, len(self._driving)) <= self.runner.questions.open:
                return
            left = deadline - time.monotonic()
            if left < 0:
                raise TimeoutError(f"runs still busy: {sorted(self._driving)}")
            # Woken when something moves (a console waits here while a model thinks, and
            # polling woke it 200 times a second); the timeout is only a safety net.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.25)):
                    await self._moved.wait()

    # -- summoning ---------------------------------------------------------------------------
    def team_choices(self) -> list[tuple[str, str]]:
        """(name, description) of every team, for listings and autocomplete."""
        return self.catalog.choices()

    def check_summon(self, text: str) -> str | None:
        """None when `text` is `<team> <task>` with a known team; else the reply to show."""
        parts = text.strip().split(None, 1)
        if not parts:
            return "Summon a team with `<team> <task>`.\n" + self._team_list()
        team = self.catalog.get(parts[0])
        if team is None:
            return f"I don't know a team called {_echo(parts[0])}.\n" + self._team_list()
        if len(parts) < 2:
            return (f"Tell *{team.name}* what to work on: `{team.name} <task>`, for example "
                    f"`{team.name} Should we migrate billing to Postgres?`")
        return None

    def _team_list(self) -> str:
        lines = [f"• `{name}` — {desc}" for name, desc in self.catalog.choices()]
        example = self.catalog.names()[0] if self.catalog.names() else "debate"
        return "Teams:\n" + "\n".join(lines) + f"\nFor example: `{example} <task>`."

    # -- inbound ----------------------------------------------------------------------------
    async def handle(self, inbound: Inbound) -> Handled:
        """Take one thing a person did: append it to its run and queue the run."""
        if inbound.kind == "reply" and self.runner.questions.waiting(str(inbound.key)):
            word = parse_command(inbound.text)
            if word is None:
                answered = await self._answer_question(inbound)
                if answered is not None:
                    return answered
            elif word.word == "stop" and await self._may_answer(inbound):
                # The stop is in the log before the question is cancelled: the call that
                # was waiting ends, and its run, woken, finds itself stopped.
                handled = await self._take(inbound)
                self.runner.questions.answer(str(inbound.key), inbound.user, "cancel")
                return handled
        return await self._take(inbound)

    async def _take(self, inbound: Inbound) -> Handled:
        if inbound.kind == "reply" and parse_command(inbound.text) is None:
            # A plain message: its append is keyed by the event id (a re-delivery appends
            # nothing), so it is not marked seen before it is safely stored.
            run_id = await self.store.run_for_thread(str(inbound.key))
            return await self._on_run(run_id, inbound) if run_id is not None else Handled()
        if inbound.kind == "summon":
            # Marked seen only once its run exists: a crash in between must not turn the
            # platform's re-delivery into "already seen" with no run.
            handled = await self._summon(inbound)
            await self.store.first_sight(inbound.event_id)
            return handled
        if not await self.store.first_sight(inbound.event_id):
            return Handled()
        run_id = await self.store.run_for_thread(str(inbound.key))
        if run_id is None:
            return Handled()  # a thread without a run is none of our business
        return await self._on_run(run_id, inbound)

    async def _may_answer(self, inbound: Inbound) -> bool:
        """Whether the person may answer the question a tool call in their thread waits on."""
        questions, thread = self.runner.questions, str(inbound.key)
        if questions.may_answer(thread, inbound.user, inbound.roles):
            return True
        roles: tuple[str, ...] = ()
        if self.directory is not None and not inbound.roles:
            with contextlib.suppress(Exception):
                roles = tuple(await self.directory.roles(inbound.key, inbound.user))
        return questions.may_answer(thread, inbound.user, roles)

    async def _answer_question(self, inbound: Inbound) -> Handled | None:
        """An approver's reply to the question a tool call waits on; None when the person
        may not answer it (their reply is then an ordinary message of the run)."""
        questions, thread = self.runner.questions, str(inbound.key)
        if not await self._may_answer(inbound):
            return None
        if not await self.store.first_sight(inbound.event_id):
            return Handled()
        problem = questions.answer(thread, inbound.user, inbound.text)
        return Handled(private=problem) if problem else Handled(taken=True)

    async def thread_status(self, key: ThreadKey) -> str | None:
        """The status of the run living in `key` (`running`, `awaiting_human`, ...), or
        None when the thread has no run."""
        run_id = await self.store.run_for_thread(str(key))
        if run_id is None:
            return None
        fold = await self._current(run_id)
        if fold is not None and self.runner.questions.waiting(str(key)):
            return "awaiting_human"  # a tool call waits on a person's answer
        return fold.state.status if fold is not None else "finished"

    async def open_threads(self, within: float = 7 * 86400.0, limit: int = 1000
                           ) -> list[ThreadKey]:
        """The threads of this host's platform whose runs are not finished and moved in the
        last `within` seconds, newest first (for an adapter that must read what people
        wrote there while it was disconnected)."""
        since = self.clock() - within
        recent = [info for info in await self.store.runs(limit=limit)
                  if info.updated_at >= since and info.length > 0 and (
                      self.platform is None or info.thread.startswith(self.platform + ":"))]
        # Asked on every reconnect: each run's last event says whether it finished, which
        # reads one event, not the log, and keeps the host's folds for the runs in use.
        keys: list[ThreadKey] = []
        for start in range(0, len(recent), 50):
            batch = recent[start:start + 50]
            tails = await asyncio.gather(*(self.store.load(i.run_id, i.length - 1) for i in batch))
            keys.extend(ThreadKey.parse(info.thread) for info, tail in zip(batch, tails, strict=True)
                        if tail and not isinstance(try_from_json(tail[-1]), RunFinished))
        return keys

    async def latest_run(self, platform: str, run_id: str | None = None) -> RunSummary | None:
        """The most recent run of `platform` (or its run `run_id`) whose team is known."""
        for info in await self.store.runs(limit=200):
            if run_id is not None and not info.run_id.startswith((run_id, f"{platform}.{run_id}")):
                continue
            if not info.thread.startswith(platform + ":"):
                continue
            loaded = await self.runner.load(info.run_id)
            if loaded is not None:
                state = loaded.state
                pending = tuple(out for c in state.pending_approvals()
                                if (out := render(state, c.request, 0, loaded.key, info.run_id,
                                                  self.poster.mention)) is not None)
                if state.magentic is not None and state.magentic.awaiting_review:
                    # The plan waiting for the person's review, shown again with the requests.
                    seq = max(i for i, e in enumerate(loaded.events) if isinstance(e, PlanWritten))
                    plan = render(state, loaded.events[seq], seq, loaded.key, info.run_id,
                                  self.poster.mention)
                    pending += (plan,) if plan is not None else ()
                return RunSummary(info.run_id, loaded.key, state.team.name, state.task,
                                  state.status, self.status_text(state).splitlines()[0], pending)
            stuck = self.runner.why_stuck(info.run_id)
            if stuck is None:
                continue  # gone
            start, why = stuck.start, stuck.why
            if start is None:
                return RunSummary(info.run_id, ThreadKey.parse(info.thread), "?", "?",
                                  "unloadable", why)
            if self.catalog.get(start.team) is None:  # say what would load it
                where = (f" from {start.team_file}; pass --teams-dir "
                         f"{os.path.dirname(start.team_file) or '.'}") if start.team_file else ""
                why = f"its team {start.team!r} is not loaded{where}"
            return RunSummary(info.run_id, ThreadKey.parse(info.thread), start.team,
                              start.task, "unloadable", why)
        return None

    async def _summon(self, inbound: Inbound) -> Handled:
        problem = self.check_summon(inbound.text)
        if problem is not None:
            await self.runner.deliver(Outbound(inbound.key, problem, f"summon:{inbound.event_id}",
                                               notice=True))
            return Handled()
        if self.gate is None:
            return await self._start_run(inbound)
        async with self.gate.lock(inbound.key):
            refusal = await self.gate.refusal(inbound.key, inbound.user)
            if refusal is not None:
                log.info("summon by %s in %s refused: %s", inbound.user, inbound.key, refusal)
                return Handled(private=refusal)
            return await self._start_run(inbound)

    async def _start_run(self, inbound: Inbound) -> Handled:
        name, task = inbound.text.strip().split(None, 1)
        team = self.catalog.get(name)
        assert team is not None
        run_id = f"{inbound.key.platform}.{uuid.uuid4().hex}"
        team_file = "" if team.source.startswith("builtin:") else team.source
        started = TaskStarted(team=team.name, task=task.strip(), by=inbound.user,
                              approvers=team.approvers or (inbound.user,), team_file=team_file,
                              at=self.clock())
        if not await self.store.create_run(run_id, str(inbound.key), [to_json(started)]):
            existing = await self.store.run_for_thread(str(inbound.key))
            fold = await self._current(existing) if existing else None
            if fold is None or (fold.state.by == inbound.user
                                and fold.state.task == started.task):
                return Handled()  # this very summon again (a re-delivery, or its twin event)
            return await self._on_run(existing, inbound) if existing else Handled()
        log.info("run %s started: team=%s thread=%s", run_id, team.name, inbound.key)
        if len(self._new) > 10_000:  # runs other workers took: this process will not drive them
            self._new.clear()
        self._new.add(run_id)
        if self.gate is not None:
            await self.gate.admitted(inbound.key, inbound.user, run_id)
        await self._enqueue(run_id)
        return Handled(taken=True)

    async def _is_active(self, run_id: str) -> bool:
        loaded = await self.runner.load(run_id)
        return loaded is not None and loaded.state.finished is None

    async def _on_run(self, run_id: str, inbound: Inbound) -> Handled:
        """Interpret what a person did against the run's current state and append it.

        One inbound event of a run at a time in this process (a per-run lock), each
        against a fold that is kept and brought up to date from the log's tail. A plain
        message is appended whatever the log's length (it needs no decision, and an
        acked message is never dropped); a command's events are appended only onto the
        state they were decided on, and decided again if the run moved meanwhile.
        """
        cmd = (Command(inbound.action or "", None, "") if inbound.kind == "button"
               else parse_command(inbound.text))
        async with self._run_lock(run_id):
            for _ in range(50):
                fold = await self._current(run_id)
                if fold is None:
                    return await self._on_stuck_run(run_id, inbound, cmd)
                state = fold.state
                roles = await self._roles_for(state, inbound, cmd)
                seen = await self._seen_requests(run_id, state, inbound, cmd)
                events, public, private = self._interpret(state, inbound, cmd, roles, seen)
                if events:
                    raw = [to_json(e) for e in events]
                    if all(isinstance(e, HumanMessage) for e in events):
                        await self.store.append_external(run_id, raw, key=inbound.event_id)
                    else:
                        if cmd is None and not await self.store.first_sight(inbound.event_id):
                            return Handled()  # a plain reply that became a command's events
                        try:
                            await self.store.append(run_id, state.length, raw)
                        except ConflictError:
                            continue  # the driver appended first: decide again on its result
                    self._record_wait(state, fold.key, run_id, fold.last_at)
                    # Active before the platform hears "taken": a crash now resumes the run
                    # (the embedded store's work queue does not outlive the process).
                    await self.store.set_active(run_id, True)
                    await self._enqueue(run_id)
                if public:
                    await self.runner.deliver(Outbound(fold.key, public,
                                                       f"reply:{inbound.event_id}", notice=True))
                return Handled(private, any(isinstance(e, HumanMessage | PlanReviewed)
                                            for e in events))
        log.warning("run %s: %s by %s lost 50 races with the run's driver", run_id,
                    cmd.word if cmd else "a reply", inbound.user)
        return Handled(private="The run was too busy to take that just now; nothing was "
                               "changed. Please send it again.")

    async def _on_stuck_run(self, run_id: str, inbound: Inbound, cmd: Command | None
                            ) -> Handled:
        """What a person did in the thread of a run that cannot be loaded here (its team
        is gone, say): a message is kept in the run's log for the team to read once the run
        loads again, and the thread is told once why the run is stuck; a command changes
        nothing, and says why."""
        stuck = self.runner.why_stuck(run_id)
        if stuck is None:
            return Handled()  # the run is gone
        said = f"This run cannot go on: {stuck.why}."
        if cmd is None:
            msg = HumanMessage(user=inbound.user, text=inbound.text,
                               display_name=inbound.display_name, at=self.clock())
            await self.store.append_external(run_id, [to_json(msg)], key=inbound.event_id)
            await self.runner.deliver(Outbound(
                inbound.key, f"{said} Your message is kept: once the bot's operator has fixed "
                             "that, your next message here picks the run up again, this one "
                             "with it.",
                f"{run_id}:stuck:{zlib.crc32(stuck.why.encode())}", notice=True))
            return Handled(taken=True)
        if cmd.word in ("help", "status"):
            await self.runner.deliver(Outbound(inbound.key, HELP if cmd.word == "help" else said,
                                               f"reply:{inbound.event_id}", notice=True))
            return Handled()
        return Handled(private=f"{said} Nothing was changed.")

    def _run_lock(self, run_id: str) -> _RunLock:
        return _RunLock(self._locks, run_id)

    async def _current(self, run_id: str) -> _Fold | None:
        """The run's state now: a kept fold brought up to date from the log's tail (the
        whole log is read and folded only the first time, or after eviction)."""
        fold = self._folds.pop(run_id, None)
        if fold is not None:
            self._fold_events -= fold.state.length
        if fold is None:
            loaded = await self.runner.load(run_id)
            if loaded is None:
                return None
            fold = _Fold(loaded.key, loaded.state,
                         loaded.events[-1].at if loaded.events else 0.0)
        else:
            try:
                for raw in await self.store.load(run_id, fold.state.length):
                    e = from_json(raw)
                    fold.state.apply(e)
                    fold.last_at = e.at
            except (KeyError, ValueError):  # the team changed under the run: fold afresh
                return await self._current(run_id)
        self._folds[run_id] = fold
        self._fold_events += fold.state.length
        while len(self._folds) > 1 and (len(self._folds) > _FOLDS_KEPT
                                         or self._fold_events > _FOLD_EVENTS_KEPT):
            self._fold_events -= self._folds.pop(next(iter(self._folds))).state.length
        return fold

    async def _roles_for(self, state: RunState, inbound: Inbound, cmd: Command | None
                         ) -> tuple[str, ...]:
        """The person's role labels, asked of the directory only for an approval attempt
        in a run that names `role:` approvers, by someone not named as a person."""
        needs = state.approvers.needs_roles or (
            cmd is not None and cmd.word == "stop" and state.team.stoppers.needs_roles)
        if inbound.roles or self.directory is None or not needs:
            return inbound.roles
        deciding = (cmd is not None and cmd.word in ("approve", "deny", *_STEERING)) or (
            cmd is None and state.magentic is not None and state.magentic.awaiting_review)
        if inbound.user in state.approvers.people or inbound.user == state.by or not deciding:
            return inbound.roles
        try:
            return tuple(await self.directory.roles(inbound.key, inbound.user))
        except Exception:
            log.exception("looking up the roles of %s failed; treating as none", inbound.user)
            return ()

    async def _seen_requests(self, run_id: str, state: RunState, inbound: Inbound,
                             cmd: Command | None) -> set[str] | None:
        """For a bare `approve`/`deny`: the pending requests posted before the person wrote
        it (the only ones they can mean). None when the reply names its request."""
        if inbound.kind == "button" or cmd is None or cmd.word not in ("approve", "deny") \
                or cmd.number is not None:
            return None
        posted_at = getattr(self.poster, "posted_at", None)
        seen = set()
        for call in state.pending_approvals():
            message_id = await self.store.get_post(approval_key(run_id, call.request.call_id))
            if message_id is None:
                continue  # not posted yet: nobody has seen it
            when = posted_at(message_id) if posted_at is not None else None
            if when is not None and inbound.sent_at is not None and when > inbound.sent_at:
                continue
            seen.add(call.request.call_id)
        return seen

    def _interpret(self, state: RunState, inbound: Inbound, cmd: Command | None,
                   roles: tuple[str, ...], seen: set[str] | None = None
                   ) -> tuple[list[Event], str, str | None]:
        """(events to append, a reply for the thread, a reply only the person sees)."""
        now, user = self.clock(), inbound.user
        if inbound.kind == "button":
            assert cmd is not None
            return self._decide(state, inbound, cmd, inbound.call_id, roles)
        review = self._review_plan(state, inbound, cmd, roles)
        if review is not None:
            return review
        if cmd is None or (inbound.kind == "summon"):
            return self._message(state, inbound, inbound.text)
        word, rest = cmd.word, cmd.rest
        if word == "help":
            return [], HELP, None
        if word == "status":
            return [], self.status_text(state), None
        if word in _STEERING and not self._may_steer(state, user, roles, word):
            if word == "continue" and rest and state.finished is None and state.paused is None:
                return self._message(state, inbound, rest)  # just words for a running team
            return [], "", self._who_may_steer(state, word)
        if word == "stop":
            if state.finished is not None:
                return [], "This run has already finished. `continue` starts it again.", None
            return [StopRequested(by=user, at=now)], "", None
        if word == "continue" and state.budget_spent:
            return [], "", (f"This run has spent its budget of {state.team.budget_tokens:,} "
                            f"tokens ({state.tokens_used:,} used), so it cannot go on. Start a "
                            f"new run, or raise `budget:` in the team file.")
        if word == "continue":
            if state.finished is not None:
                return [RunContinued(by=user, instructions=rest, at=now)], "", None
            if state.paused is not None:
                extra = [HumanMessage(user=user, text=rest, display_name=inbound.display_name,
                                      at=now)] if rest else []
                return [*extra, RunResumed(by=user, at=now)], "", None
            if rest:
                return self._message(state, inbound, rest)
            return [], "The team is still at work; nothing to continue.", None
        if word == "retry":
            if state.paused is None:
                return [], f"Nothing to retry: the run is {self._status_word(state)}.", None
            return [RunResumed(by=user, at=now)], "", None
        return self._decide(state, inbound, cmd, None, roles, seen)

    def _may_steer(self, state: RunState, user: str, roles: tuple[str, ...], word: str) -> bool:
        """The summoner and the approvers steer a run; `stop` is also open to its stoppers."""
        return state.may_stop(user, roles) if word == "stop" else state.may_steer(user, roles)

    def _who_may_steer(self, state: RunState, word: str) -> str:
        rule = state.approvers
        who = [self.poster.mention(state.by),
               *(self.poster.mention(p) for p in rule.people if p != state.by),
               *(f"members of {r}" for r in rule.roles)]
        stoppers = state.team.stoppers
        if word == "stop":
            who += [*(self.poster.mention(p) for p in stoppers.people if p not in who),
                    *(f"members of {r}" for r in stoppers.roles)]
        names = ", ".join(who[:-1]) + f" or {who[-1]}" if len(who) > 1 else who[0]
        return f"Sorry, only {names} can `{word}` this run; nothing was changed."

    def _message(self, state: RunState, inbound: Inbound, text: str
                 ) -> tuple[list[Event], str, str | None]:
        now = self.clock()
        msg = HumanMessage(user=inbound.user, text=text, display_name=inbound.display_name, at=now)
        if state.finished is None:
            return [msg], "", None
        if state.handoff_target in state.team.humans:  # the team handed off to the person: go on
            return [RunContinued(by=inbound.user, at=now), msg], "", None
        return [msg], ("This run has finished; your message is kept. Reply `continue` to have the "
                       "team pick it up."), None

    def _decide(self, state: RunState, inbound: Inbound, cmd: Command, call_id: str | None,
                roles: tuple[str, ...], seen: set[str] | None = None
                ) -> tuple[list[Event], str, str | None]:
        approve = cmd.word in ("approve", "approve_always")
        always = cmd.always or cmd.word == "approve_always"
        reason, now = cmd.rest, self.clock()
        if call_id is not None and call_id in state.calls \
                and state.calls[call_id].status == "expired":
            return [], "", "That request expired before anyone decided it; nothing was changed."
        pending = state.pending_approvals()
        if seen is not None and pending:  # a bare word: only what the person could have seen
            visible = [c for c in pending if c.request.call_id in seen]
            if not visible:
                nums = ", ".join(f"#{approval_number(state, c.request.call_id)}" for c in pending)
                return [], "", (f"Your `{cmd.word}` was written before request {nums} was "
                                f"posted, so it was not applied. Reply `{cmd.word} <number>` "
                                f"to decide it.")
            if len(visible) < len(pending) and len(visible) == 1:
                pending = visible
        if call_id is not None:
            chosen = [c for c in pending if c.request.call_id == call_id]
            if not chosen:
                return [], "", "That request has already been decided."
        elif not pending:
            return [], "Nothing is waiting for approval.", None
        elif cmd.number is not None:
            chosen = [c for c in pending if approval_number(state, c.request.call_id) == cmd.number]
            if not chosen:
                nums = ", ".join(f"#{approval_number(state, c.request.call_id)}" for c in pending)
                return [], f"There is no pending approval #{cmd.number}. Pending: {nums}.", None
        elif len(pending) > 1:
            listing = "; ".join(f"#{approval_number(state, c.request.call_id)} `{c.request.tool}`"
                                for c in pending)
            return [], (f"Several approvals are pending ({listing}). Reply `{cmd.word} <number>`."
                        ), None
        else:
            chosen = pending
        call = chosen[0]
        n = approval_number(state, call.request.call_id)
        if not state.may_approve(inbound.user, roles):
            rule = state.approvers
            who = ", ".join([*(self.poster.mention(p) for p in rule.people
                               if p != state.by or state.team.approval.summoner_may_approve),
                             *(f"members of {r}" for r in rule.roles)]) or "the approvers"
            four_eyes = (" (whoever summoned a run does not approve its actions)"
                         if inbound.user == state.by else "")
            return [], "", (f"Sorry, only {who} can approve or deny this run's "
                            f"actions{four_eyes}; nothing was changed.")
        if call.expires_at is not None and now >= call.expires_at:
            return [], "", f"Request #{n} has expired; nothing was changed."
        quorum = state.team.approval.quorum
        if approve and inbound.user in call.approved_by:
            more = quorum - len(call.approved_by)
            return [], "", (f"You have already approved #{n}; it needs {more} more "
                            f"approval{'s' if more != 1 else ''} from someone else.")
        if always:
            tool = state.team.by_name[call.request.agent].tool(call.request.tool)
            if tool is not None and tool.pinned:
                return [], "", (f"`{call.request.tool}` cannot be approved for the rest of the "
                                f"run: each use needs its own approval here. Reply "
                                f"`approve {n}`.")
            if not state.may_approve_always(inbound.user, roles):
                return [], "", (f"`approve always` is not available in this run: its actions "
                                f"need {quorum} approvers each. Reply `approve {n}`.")
            return state.approve_always(call.request.tool, by=inbound.user, at=now), "", None
        decided = ApprovalDecided(call_id=call.request.call_id, approved=approve,
                                  by=inbound.user, reason=reason, at=now)
        public = ""
        if approve and len(call.approved_by) + 1 < quorum:
            more = quorum - len(call.approved_by) - 1
            public = (f"Approval #{n}: {self.poster.mention(inbound.user)} approved "
                      f"({len(call.approved_by) + 1} of {quorum}); {more} more "
                      f"approval{'s' if more != 1 else ''} needed.")
        return [decided], public, None

    def _review_plan(self, state: RunState, inbound: Inbound, cmd: Command | None,
                     roles: tuple[str, ...]) -> tuple[list[Event], str, str | None] | None:
        """While a magentic plan waits for review: the summoner's or an approver's `approve`,
        or their words as changes to fold into a new plan. Anyone else's `approve` changes
        nothing; their words are an interjection (None: not a review)."""
        m = state.magentic
        if m is None or not m.awaiting_review or state.finished is not None \
                or state.paused is not None or inbound.kind == "summon":
            return None
        if cmd is not None and cmd.word != "approve":
            return None
        if not state.may_steer(inbound.user, roles):
            return None if cmd is None else ([], "", self._who_may_steer(state, "approve"))
        return [PlanReviewed(revision=m.revision, by=inbound.user, approved=cmd is not None,
                             changes="" if cmd is not None else inbound.text,
                             display_name=inbound.display_name, at=self.clock())], "", None

    # -- status -------------------------------------------------------------------------------
    def _status_word(self, state: RunState) -> str:
        return {"running": "running", "awaiting_human": "waiting for a reply",
                "awaiting_approval": "waiting for approval", "paused": "paused",
                "finished": "finished"}[state.status]

    def status_text(self, state: RunState) -> str:
        """Who speaks next, what is pending, and what the run has used."""
        team = state.team
        lines = [f"*{team.name}* — {self._status_word(state)}"]
        if state.finished:
            lines[0] += f" ({state.finished})"
        if state.paused:
            lines[0] += f" ({state.paused})"
        action = decide(state)
        if isinstance(action, CallModel | Select):
            agent = team.by_name[action.agent]
            model = "" if agent.human else \
                f" on {self.models.resolve_name(agent.model, team.model)}"
            lines.append(f"Next: {agent.persona.display_name}{model}")
        elif isinstance(action, SelectWithModel):
            lines.append(f"Next: chosen by the selector among {', '.join(action.candidates)}")
        elif isinstance(action, AwaitHuman):
            lines.append(f"Waiting for: {self.poster.mention(state.by)} (or anyone in the thread)")
        lines += self._orchestration_status(state, action)
        if isinstance(action, AwaitApproval) or state.pending_approvals():
            for c in state.pending_approvals():
                who = team.by_name[c.request.agent].persona.display_name
                lines.append(f"Pending approval #{approval_number(state, c.request.call_id)}: "
                             f"{who} wants `{c.request.tool}`")
        u = state.usage
        cached = f" ({u.cached_input_tokens:,} from the prompt cache)" if u.cached_input_tokens else ""
        lines.append(f"Messages: {state.messages} · tokens: {u.input_tokens:,} in{cached} / "
                     f"{u.output_tokens:,} out")
        return "\n".join(lines)

    def _orchestration_status(self, state: RunState, action: object) -> list[str]:
        """A magentic run's plan, its stall count and what the orchestrator does next."""
        m, spec = state.magentic, state.team.orchestrator
        if m is None or spec is None:
            return []
        lines = []
        if isinstance(action, AwaitPlanReview):
            lines.append(f"Waiting for: {self.poster.mention(state.by)} (or an approver) to "
                         f"reply `approve` to plan {action.revision}, or write what to change")
        elif isinstance(action, Delegate):
            lines.append(f"Next: {state.team.by_name[action.agent].persona.display_name} "
                         f"(chosen by the orchestrator)")
        elif isinstance(action, AssessProgress):
            lines.append("Next: the orchestrator checks progress and picks who speaks")
        elif isinstance(action, WritePlan | WriteAnswer):
            what = "the final answer" if isinstance(action, WriteAnswer) else \
                f"plan {m.revision + 1}"
            lines.append(f"Next: the orchestrator writes {what}")
        if m.revision:
            body = m.plans[m.revision].plan.replace("```", "`\u200b``")
            lines.append(f"Plan {m.revision}:\n```\n{body}\n```")
        lines.append(f"Stalls: {m.stalls} of {spec.max_stalls} · new plans: {m.resets} of "
                     f"{spec.max_resets}")
        return lines

    def _rehearsal_notice(self, state: RunState) -> str:
        team = state.team
        names = {self.models.resolve_name(a.model, team.model) for a in team.agents if not a.human}
        auto = getattr(self.models, "auto_rehearsal", lambda: True)()
        if "rehearsal" in names and auto:
            return ("_No model is configured (set OPENAI_API_KEY or ANTHROPIC_API_KEY, or "
                    "THREADTEAM_MODEL), so the agents answer with rehearsal text._")
        return ""

    def _record_wait(self, state: RunState, key: ThreadKey, run_id: str, since: float) -> None:
        status = state.status
        if status in ("awaiting_human", "awaiting_approval") and since:
            what = "person" if status == "awaiting_human" else "approval"
            record_wait(what, str(key), run_id, since, self.clock())

    # -- the work loop ----------------------------------------------------------------------
    async def _enqueue(self, run_id: str, *, counted: bool = False) -> None:
        """Queue a turn of `run_id`; `counted`: idle() already knows it is coming."""
        if not counted:
            self._outstanding += 1
        try:
            self._own.add(run_id)
            await self.store.enqueue(run_id, self._queue)
        except BaseException:
            self._done_one()
            raise

    async def resume(self, run_id: str) -> None:
        """Ask for a turn of `run_id` now (a run picked up again by hand)."""
        await self._enqueue(run_id)

    async def _work_loop(self) -> None:
        while not self._closing:
            try:
                items = await self.store.next_work(self.worker_id, _POLL, self._queue)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._queue_outage.failed(exc)
                await asyncio.sleep(1.0)
                continue
            self._queue_outage.passed()
            for receipt, run_id in items:
                if self.platform is not None and not await self._mine_by_platform(run_id):
                    log.warning("run %s belongs to another platform than %s; not driving it",
                                run_id, self.platform)
                    self._done_one()
                    await self._ack(receipt, run_id)
                    continue
                if run_id in self._driving:
                    self._again.add(run_id)
                    self._done_one()
                    await self._ack(receipt, run_id)
                    continue
                self._driving[run_id] = asyncio.create_task(self._drive(run_id, receipt))

    async def _ack(self, receipt: str, run_id: str) -> bool:
        """Acknowledge a queue item; a failure only means it comes back (turns are
        idempotent), so it is logged and never ends the loop that asked."""
        try:
            await self.store.ack_work(receipt)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("run %s: acknowledging its queue item failed; it will come back",
                        run_id, exc_info=not transient(exc))
            return False

    async def _drive(self, run_id: str, receipt: str) -> None:
        acked = False
        try:
            while True:
                self._again.discard(run_id)
                try:
                    # On a shared store another process may have driven (and posted for) it.
                    first = run_id in self._new and not self.store.shared
                    self._new.discard(run_id)
                    got = await self.runner.drive(run_id, first=first)
                    self._store_failed.pop(run_id, None)
                except asyncio.CancelledError:
                    raise
                except PermanentStoreError as exc:
                    await self._park(run_id, exc)
                    got = True
                except StoreError as exc:
                    if isinstance(exc, ConflictError):  # the runner settles its own
                        log.exception("run %s: driving failed", run_id)
                    else:
                        await self._wait_for_store(run_id, exc)
                    got = True
                except PlatformError as exc:
                    await self._pause_for_platform(run_id, exc)
                    got = True
                except Exception:
                    log.exception("run %s: driving failed", run_id)
                    got = True
                if not got:  # another process holds the lease (or held it, and died): ask again
                    self._outstanding += 1  # now, so idle() does not see a gap until then
                    asyncio.get_running_loop().call_later(
                        min(0.5, self.lease_ttl / 4),
                        lambda: self._soon(self._enqueue(run_id, counted=True)))
                if run_id in self._again:
                    continue
                if not acked:
                    await self._ack(receipt, run_id)
                    acked = True
                # Work for this run that arrived during the ack was handed to this task
                # (it was still registered as driving it): do it rather than drop it.
                if run_id not in self._again:
                    break
        finally:
            self._driving.pop(run_id, None)
            self._done_one()

    async def _park(self, run_id: str, exc: PermanentStoreError) -> None:
        """A store error retrying will not cure: stop driving the run (the sweep would
        drive it again for ever) and say so in its thread, once."""
        log.error("run %s: the store refused it for good (%s); the run is paused", run_id, exc)
        try:
            await self.store.set_active(run_id, False)
            thread = await self.store.thread_of(run_id)
            if thread is not None:
                await self.runner.deliver(Outbound(
                    ThreadKey.parse(thread),
                    "This run hit a storage error that trying again will not fix, so it is "
                    "paused (the details are in the bot's log). Once an operator has fixed "
                    "the store, write in this thread to pick it up again.", f"{run_id}:parked", notice=True))
        except Exception:
            log.exception("run %s: could not pause it after a store error", run_id)

    async def _wait_for_store(self, run_id: str, exc: StoreError) -> None:
        """A store failure that may pass (a full disk, an unreachable or locked store): the
        run is tried again after a while, backing off, and its thread is told once that it
        waits (nothing it did is lost: its log holds every turn up to the failure)."""
        tries = self._store_failed.get(run_id, 0) + 1
        self._store_failed[run_id] = tries
        delay = self.store_retry.jittered(tries)
        log.warning("run %s: the store failed (%s); trying the run again in %.2f s", run_id,
                    exc, delay)
        loop = asyncio.get_running_loop()
        self._retries[run_id] = loop.call_later(
            delay, lambda: self._soon(self._retry(run_id)))
        if tries > 1:
            return
        try:
            fold = self._folds.get(run_id)
            thread = str(fold.key) if fold is not None else await self.store.thread_of(run_id)
            if thread is None:
                return
            # Said once an hour at most, whoever drives the run, where the store still
            # keeps the record; once by each process that tries the run where it does not.
            await self.runner.deliver(Outbound(
                ThreadKey.parse(thread),
                "This run is held up: the bot's store failed (the details are in the bot's "
                "log). Everything up to here is kept, and the run goes on by itself once the "
                "store works again.", f"{run_id}:store-failed:{int(self.clock() // 3600)}",
                notice=True), store_may_fail=True)
        except Exception:
            log.warning("run %s: could not say in its thread that it waits for the store",
                        run_id, exc_info=True)

    def _soon(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task of its own, kept until it is done."""
        task = asyncio.ensure_future(work)
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _retry(self, run_id: str) -> None:
        """Try a run again after a store failure (a failure to queue it backs off too)."""
        self._retries.pop(run_id, None)
        if self._closing or run_id in self._driving:
            return
        try:
            await self._enqueue(run_id)
        except StoreError as exc:  # queued in the store: its failure backs off the same way
            await self._wait_for_store(run_id, exc)

    async def _mine(self, run_ids: list[str]) -> list[str]:
        """The runs among `run_ids` this host may drive: its platform's (a run id starts
        with its platform; older ids are looked up), and with `adopt` off only those it
        was handed in this process."""
        if not self.adopt:
            return [r for r in run_ids if r in self._own]
        return [r for r in run_ids if await self._mine_by_platform(r)]

    async def _mine_by_platform(self, run_id: str) -> bool:
        if self.platform is None:
            return True
        platform, dot, _ = run_id.partition(".")
        if not dot:
            thread = await self.store.thread_of(run_id)
            platform = thread.split(":", 1)[0] if thread else ""
        return platform == self.platform

    async def _pause_for_platform(self, run_id: str, exc: PlatformError) -> None:
        """The platform refused a post after its retries: pause the run, say why in the
        thread if the platform lets us, and wait for `retry` (not loop on the refusal)."""
        log.warning("run %s: the platform refused a post (%s); pausing the run", run_id, exc)
        try:
            fold = await self._current(run_id)
            if fold is None or fold.state.paused is not None or fold.state.finished is not None:
                await self.store.set_active(run_id, False)
                return
            paused = RunPaused(reason=str(exc), at=self.clock())
            length = await self.store.append_external(run_id, [to_json(paused)])
            await self.store.set_active(run_id, False)
            fold = await self._current(run_id)
            if fold is not None:
                out = render(fold.state, paused, length - 1, fold.key, run_id,
                             self.poster.mention)
                if out is not None:
                    await self.runner.deliver(out)
        except Exception:
            log.warning("run %s: could not say in its thread that it is paused", run_id,
                        exc_info=True)

    def _done_one(self) -> None:
        self._outstanding = max(0, self._outstanding - 1)
        self._moved.set()

    async def _timer_loop(self) -> None:
        """Wake runs whose `timeout:` passed while they waited for a person."""
        while not self._closing:
            await asyncio.sleep(_TIMER_EVERY)
            try:
                for run_id in await self._mine(await self.store.due_runs(self.clock())):
                    log.info("run %s: its time limit has passed", run_id)
                    await self._enqueue(run_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._timer_outage.failed(exc)
            else:
                self._timer_outage.passed()

    async def _sweep_loop(self) -> None:
        """Pick up runs whose driver died (their lease expired) in a multi-process setup."""
        while not self._closing:
            await asyncio.sleep(self.lease_ttl)
            with contextlib.suppress(Exception):
                if not self.adopt:
                    continue
                for run_id in await self._mine(await self.store.active_runs()):
                    if run_id not in self._driving:
                        await self.store.enqueue(run_id, self._queue)


class _Outage:
    """A loop's store outage, logged in one line when it begins and when it ends rather
    than with a traceback on every try; any other failure is logged in full each time."""

    def __init__(self, what: str, every: float) -> None:
        self.what, self.every = what, every
        self.since: float | None = None  # when the outage began (monotonic)

    def failed(self, exc: BaseException) -> None:
        if not transient(exc):
            log.error("%s failed; trying again", self.what, exc_info=exc)
        elif self.since is None:
            self.since = time.monotonic()
            log.warning("%s failed (%s); trying again every %g s until the store works",
                        self.what, exc, self.every)
        else:
            log.debug("%s failed again (%s)", self.what, exc)

    def passed(self) -> None:
        if self.since is not None:
            log.info("%s works again, after %.0f s", self.what, time.monotonic() - self.since)
            self.since = None


def _echo(text: str) -> str:
    """A person's words, repeated in a public notice: in a code span they cannot leave,
    on one line, at most `_ECHO_LIMIT` characters."""
    flat = " ".join(text.replace("`", "'").split())
    if len(flat) > _ECHO_LIMIT:
        flat = flat[: _ECHO_LIMIT - 1] + "…"
    return f"`{flat}`"


@dataclass(slots=True)
class _Fold:
    """A run's folded state as the host last saw it."""

    key: ThreadKey
    state: RunState
    last_at: float


class _RunLock:
    """One holder per run at a time; the entry goes when nobody holds or waits for it."""

    def __init__(self, table: dict[str, list[Any]], run_id: str) -> None:
        self.table, self.run_id = table, run_id

    async def __aenter__(self) -> None:
        entry = self.table.setdefault(self.run_id, [asyncio.Lock(), 0])
        entry[1] += 1
        await entry[0].acquire()

    async def __aexit__(self, *exc: object) -> None:
        entry = self.table[self.run_id]
        entry[0].release()
        entry[1] -= 1
        if entry[1] == 0:
            del self.table[self.run_id]
