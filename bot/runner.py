"""Drives one run: decide, perform, append, post — under a lease, resumable after a crash.

Events are appended before their side effects; each post carries an
idempotency key and the platform's message id is recorded once it succeeds,
so a driver that resumes after a crash posts what is missing and nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from threadteam.teams import engine
from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.engine import Env, ToolRunner, deadline, decide, perform, time_passed
from threadteam.teams.events import (
    UNREADABLE,
    AgentMessage,
    ApprovalDecided,
    ApprovalExpired,
    Event,
    HumanMessage,
    PlanReviewed,
    PlanWritten,
    RunContinued,
    RunResumed,
    StopRequested,
    TaskStarted,
    ToolAlwaysApproved,
    ToolCallRequested,
    from_json,
    to_json,
)
from threadteam.teams.models.base import RetrySink, TextSink
from threadteam.teams.persona import Persona
from threadteam.teams.state import RunState
from threadteam.teams.termination import has_timeout
from threadteam.teams.tools import Answer, Question, Tool, ToolContext

from .errors import ConflictError, PermanentStoreError, Refused, StoreError
from .questions import QuestionLost, Questions, ask_key, describe
from .render import is_postable, post_key, render, render_edit, settled_key
from .shapes import Directory, Outbound, Poster, ThreadKey
from .stores.base import Store, soon
from .telemetry import TracedModels, run_parent, span, traced_tools

__all__ = ["EXTERNAL", "Loaded", "LostRun", "Runner"]

if TYPE_CHECKING:
    from threadteam.teams.mcp.bind import Bound
    from threadteam.teams.mcp.hub import McpHub
    from threadteam.teams.spec import Team

log = logging.getLogger("threadteam.runner")

#: Events a person's action appends while a driver may be working; a driver merges them.
EXTERNAL = (HumanMessage, ApprovalDecided, ToolAlwaysApproved, StopRequested, RunContinued,
            RunResumed, PlanReviewed)


class LostRun(Exception):
    """Another driver wrote to the run, or something this version cannot read was added to
    it: this one must stop (the message says which)."""

    def __init__(self, why: str = "another driver wrote to it") -> None:
        super().__init__(why)


@dataclass
class Loaded:
    """A run read from the store and folded."""

    run_id: str
    key: ThreadKey
    state: RunState
    events: list[Event]
    #: Store writes in flight that need not hold up the run: awaited before its next append.
    writes: list[asyncio.Future[None]] = field(default_factory=list)
    #: MCP servers whose tools could not be offered (said in the thread by the driver).
    unreachable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Stuck:
    """Why a run cannot be loaded here, in words for its thread, and how it began (None
    if its first event is unreadable)."""

    why: str
    start: TaskStarted | None


class Runner:
    """Performs what the engine decides, for any run, on behalf of one process."""

    def __init__(self, *, store: Store, catalog: TeamCatalog, models: engine.ModelSource,
                 poster: Poster, owner: str, clock: Callable[[], float] = time.time,
                 lease_ttl: float = 10.0, rehearsal_notice: Callable[[RunState], str] | None = None,
                 directory: Directory | None = None, mcp: McpHub | None = None) -> None:
        self.store, self.catalog, self.models, self.poster = store, catalog, models, poster
        self.directory = directory
        #: The questions tool calls ask (MCP elicitation); the MCP servers, once a run uses one.
        self.questions, self._mcp = Questions(), mcp
        #: Runs that cannot be loaded here, each with why.
        self._unloadable: dict[str, Stuck] = {}
        self.owner, self.clock, self.lease_ttl = owner, clock, lease_ttl
        self.rehearsal_notice = rehearsal_notice or (lambda state: "")
        self.save_again = SAVE_AGAIN

    def _read(self, run_id: str) -> tuple[asyncio.Future[str | None], asyncio.Future[list[str]]]:
        """The run's thread and log, both asked for now."""
        return soon(self.store.thread_of, run_id), soon(self.store.load, run_id)

    async def load(self, run_id: str, *, tools: bool = False,
                   read: tuple[asyncio.Future[str | None], asyncio.Future[list[str]]] | None = None
                   ) -> Loaded | None:
        """Read and fold a run; None if it or its team is gone. `tools`: with its agents'
        MCP servers' tools (starting a server on first use), as a driver needs them.
        `read`: the `_read` of it, if it was asked for already."""
        thread_of, log_of = read or self._read(run_id)
        try:  # both are in flight: awaited in turn, not gathered (a pass of the loop less)
            thread = await thread_of
        except BaseException:
            _drop([log_of])
            raise
        raw = await log_of
        if thread is None or not raw:
            self._unloadable.pop(run_id, None)
            return None
        try:
            first = from_json(raw[0])
        except UNREADABLE as exc:
            self._stuck(run_id, Stuck(_UNREADABLE, None), "its log holds an event this version "
                        "cannot read (%s: %s); the run is left as it is", type(exc).__name__, exc)
            return None
        start = first if isinstance(first, TaskStarted) else None
        team = self.catalog.get(start.team) if start is not None else None
        if team is None:
            name = start.team if start is not None else "?"
            stuck = Stuck(f"its team `{name}` is not loaded on this bot", start)
            if self._unloadable.get(run_id) != stuck:  # said once; the run is left alone
                where = f" (it came from {start.team_file})" \
                    if start is not None and start.team_file else ""
                self._stuck(run_id, stuck, "its team %r is not loaded%s; the run is left as it "
                            "is", name, where)
            return None
        bound = await self._bind_tools(team) if tools and team.mcp_servers else None
        try:
            if len(raw) < LONG_LOG:
                events, state = _fold_log(bound.team if bound else team, first, raw)
            else:  # the loop serves every other run, and every ack, meanwhile
                events, state = await asyncio.to_thread(
                    _fold_log, bound.team if bound else team, first, raw)
        except _Unreadable as exc:  # written by a newer threadteam, say, before a downgrade
            self._stuck(run_id, Stuck(_UNREADABLE, start), "its log holds an event this version cannot read "
                        "(%s: %s); the run is left as it is",
                        type(exc.__cause__).__name__, exc.__cause__)
            return None
        except _Mismatch as exc:  # the team file changed under a running run
            self._stuck(run_id, Stuck(f"its team `{team.name}` was changed in a way that no "
                                      "longer fits what the run has done so far", start),
                        "team %r no longer matches the "
                        "run's history (%s); fix the team file or start a new run",
                        team.name, exc.__cause__)
            return None
        self._unloadable.pop(run_id, None)
        return Loaded(run_id, ThreadKey.parse(thread), state, events,
                      unreachable=bound.problems if bound else ())

    def _stuck(self, run_id: str, stuck: Stuck, problem: str, *args: object) -> None:
        """The run cannot be loaded: `problem` % `args` goes to the log, `stuck` is kept for
        the people in its thread (see `why_stuck`)."""
        self._unloadable[run_id] = stuck
        log.error("run %s: " + problem, run_id, *args)

    def why_stuck(self, run_id: str) -> Stuck | None:
        """Why the run could not be loaded when it last was; None if it was loaded, or is
        gone."""
        return self._unloadable.get(run_id)

    async def drive(self, run_id: str, *, first: bool = False) -> bool:
        """Advance the run until it waits for a person; False if another driver holds it.

        `first`: no driver has ever driven the run (it was just created here), so what its
        log holds unposted was certainly not posted: no platform look-up is needed."""
        lease = soon(self.store.acquire_lease, run_id, self.owner, self.lease_ttl)
        # In one process the lease is as good as taken: the run is read in the same
        # transaction. On a shared store another process may hold it: read once it is ours.
        read = None if self.store.shared else self._read(run_id)
        try:
            got = await lease
        except BaseException:
            _drop(list(read or ()))
            raise
        if not got:
            _drop(list(read or ()))
            return False
        heartbeat = _Heartbeat(self, run_id)
        loaded: Loaded | None = None
        settled = False  # the run's turn ended without an error: its last writes are awaited
        try:
            loaded = await self.load(run_id, tools=True, read=read)
            if loaded is not None:
                with trace.use_span(run_parent(run_id)), span(
                        f"run {loaded.state.team.name}", threadteam__run_id=run_id,
                        threadteam__thread=str(loaded.key),
                        threadteam__team=loaded.state.team.name):
                    await self._catch_up(loaded, unsure=not first)
                    for i, problem in enumerate(loaded.unreachable):
                        await self._say(loaded, f"The team's tools: {problem}.",
                                        f"{run_id}:{loaded.state.length}:mcp:{i}")
                    await self._advance(loaded)  # its last writes are still in flight
                    settled = True
            else:  # gone, or its team is not loaded here: not driven again until touched
                await self.store.set_active(run_id, False)
        except LostRun as exc:
            log.warning("run %s: %s; stepping back", run_id, exc)
        finally:
            heartbeat.stop()  # no renewal from now on
            # Sent right behind the run's last writes: one transaction where the store batches.
            release = soon(self.store.release_lease, run_id, self.owner)
            try:
                if loaded is not None:
                    if settled:
                        await self._settle(loaded)
                    else:
                        _drop(loaded.writes)  # left behind by a turn that ended in an error
            finally:
                try:
                    heartbeat.check()
                except BaseException:
                    _drop([release])
                    raise
                await release
        return True

    async def aclose(self) -> None:
        """Close the MCP sessions and stop the MCP servers this process started."""
        if self._mcp is not None:
            await self._mcp.aclose()

    @property
    def mcp(self) -> McpHub:
        """The MCP servers this process's runs share (the MCP SDK is loaded on first use:
        a process whose teams use none never pays for it, nor does `threadteam --help`)."""
        if self._mcp is None:
            from threadteam.teams.mcp.hub import McpHub

            self._mcp = McpHub()
        return self._mcp

    async def _bind_tools(self, team: Team) -> Bound:
        from threadteam.teams.mcp.bind import bind

        return await bind(team, self.mcp)

    async def _say(self, run: Loaded, text: str, key: str) -> None:
        """A short notice in the run's thread; a failure to say it is logged, never raised."""
        try:
            async with asyncio.timeout(5):
                await self.deliver(Outbound(run.key, text, key, notice=True))
        except Exception:
            log.warning("run %s: could not post a notice", run.run_id, exc_info=True)

    async def _advance(self, run: Loaded) -> None:
        state, active, env = run.state, False, self._env(run)
        while True:
            action = decide(state)
            if action.waits:
                late = time_passed(state, self.clock())
                if not late:
                    break
                for seq, event in await self._append(run, late):  # a time limit ends the wait
                    await self._post(run, seq, event, fresh=True)
                continue
            if not active:  # lands while the model works, and before the run's next append
                self._later(run, soon(self.store.set_active, run.run_id, True))
                active = True
            events = await perform(state, action, env)
            if not events:
                break
            for seq, event in await self._append(run, events):
                await self._post(run, seq, event, fresh=True)
        self._later(run, soon(self.store.set_active, run.run_id, False))
        if has_timeout(state.condition) or state.team.approval.expires_after:
            # Wake it when its time limit passes or an approval request expires, if it still waits.
            self._later(run, soon(self.store.set_deadline,
                                  run.run_id, deadline(state) if action.waits else None))
        # The last writes are left in flight: the caller awaits them (`_settle`), with the
        # lease's release in their transaction.

    def _later(self, run: Loaded, write: asyncio.Future[None]) -> None:
        # Its error is raised by _settle, or dropped with the run (`_drop`): no done
        # callback here, which would cost a pass of the event loop per write.
        run.writes.append(write)

    async def _settle(self, run: Loaded) -> None:
        writes, run.writes = run.writes, []
        for i, write in enumerate(writes):
            try:
                await write
            except BaseException:
                _drop(writes[i + 1:])
                raise

    async def _append(self, run: Loaded, events: list[Event]) -> list[tuple[int, Event]]:
        """Append our events (after any a person added meanwhile); fold; return (seq, event)."""
        state, added = run.state, []
        payload = [to_json(e) for e in events]
        sent: asyncio.Future[int] | None = None
        if any(not write.done() for write in run.writes):
            # Sent right behind the writes still in flight (the last post's record), not
            # after them: a store that batches puts them in one transaction, the record
            # first. A write that fails still stops the run here.
            sent = soon(self.store.append, run.run_id, state.length, payload)
        try:
            await self._settle(run)
        except BaseException:
            _drop([sent] if sent is not None else [])
            raise
        pauses, unsure = iter(self.save_again), False  # unsure: a failed try may have landed
        while True:
            try:
                await (sent or self.store.append(run.run_id, state.length, payload))
                break
            except ConflictError:
                raw = await self.store.load(run.run_id, state.length)
                if unsure and raw[:len(payload)] == payload:
                    break  # it had: what follows it is folded when the next append conflicts
                try:
                    tail = [from_json(t) for t in raw]
                except UNREADABLE as exc:  # a newer threadteam took a message meanwhile (a
                    # rolling upgrade, say): it drives the run from here; our turn is dropped
                    raise LostRun(f"an event this version cannot read was added to it "
                                  f"({type(exc).__name__}: {exc})") from None
                if any(not isinstance(e, EXTERNAL) for e in tail):
                    raise LostRun() from None
                for e in tail:
                    added.append((state.length, e))
                    state.apply(e)
                    run.events.append(e)
                sent = None
            except PermanentStoreError:
                raise
            except StoreError as exc:
                pause = next(pauses, None)
                if pause is None:
                    raise
                log.info("run %s: saving its turn failed (%s); trying again in %g s",
                         run.run_id, exc, pause)
                await asyncio.sleep(pause)
                sent, unsure = None, True
        for e in events:
            added.append((state.length, e))
            state.apply(e)
            run.events.append(e)
        return added

    async def _catch_up(self, run: Loaded, unsure: bool = True) -> None:
        """Deliver posts a crashed or earlier driver appended but did not record (`unsure`:
        it may have posted them; the poster looks for each before posting it again; False:
        no driver ever drove the run, so nothing of it was posted or recorded to look up)."""
        missing: list[tuple[int, Event]] = []
        for seq in range(len(run.events) - 1, -1, -1):
            e = run.events[seq]
            if not is_postable(e):
                continue
            if unsure and await self.store.get_post(self._key_of(run, seq, e)) is not None:
                # An agent's post marks where the thread is complete; a notice may have
                # been said out of turn (a run paused because a post was refused).
                if isinstance(e, AgentMessage | ToolCallRequested):
                    break
                continue
            missing.append((seq, e))
        for seq, e in reversed(missing):
            await self._post(run, seq, e, fresh=True, unsure=unsure)

    def _key_of(self, run: Loaded, seq: int, e: Event) -> str:
        if isinstance(e, ApprovalDecided | ApprovalExpired | PlanReviewed):
            return settled_key(run.run_id, e)
        out = render(run.state, e, seq, run.key, run.run_id, self.poster.mention)
        return out.idempotency_key if out else post_key(run.run_id, seq)

    async def _post(self, run: Loaded, seq: int, e: Event, fresh: bool = False,
                    unsure: bool = False) -> None:
        """Post event `seq`; `fresh`: no post under its seq key can have been recorded yet;
        `unsure`: an earlier driver may have posted it without recording it."""
        if isinstance(e, ApprovalDecided | ApprovalExpired | PlanReviewed | PlanWritten):
            # Settles an approval request, or marks a plan approved or replaced, in place.
            settled = render_edit(run.state, e, run.key, run.run_id, self.poster.mention)
            if settled is not None:
                request_key, edit = settled
                message_id = await self.store.get_post(request_key)
                if message_id is not None \
                        and await self.store.get_post(edit.idempotency_key) is None:
                    await self.poster.edit(edit, message_id)
                    await self.store.put_post(edit.idempotency_key, message_id)
            if not isinstance(e, PlanWritten):
                return
        notice = self.rehearsal_notice(run.state) if isinstance(e, TaskStarted) else ""
        out = render(run.state, e, seq, run.key, run.run_id, self.poster.mention, notice)
        if out is None:
            return
        if unsure:
            out = replace(out, unsure=True)
        if not (fresh and out.idempotency_key == post_key(run.run_id, seq)):
            await self.deliver(out)
            return
        message_id = await self.poster.post(out)
        self._later(run, soon(self.store.put_post, out.idempotency_key, message_id))

    async def deliver(self, out: Outbound, *, store_may_fail: bool = False) -> str:
        """Post once per idempotency key; return the platform message id.

        `store_may_fail`: for a word about the store itself failing, a look-up or record
        the store cannot make is passed over (the post is made, perhaps once more)."""
        try:
            existing = await self.store.get_post(out.idempotency_key)
        except StoreError:
            if not store_may_fail:
                raise
            existing = None
        if existing is not None:
            return existing
        message_id = await self.poster.post(out)
        try:
            await self.store.put_post(out.idempotency_key, message_id)
        except StoreError:
            if not store_may_fail:
                raise
        return message_id

    def _env(self, run: Loaded) -> Env:
        """What the engine needs to perform this run's actions; tracing wraps its seams."""
        thread = str(run.key)
        return Env(models=TracedModels(self.models, thread), now=self.clock,
                   tool_context=partial(self._tool_context, run),
                   on_turn=partial(self._working, run), on_text=partial(self._stream, run),
                   run_tool=partial(self._run_tool, run, traced_tools(thread)),
                   on_retry=partial(self._slow, run))

    async def _run_tool(self, run: Loaded, inner: ToolRunner, tool: Tool,
                        request: ToolCallRequested, context: ToolContext) -> str:
        """Run an approved call, unless it already asked a question a process that has
        since ended was waiting on: its outcome is unknown, so it ends and says so."""
        if tool.schema is not None and \
                await self.store.get_post(ask_key(run.run_id, request.call_id, 1)) is not None:
            if context.notice is not None:
                await context.notice(f"`{tool.name}` was waiting for an answer when the bot "
                                     f"restarted; the call ended, and the agent is told so.")
            raise QuestionLost(
                "the bot restarted while this call waited for a person's answer to the "
                "server's question, so the call did not finish and its effect is unknown; "
                "check before calling it again")
        return await inner(tool, request, context)

    def _slow(self, run: Loaded, agent: str) -> RetrySink:
        """Says in the thread, before a model call is retried, that the agent's model is
        slow: once per retry of this turn (a re-driven turn does not say it twice)."""
        who = self._persona(run, agent).display_name if agent else "The selector"
        turn, said = run.state.length, [0]

        async def tell(sentence: str) -> None:
            said[0] += 1
            out = Outbound(run.key, f"{who}: {sentence}",
                           f"{run.run_id}:{turn}:slow:{agent}:{said[0]}", notice=True)
            try:
                async with asyncio.timeout(5):  # the turn's deadline keeps running meanwhile
                    await self.deliver(out)
            except Exception:
                log.warning("run %s: could not say that the model is slow", run.run_id,
                            exc_info=True)

        return tell

    def _tool_context(self, run: Loaded, request: ToolCallRequested) -> ToolContext:
        agent, call_id = request.agent, request.call_id
        persona = run.state.team.by_name[agent].persona

        async def post_message(channel: str, text: str) -> str:
            channel = channel.strip()
            if self.directory is not None:
                try:
                    channel = await self._reach(run, request, channel)
                except Refused as refused:
                    await self.deliver(Outbound(
                        run.key, f"{persona.display_name} was not allowed to post to "
                                 f"{_inert(channel)}: {refused}",
                        f"{run.run_id}:tool:{call_id}:refused", notice=True))
                    raise
            target = ThreadKey(run.key.platform, run.key.workspace, channel, "")
            return await self.deliver(Outbound(target, text, f"{run.run_id}:tool:{call_id}",
                                               persona=persona, meta={"agent": agent}))

        said, asked = [0], [0]

        async def notice(text: str) -> None:
            said[0] += 1
            await self._say(run, f"{persona.display_name}: {text}",
                            f"{run.run_id}:tool:{call_id}:notice:{said[0]}")

        async def ask(question: Question) -> Answer:
            asked[0] += 1
            out = Outbound(run.key, self._question_text(run, question),
                           ask_key(run.run_id, call_id, asked[0]), persona=persona,
                           meta={"agent": agent})
            return await self.questions.ask(str(run.key), question, run.state.may_approve,
                                            partial(self.deliver, out))

        return ToolContext(run_id=run.run_id, thread=str(run.key), agent=agent,
                           post_message=post_message, ask=ask, notice=notice)

    def _question_text(self, run: Loaded, question: Question) -> str:
        rule = run.state.approvers
        who = [self.poster.mention(p) for p in (rule.people or (run.state.by,))]
        who += [f"members of {r}" for r in rule.roles]
        fields = _said_by_server(describe(question), 300)
        asker = question.asker[:1].upper() + question.asker[1:]
        return (f"❓ {asker} asks {', '.join(who)}: {_said_by_server(question.text, 1000)}\n"
                f"Reply in this thread with {fields or 'your answer'}, or `decline` / `cancel`.")

    async def _reach(self, run: Loaded, request: ToolCallRequested, channel: str) -> str:
        """The channel id an approved post may go to: somewhere everyone who let the call
        run (its approvers; whoever approved the tool for the run; else the summoner)
        could post themselves. Raises `Refused` otherwise."""
        assert self.directory is not None
        state = run.state
        call = state.calls.get(request.call_id)
        deciders = list(call.approved_by) if call is not None else []
        if not deciders and request.tool in state.always_approved:
            deciders = [state.always_approved[request.tool]]
        target = channel
        for person in deciders or [state.by]:
            target = await self.directory.reach(run.key, person, channel)
        return target

    def _persona(self, run: Loaded, agent: str) -> Persona:
        return run.state.team.by_name[agent].persona

    async def _working(self, run: Loaded, agent: str) -> None:
        """An agent's turn starts: show it working."""
        try:
            await self.poster.working(run.key, self._persona(run, agent))
        except Exception:  # a typing indicator is a courtesy; never fail a turn for it
            log.debug("working indicator failed", exc_info=True)

    def _stream(self, run: Loaded, agent: str) -> TextSink | None:
        """Where an agent's reply streams to while the model writes it, if the poster shows that."""
        stream = getattr(self.poster, "stream", None)
        return stream(run.key, self._persona(run, agent)) if stream is not None else None


