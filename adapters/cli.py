"""The `threadteam` command line: the composition root, on top of every layer.

It imports the adapters directly (one module per platform in `PLATFORMS`), so the
rule that imports point `adapters -> bot -> teams` holds where a linter can see it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from importlib import metadata

from threadteam.bot.config import EVERY_SETTING, Settings
from threadteam.bot.logs import redact, setup_logging
from threadteam.bot.stores import default_store_url
from threadteam.teams.errors import ThreadteamError

from .console import cli as console_cli
from .discord import cli as discord_cli
from .slack import cli as slack_cli

__all__ = ["PLATFORMS", "main"]

#: `threadteam run NAME`: the platforms a process can serve, each with its command module.
PLATFORMS = {"slack": slack_cli, "discord": discord_cli}

_ENV_HELP = """environment:
  THREADTEAM_STORE      where runs live: sqlite:///path or redis://host:port/db
                        (default: {store})
  THREADTEAM_MODEL      default model: openai:MODEL, anthropic:MODEL or rehearsal
                        (default: OpenAI if OPENAI_API_KEY is set, else Anthropic if
                        ANTHROPIC_API_KEY is set, else the offline rehearsal model)
  THREADTEAM_TEAMS_DIR  a folder of team files (*.yaml) added to the built-in teams
  THREADTEAM_LEASE_TTL  seconds before another process takes over a crashed one's runs (10)
  THREADTEAM_LOG_LEVEL  DEBUG, INFO (default), WARNING or ERROR
  THREADTEAM_MAX_ACTIVE_RUNS_PER_USER  unfinished runs per person on Slack/Discord (3)
  THREADTEAM_MAX_RUNS_PER_HOUR         runs a workspace/guild may start an hour (60)
  OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER   tracing (off when unset)
