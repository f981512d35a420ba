"""Builders for host tests: a host on a real store, teams from YAML text, inbound events."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

from threadteam.bot.host import Host
from threadteam.bot.shapes import Inbound, ThreadKey
from threadteam.teams.catalog import TeamCatalog
from threadteam.teams.models import ModelPool
from threadteam.teams.models.scripted import ScriptedModel

_ids = itertools.count(1)

DEBATE = """
name: debate
description: Bull and bear argue, synthesis concludes.
model: scripted
agents:
  - {name: bull, persona: {display_name: Bull, avatar: ":ox:"}, system_message: Argue for.}
  - {name: bear, persona: {display_name: Bear, avatar: ":bear:"}, system_message: Argue against.}
  - {name: synthesis, persona: {display_name: Synthesis}, system_message: "End with 'FINAL ANSWER:'."}
termination:
  any: [{text_mention: FINAL ANSWER}, {max_messages: 12}]
"""

ANNOUNCE = """
name: announce
description: Posts an announcement once approved.
model: scripted
approvers: {approvers}
agents:
  - name: announcer
    persona: {{display_name: Announcer, avatar: ":mega:"}}
    system_message: Post it.
    tools: [post_message]
termination:
  any: [{{text_mention: DONE}}, {{max_messages: 6}}]
"""

TWICE = """
name: twice
description: The announcer posts two announcements.
model: scripted
{extra}
agents:
  - name: announcer
    persona: {{display_name: Announcer, avatar: ":mega:"}}
    system_message: Post both.
    tools: [post_message]
termination:
  any: [{{text_mention: DONE}}, {{max_messages: 8}}]
"""
"""An announcer that posts twice (for approving a tool for the rest of the run); `{extra}`
takes more team settings, such as an approval quorum."""


def write_teams(directory: Path, *texts: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (directory / f"team{i}.yaml").write_text(textwrap.dedent(text))
    return directory


def make_host(store, poster, model: ScriptedModel, teams_dir: Path, **options) -> Host:
    catalog = TeamCatalog.load(teams_dir, strict=True)
    pool = ModelPool(env={}, overrides={"scripted": model})
    return Host(store=store, catalog=catalog, models=pool, poster=poster, **options)


def thread(n: int | str = 1) -> ThreadKey:
    return ThreadKey("test", "W1", "C1", str(n))


def summon(key: ThreadKey, text: str, user: str = "alice") -> Inbound:
    return Inbound(key, user, text, "summon", f"ev{next(_ids)}", display_name=user)


def say(key: ThreadKey, text: str, user: str = "alice", roles: tuple[str, ...] = ()) -> Inbound:
    return Inbound(key, user, text, "reply", f"ev{next(_ids)}", display_name=user, roles=roles)


def press(key: ThreadKey, action: str, call_id: str, user: str = "alice",
          roles: tuple[str, ...] = ()) -> Inbound:
    return Inbound(key, user, "", "button", f"ev{next(_ids)}", action=action, call_id=call_id,
                   roles=roles)