class _Heartbeat:
    """Renews a run's lease every third of its time to live while a driver holds it: a
    timer rather than a task (which cost a task, and passes of the event loop to start
    and to cancel it, on every drive). A renewal that fails ends the renewals; `check`
    raises its error."""

    def __init__(self, runner: Runner, run_id: str) -> None:
        self._runner, self._run_id = runner, run_id
        self._loop = asyncio.get_running_loop()
        self._renewal: asyncio.Future[bool] | None = None
        self._error: BaseException | None = None
        self._stopped = False
        self._timer = self._loop.call_later(runner.lease_ttl / 3, self._renew)

    def _renew(self) -> None:
        runner = self._runner
        self._renewal = soon(runner.store.acquire_lease, self._run_id, runner.owner,
                             runner.lease_ttl)
        self._renewal.add_done_callback(self._renewed)

    def _renewed(self, renewal: asyncio.Future[bool]) -> None:
        if renewal.cancelled():
            return
        error = renewal.exception()
        if error is not None:
            self._error = error
        elif not self._stopped:
            self._timer = self._loop.call_later(self._runner.lease_ttl / 3, self._renew)

    def stop(self) -> None:
        """No renewal from now on (one in flight is given up on)."""
        self._stopped = True
        self._timer.cancel()
        if self._renewal is not None and not self._renewal.done():
            self._renewal.cancel()

    def check(self) -> None:
        """Raise what a renewal raised, if one did."""
        if self._error is not None:
            raise self._error


