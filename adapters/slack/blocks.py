"""Block Kit for the posts that need more than text: approval requests and their outcome."""

from __future__ import annotations

from typing import Any

from threadteam.bot.shapes import Outbound

from .inbound import ALWAYS_ACTION, APPROVE_ACTION, DENY_ACTION

__all__ = ["approval_blocks", "section"]


def approval_blocks(text: str, out: Outbound) -> list[dict[str, Any]]:
    """The request text, Approve / Approve for this run / Deny buttons naming the call, and
    how to answer by reply."""
    prompt = out.approval
    assert prompt is not None
    buttons = [_button("Approve", APPROVE_ACTION, prompt.call_id, "primary")]
    if prompt.always:
        buttons.append(_button("Approve for this run", ALWAYS_ACTION, prompt.call_id))
    buttons.append(_button("Deny", DENY_ACTION, prompt.call_id, "danger"))
    blocks: list[dict[str, Any]] = [section(text), {
        "type": "actions",
        "block_id": f"approval:{prompt.call_id}"[:255],
        "elements": buttons,
    }]
    if "`approve" not in text:  # the host's text usually says so already
        n = f" {prompt.number}" if prompt.number > 1 else ""
        blocks.append({"type": "context", "elements": [{
            "type": "mrkdwn",
            "text": f"Or reply `approve{n}` / `deny{n} <reason>` in this thread."}]})
    return blocks


def section(text: str) -> dict[str, Any]:
    """A section showing `text` (mrkdwn, already formatted) as it is: `verbatim`, so Slack
    links no bare channel name or `@handle` in it by itself."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": text or " ", "verbatim": True}}


def _button(label: str, action_id: str, value: str, style: str = "") -> dict[str, Any]:
    button = {"type": "button", "text": {"type": "plain_text", "text": label},
              "action_id": action_id, "value": value[:2000]}
    if style:  # Slack takes "primary" or "danger"; none is the plain default
        button["style"] = style
    return button
