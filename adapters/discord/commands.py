"""The `/team` slash command: a `team` option autocompleted from the catalog, and a `task`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

if TYPE_CHECKING:
    from .adapter import DiscordAdapter

__all__ = ["team_command"]

_MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices


def team_command(adapter: DiscordAdapter) -> app_commands.Command:
    """`/team team:<name> task:<text>`, answered by `adapter.on_team_command`."""

    @app_commands.command(name="team", description="Summon an agent team into a new thread")
    @app_commands.describe(team="Which team to summon", task="What the team should work on")
    @app_commands.guild_only()
    async def team(interaction: discord.Interaction, team: str, task: str) -> None:
        await adapter.on_team_command(interaction, team, task)

    @team.autocomplete("team")
    async def complete(interaction: discord.Interaction,
                       current: str) -> list[app_commands.Choice[str]]:
        return choices(adapter.team_choices(), current)

    return team


def choices(teams: list[tuple[str, str]], current: str) -> list[app_commands.Choice[str]]:
    """Teams whose name (first) or description contains what was typed."""
    typed = current.strip().lower()
    by_name = [t for t in teams if typed in t[0].lower()]
    by_text = [t for t in teams if t not in by_name and typed in t[1].lower()]
    out = []
    for name, description in (by_name + by_text)[:_MAX_CHOICES]:
        label = f"{name} — {description}" if description else name
        out.append(app_commands.Choice(name=label[:100], value=name))
    return out
