"""Wiring: settings -> store, teams, models -> a started Host speaking through a Poster."""

from __future__ import annotations

import asyncio
import logging
import signal

from teams.catalog import TeamCatalog

from .config import Settings
from .host import Host
from .shapes import Poster
from .stores import open_store
from .telemetry import setup_tracing

log = logging.getLogger("threadteam")


def load_catalog(settings: Settings) -> TeamCatalog:
    """Built-in teams plus the user's; broken user files are logged with file:line."""
    catalog = TeamCatalog.load(settings.teams_dir)
    for problem in catalog.problems:
        log.error("team file skipped: %s", problem)
    return catalog


async def build_host(settings: Settings, poster: Poster, *, models=None, **host_options) -> Host:
    """Open the store, load teams and models, and start a Host that posts through `poster`."""
    from teams.models import ModelPool

    setup_tracing(dict(settings.env))
    store = open_store(settings.store_url)
    await store.start()
    host = Host(store=store, catalog=load_catalog(settings),
                models=models or ModelPool(env=settings.model_env()), poster=poster,
                **{"lease_ttl": settings.lease_ttl, **host_options})
    await host.start()
    return host


async def close_host(host: Host) -> None:
    """Stop the host, then its models and store."""
    await host.aclose()
    close = getattr(host.models, "aclose", None)
    if close is not None:
        await close()
    await host.store.aclose()


async def until_signalled(*also: asyncio.Future) -> None:
    """Wait for SIGINT/SIGTERM, or until one of `also` finishes (its error is raised)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    stopped = asyncio.ensure_future(stop.wait())
    done, pending = await asyncio.wait({stopped, *also}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in done:
        if task is not stopped:
            task.result()
