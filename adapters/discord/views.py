"""Approve / Approve for this run / Deny buttons that keep working after the bot restarts.

Each button's `custom_id` names the decision and the call (`tt:approve:<call_id>`;
the decisions are the host's words: `approve`, `approve_always`, `deny`),
and `ApprovalButton` is a `DynamicItem` registered when the client starts, so a
press on a message posted by an earlier process is still understood: nothing
about the message needs to be in memory.
"""

from __future__ import annotations

import hashlib
from typing import Any

import discord

from threadteam.bot.shapes import ApprovalPrompt

__all__ = ["ApprovalButton", "approval_view", "custom_id_for"]

PREFIX = "tt"
_MAX_CUSTOM_ID = 100  # Discord's limit
# decision -> (label, style), in the order the buttons stand
_BUTTONS = {
    "approve": ("Approve", discord.ButtonStyle.success),
    "approve_always": ("Approve for this run", discord.ButtonStyle.primary),
    "deny": ("Deny", discord.ButtonStyle.danger),
}


def custom_id_for(action: str, call_id: str) -> tuple[str, bool]:
    """The button's custom_id, and whether the call id had to be shortened to a hash.

    A call id too long for Discord's 100 characters is replaced by `h.<digest>`;
    the adapter remembers digest -> call id in the store.
    """
    cid = f"{PREFIX}:{action}:{call_id}"
    if len(cid) <= _MAX_CUSTOM_ID:
        return cid, False
    return f"{PREFIX}:{action}:h.{call_ref_digest(call_id)}", True


def call_ref_digest(call_id: str) -> str:
    return hashlib.sha256(call_id.encode()).hexdigest()[:32]


class ApprovalButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=PREFIX + r":(?P<action>approve_always|approve|deny):(?P<ref>.+)",
):
    """One Approve, Approve for this run or Deny button; a press goes to the client's
    adapter (`on_click`)."""

    def __init__(self, action: str, ref: str, number: int = 1) -> None:
        label, style = _BUTTONS[action]
        if number > 1:  # "Approve #2", "Approve #2 for this run"
            first, _, rest = label.partition(" ")
            label = f"{first} #{number}" + (f" {rest}" if rest else "")
        super().__init__(discord.ui.Button(label=label, style=style,
                                           custom_id=f"{PREFIX}:{action}:{ref}"))
        self.action = action
        self.ref = ref

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: Any, /) -> ApprovalButton:
        return cls(match["action"], match["ref"])

    async def callback(self, interaction: discord.Interaction) -> None:
        adapter = getattr(interaction.client, "adapter", None)
        if adapter is not None:
            await adapter.on_click(interaction, self.action, self.ref)


def approval_view(prompt: ApprovalPrompt) -> tuple[discord.ui.View, list[str]]:
    """A view with Approve, Approve for this run (unless a quorum decides) and Deny for
    `prompt`, and the call ids that were hashed."""
    view = discord.ui.View(timeout=None)
    hashed: list[str] = []
    for action in _BUTTONS:
        if action == "approve_always" and not prompt.always:
            continue
        cid, was_hashed = custom_id_for(action, prompt.call_id)
        if was_hashed and prompt.call_id not in hashed:
            hashed.append(prompt.call_id)
        view.add_item(ApprovalButton(action, cid.split(":", 2)[2], prompt.number))
    return view, hashed
