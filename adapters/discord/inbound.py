"""Translation in: Discord messages and interactions become `Inbound` events.

Pure functions of discord.py objects; nothing here talks to Discord.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter

import discord

from threadteam.bot.shapes import Inbound, InboundKind, ThreadKey
from threadteam.teams.approvers import role_label

__all__ = [
    "PLATFORM", "addressed_text", "by_a_person", "from_button", "from_message", "ignored", "key_of",
    "roles_of", "summon", "unreadable",
]

PLATFORM = "discord"

log = logging.getLogger(__name__)


def key_of(channel: discord.abc.GuildChannel | discord.Thread | discord.abc.Messageable,
           guild_id: int | None) -> ThreadKey:
    """The run's key for a thread (its parent is the channel) or a plain channel."""
    if isinstance(channel, discord.Thread):
        parent = channel.parent_id
        return ThreadKey(PLATFORM, str(guild_id or ""), str(parent), str(channel.id))
    cid = str(getattr(channel, "id", ""))
    return ThreadKey(PLATFORM, str(guild_id or ""), cid, cid)


def unreadable(message: discord.Message) -> str | None:
    """Why a gateway or REST message can't be read as anyone's words (None: it can).

    discord.py keeps what Discord sent as it came, so a malformed payload shows
    up here as a text that is not a string or a message without an author.
    """
    if not isinstance(getattr(message, "content", None), str):
        return "its text is not a string"
    author = getattr(message, "author", None)
    if author is None or not isinstance(getattr(author, "id", None), int):
        return "it has no author"
    return None


def ignored(message: discord.Message, me: discord.abc.User | None) -> bool:
    """The bot's own posts, its webhooks' echoes, other bots, system messages and DMs are
    not for us."""
    return message.guild is None or not by_a_person(message, me)


def by_a_person(message: discord.Message, me: discord.abc.User | None) -> bool:
    """A person wrote it: not the bot, its webhooks, another bot or Discord itself."""
    if message.webhook_id is not None or message.author.bot:
        return False
    if me is not None and message.author.id == me.id:
        return False
    return message.type in (discord.MessageType.default, discord.MessageType.reply)


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
    """The labels `role:` approvers match: each role's id, and its name only while no other
    role of the server answers to that name.

    Anyone who may manage roles can make a second "Moderators"; a name shared by
    two roles (or made of digits, like an id) therefore names neither, and the
    log says so once, recommending the id.
    """
    roles = getattr(member, "roles", None) or []
    guild = getattr(member, "guild", None)
    named = Counter(role_label(r.name) for r in guild.roles) if guild is not None else Counter()
    out: list[str] = []
    for role in roles:
        if role.is_default():
            continue
        out.append(str(role.id))
        label = role_label(role.name)
        if named[label] == 1 and not label.isdigit():
            out.append(role.name)
        elif guild is not None:
            _say_ambiguous(guild.id, role.name, named[label])
    return tuple(out)


@functools.lru_cache(maxsize=1024)  # once per server and name, not at every message
def _say_ambiguous(guild_id: int, name: str, count: int) -> None:
    why = (f"{count} roles are named {name!r}" if count > 1
           else f"the role name {name!r} looks like an id")
    log.warning("server %s: %s, so role:%s matches none of them as an approver; name the role "
                "by its id in the team file (role:<id>, from Server Settings -> Roles -> "
                "Copy Role ID)", guild_id, why, name)


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