"""


#: The settings each command reads (and so checks at start); a wrong value of any other
#: setting does not stop it. `run slack` also asks for PORT (`Settings.http_port`).
_USES: dict[str, frozenset[str]] = {
    "teams": frozenset({"teams_dir"}),
    "runs": frozenset({"store"}),
    "chat": frozenset({"store", "model", "teams_dir", "lease_ttl", "code"}),
    "run": EVERY_SETTING,
}


def _flag_parent(*flags: str) -> argparse.ArgumentParser:
    """A parent parser with those of --store, --model and --teams-dir a command uses."""
    parent = argparse.ArgumentParser(add_help=False)
    if "store" in flags:
        parent.add_argument("--store", metavar="URL", help="run store (overrides THREADTEAM_STORE)")
    if "model" in flags:
        parent.add_argument("--model", metavar="M",
                            help="default model (overrides THREADTEAM_MODEL)")
    if "teams_dir" in flags:
        parent.add_argument("--teams-dir", metavar="DIR",
                            help="extra team files (overrides THREADTEAM_TEAMS_DIR)")
    return parent


def _version() -> str:
    try:
        return metadata.version("threadteam")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    env_help = _ENV_HELP.format(store=default_store_url())
    common = _flag_parent("store", "model", "teams_dir")
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="threadteam", formatter_class=fmt, epilog=env_help,
        description="Human-in-the-loop agent teams that live in chat threads.")
    p.add_argument("--version", action="version", version=f"threadteam {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    chat = sub.add_parser("chat", parents=[common], formatter_class=fmt, epilog=env_help,
                          help="talk to a team in this terminal",
                          description="Summon a team in this terminal; you are the human in "
                                      "the thread. Reply at any time; `help` lists commands.")
    console_cli.add_arguments(chat)

    run = sub.add_parser("run", help="serve a chat platform (slack or discord)",
                         description="Connect to a chat platform and host teams there.")
    platforms = run.add_subparsers(dest="platform", metavar="PLATFORM", required=True)
    for name, module in PLATFORMS.items():
        q = platforms.add_parser(name, parents=[common], formatter_class=fmt, epilog=env_help,
                                 help=f"serve {name.title()}")
        module.add_arguments(q)

    teams = sub.add_parser("teams", help="list or check team files")
    tsub = teams.add_subparsers(dest="teams_command", metavar="ACTION", required=True)
    tsub.add_parser("list", parents=[_flag_parent("teams_dir")],
                    help="list the teams that can be summoned")
    check = tsub.add_parser("check", help="check team files; exit 1 with file:line errors")
    check.add_argument("files", nargs="+", metavar="FILE")
    show = tsub.add_parser("show", parents=[_flag_parent("teams_dir")],
                           help="a team's agents and every tool they can use, with the "
                                "approval each needs (starts its MCP servers to list theirs)")
    show.add_argument("team", metavar="NAME")

    runs = sub.add_parser("runs", help="list runs or print one for an audit")
    rsub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    stored = _flag_parent("store")
    listing = rsub.add_parser("list", parents=[stored], help="the most recent runs, newest first")
    listing.add_argument("--limit", type=int, default=20, metavar="N", help="how many (20)")
    show = rsub.add_parser("show", parents=[stored],
                           help="a run's transcript with every approval decision",
                           description="Print a run's transcript: who said what, every tool "
                                       "call with its arguments, and who approved or denied "
                                       "it when.")
    show.add_argument("run", metavar="RUN",
                      help="a run id, or the start of one of the 10,000 latest runs' ids")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `threadteam` console script."""
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 0
    try:
        if args.command == "teams" and args.teams_command == "check":
            return _check(args.files)
        settings = Settings.from_env(store=getattr(args, "store", None),
                                     model=getattr(args, "model", None),
                                     teams_dir=getattr(args, "teams_dir", None),
                                     uses=_USES[args.command])
        setup_logging("WARNING" if args.command in ("chat", "teams", "runs") else settings.log_level)
        if args.command == "teams" and args.teams_command == "show":
            return asyncio.run(_show(args.team, settings))
        if args.command == "teams":
            return _list(settings)
        if args.command == "runs":
            return asyncio.run(_runs(args, settings))
        module = console_cli if args.command == "chat" else PLATFORMS[args.platform]
        return asyncio.run(module.run(args, settings))
    except ThreadteamError as exc:
        print(f"threadteam: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the console and the servers handle their own Ctrl-C
        print(file=sys.stderr)
        return 130


def _check(files: list[str]) -> int:
    """Check team files together, as one folder would be: every problem of each file with
    its line, and two files giving one team name; warnings do not fail the check."""
    from threadteam.teams.catalog import TeamCatalog

    catalog = TeamCatalog.from_files(files)
    for problem in catalog.problems:
        print(problem, file=sys.stderr)
    for team in catalog.teams.values():
        print(f"{team.source}: ok ({team.name}: {len(team.agents)} participants, "
              f"{team.strategy})")
        for warning in team.warnings:
            print(warning, file=sys.stderr)
    return 1 if catalog.problems else 0


async def _runs(args: argparse.Namespace, settings: Settings) -> int:
    from threadteam.bot.audit import AmbiguousRun, list_runs, transcript
    from threadteam.bot.stores import open_store

    store = open_store(settings.store_url)
    await store.start()
    try:
        if args.runs_command == "show":
            try:
                text = await transcript(store, args.run)
            except AmbiguousRun as exc:
                print(f"threadteam: {exc}", file=sys.stderr)
                return 1
            if text is None:
                print(f"threadteam: no run {args.run!r} in {_store_label(settings)}; "
                      f"`threadteam runs list` shows the runs there", file=sys.stderr)
                return 1
            print(text)
            return 0
        for r in await list_runs(store, max(1, args.limit)):
            task = r.task if len(r.task) <= 50 else r.task[:49] + "…"
            print(f"{r.run_id}  {_when(r.updated)}  {r.state:<8}  {r.team:<12} {r.by:<12} "
                  f"{r.thread}  {task}")
        return 0
    finally:
        await store.aclose()


def _store_label(settings: Settings) -> str:
    return redact(settings.store_url.split("@")[-1])


def _when(at: float) -> str:
    from datetime import datetime
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M")


async def _show(name: str, settings: Settings) -> int:
    """Print what a team can do before anyone summons it: each agent's tools and the
    approval each needs, MCP servers' tools included (their servers are started to list
    them, then stopped)."""
    from threadteam.teams.catalog import TeamCatalog
    from threadteam.teams.mcp import McpHub
    from threadteam.teams.mcp.bind import tool_lines

    catalog = TeamCatalog.load(settings.teams_dir)
    team = catalog.get(name)
    if team is None:
        print(f"threadteam: no team called {name!r}; `threadteam teams list` shows them",
              file=sys.stderr)
        return 2
    hub = McpHub()
    try:
        lines, problems = await tool_lines(team, hub)
    finally:
        await hub.aclose()
    print(f"{team.name} ({team.strategy}): {team.description}".rstrip(": "))
    for agent in team.agents:
        kind = "the person in the thread" if agent.human else agent.persona.display_name
        print(f"  {agent.name} ({kind})")
        mine = [t for t in lines if t.agent == agent.name]
        width = max((len(t.name) for t in mine), default=0)
        for t in mine:
            rule = "needs approval" if t.approval == "always" else "runs at once"
            print(f"    {t.name:<{width}}  {rule:<14}  {t.why}")
        if not mine and not agent.human:
            print("    (no tools)")
    for problem in problems:
        print(f"threadteam: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _list(settings: Settings) -> int:
    from threadteam.teams.catalog import TeamCatalog

    catalog = TeamCatalog.load(settings.teams_dir)
    width = max((len(n) for n in catalog.names()), default=0)
    for name, desc in catalog.choices():
        print(f"{name:<{width}}  {desc}")
    for problem in catalog.problems:
        print(f"skipped {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