#: A run log this long is read on a worker thread: at ~7 µs an event, parsing and folding
#: it on the event loop would hold up every other run (and every ack) for milliseconds.
#: On the thread the loop waits a switch interval (5 ms) at most; a shorter log takes less
#: than that on the loop (`benchmarks/long_run.py`).
LONG_LOG = 512
# Pauses (seconds) before saving a turn again when the store fails for a moment (a Redis
# failover, a busy SQLite file): the turn's model answer is kept through a blip rather
# than paid for again. A longer outage ends the turn (the host tries the run later).
SAVE_AGAIN = (0.1, 0.3, 1.0, 2.0)


_UNREADABLE = "its history holds an event this version of threadteam cannot read"


class _Mismatch(Exception):
    """The run's history does not fold under its team as loaded now (its cause says why)."""


class _Unreadable(Exception):
    """An event of the run's log does not parse (its cause says why)."""


def _fold_log(team: Team, first: Event, raw: list[str]) -> tuple[list[Event], RunState]:
    """A run's events (`first` already parsed from `raw[0]`) and the state they fold to."""
    events = [first]
    try:
        events += map(from_json, raw[1:])
    except UNREADABLE as exc:
        raise _Unreadable() from exc
    try:
        return events, RunState.fold(team, events)
    except (KeyError, ValueError) as exc:
        raise _Mismatch() from exc


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _drop(writes: list[asyncio.Future[Any]]) -> None:
    """Writes nobody will await: their errors are not reported as never retrieved."""
    for write in writes:
        write.add_done_callback(_retrieve)


def _said_by_server(text: str, limit: int) -> str:
    """A server's words in a post: no markup that could ping or link (Slack's `<!here>`,
    `<@U…>`, Discord's `@everyone`), at most `limit` characters."""
    text = text.replace("<", "\u2039").replace(">", "\u203a").replace("@", "@\u200b")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _inert(channel: str) -> str:
    """A channel as the model wrote it, shown in a notice without pinging or linking."""
    shown = " ".join(channel.replace("`", "'").split())[:80]
    return f"`{shown}`"
