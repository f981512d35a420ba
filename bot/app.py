"""Wiring: settings -> store, teams, models -> a started Host speaking through a Poster."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.engine import ModelSource

from .config import Settings
from .host import Host
from .inbox import Inbox
from .memory import StoreMemory
from .shapes import Directory, Memory, Poster
from .stores import open_store
from .stores.base import Store
from .telemetry import setup_tracing

__all__ = ["Runtime", "Shutdown", "load_catalog"]

log = logging.getLogger("threadteam")


def load_catalog(settings: Settings) -> TeamCatalog:
    """Built-in teams plus the user's; broken user files are logged with file:line."""
    catalog = TeamCatalog.load(settings.teams_dir)
    for problem in catalog.problems:
        log.error("team file skipped: %s", problem)
    return catalog


class Runtime:
    """The store, teams and models of one process, opened before any adapter is built.

    The platform command opens it, gives its adapter the `memory` it needs at
    construction, then starts the host with the adapter's poster and directory:

        runtime = await Runtime.open(settings)
        adapter = SlackAdapter(config, memory=runtime.memory("slack"))
        host = await runtime.start_host(adapter.poster, directory=adapter.directory)
        ...
        await runtime.aclose()   # the host, then models and store
    """

    def __init__(self, settings: Settings, store: Store, catalog: TeamCatalog,
                 models: ModelSource) -> None:
        self.settings, self.store, self.catalog, self.models = settings, store, catalog, models
        self.host: Host | None = None

    @classmethod
    async def open(cls, settings: Settings, *, models: ModelSource | None = None) -> Runtime:
        """Set up tracing, open the store, load the teams and the models."""
        from threadteam.teams.models import ModelPool

        setup_tracing(dict(settings.env))
        store = open_store(settings.store_url)
        await store.start()
        return cls(settings, store, load_catalog(settings),
                   models or ModelPool(env=settings.model_env()))

    def memory(self, namespace: str) -> Memory:
        """Durable small values for the adapter called `namespace`."""
        return StoreMemory(self.store, namespace)

    def inbox(self, platform: str) -> Inbox:
        """`platform`'s inbox: it keeps events on the receiving thread's loop through a
        store connection of its own, opened there."""
        return Inbox.at(self.store, platform, self.settings.store_url)

    async def start_host(self, poster: Poster, *, platform: str,
                         directory: Directory | None = None, shared: bool = True,
                         **host_options: Any) -> Host:
        """Start the host that serves `platform`'s runs (and no other platform's), posts
        through `poster` and asks `directory` about people.

        `shared`: many people summon through this host (Slack, Discord), so the summon
        limits of the settings apply and the platform's runs left by a crashed process
        are picked up; the console has one person at the keyboard and drives only the
        run it started or resumed.
        """
        options: dict[str, Any] = {"lease_ttl": self.settings.lease_ttl, "platform": platform,
                                   "adopt": shared}
        if shared:
            options["limits"] = self.settings.limits
        self.host = Host(store=self.store, catalog=self.catalog, models=self.models,
                         poster=poster, directory=directory, **{**options, **host_options})
        await self.host.start()
        return self.host

    async def aclose(self) -> None:
        """Stop the host (if started), then close the models and the store."""
        if self.host is not None:
            await self.host.aclose()
        close = getattr(self.models, "aclose", None)
        if close is not None:
            await close()
        await self.store.aclose()


class Shutdown:
    """SIGINT/SIGTERM, caught from the moment this is made.

    Made first thing in a command, before anything is served: a `docker stop` that
    lands while the process is still starting then ends it cleanly instead of killing
    it with the default handler.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._event.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass

    @property
    def requested(self) -> bool:
        """A signal has arrived."""
        return self._event.is_set()

    async def wait(self, *also: asyncio.Future[Any]) -> None:
        """Until a signal, or until one of `also` finishes (its error is raised)."""
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self._event.wait())
        done, pending = await asyncio.wait({stopped, *also}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            if task is not stopped:
                task.result()
