"""Translation in: Discord messages and interactions become `Inbound` events.

Pure functions of discord.py objects; nothing here talks to Discord.
"""

from __future__ import annotations

import re

import discord

from threadteam.bot.shapes import Inbound, InboundKind, ThreadKey

__all__ = [
    "PLATFORM", "addressed_text", "from_button", "from_message", "ignored", "key_of",
    "roles_of", "summon",
]

PLATFORM = "discord"


def key_of(channel: discord.abc.GuildChannel | discord.Thread | discord.abc.Messageable,
           guild_id: int | None) -> ThreadKey:
    """The run's key for a thread (its parent is the channel) or a plain channel."""
    if isinstance(channel, discord.Thread):
        parent = channel.parent_id
        return ThreadKey(PLATFORM, str(guild_id or ""), str(parent), str(channel.id))
    cid = str(getattr(channel, "id", ""))
    return ThreadKey(PLATFORM, str(guild_id or ""), cid, cid)


def ignored(message: discord.Message, me: discord.abc.User | None) -> bool:
    """The bot's own posts, its webhooks' echoes, other bots and system messages are not for us."""
    if message.webhook_id is not None or message.author.bot:
        return True
    if me is not None and message.author.id == me.id:
        return True
    return message.guild is None or message.type not in (
        discord.MessageType.default, discord.MessageType.reply)


def addressed_text(message: discord.Message, me: discord.abc.User) -> str | None:
    """The text after the bot's mention, or None when the message does not mention the bot.

    People type @threadteam and Discord may resolve it to the bot's managed
    role rather than its user, so that counts as a mention too.
    """
    content = message.content
    mentioned = any(u.id == me.id for u in message.mentions) or f"<@{me.id}>" in content
    role_ids = [r.id for r in message.role_mentions if r.tags and r.tags.bot_id == me.id]
    if not mentioned and not role_ids:
        return None
    content = re.sub(rf"<@!?{me.id}>", " ", content)
    for rid in role_ids:
        content = content.replace(f"<@&{rid}>", " ")
    return " ".join(content.split())


def roles_of(member: discord.abc.User) -> tuple[str, ...]:
    """Role ids and names, so a team file may name approvers either way (`role:Moderators`)."""
    roles = getattr(member, "roles", None) or []
    out: list[str] = []
    for role in roles:
        if role.is_default():
            continue
        out += [str(role.id), role.name]
    return tuple(out)


def _person(user: discord.abc.User) -> dict:
    return {"user": str(user.id), "display_name": user.display_name, "roles": roles_of(user)}


def from_message(message: discord.Message, key: ThreadKey, text: str,
                 kind: InboundKind = "reply") -> Inbound:
    """A message in a run's thread (or a mention that summons a team)."""
    return Inbound(key=key, text=text, kind=kind, event_id=f"{PLATFORM}:msg:{message.id}",
                   **_person(message.author))


def summon(interaction: discord.Interaction, key: ThreadKey, text: str) -> Inbound:
    """`/team` as the host's `<team> <task>` summon, for the run in `key`."""
    return Inbound(key=key, text=text, kind="summon",
                   event_id=f"{PLATFORM}:ix:{interaction.id}", **_person(interaction.user))


def from_button(interaction: discord.Interaction, key: ThreadKey, action: str,
                call_id: str) -> Inbound:
    """An Approve / Deny press."""
    return Inbound(key=key, text="", kind="button", action=action, call_id=call_id,
                   event_id=f"{PLATFORM}:ix:{interaction.id}", **_person(interaction.user))
