"""The two platform-neutral shapes that cross between adapters and the host.

An adapter turns a platform event into an `Inbound` and hands it to
`Host.handle`; the host answers through the adapter's `Poster` with `Outbound`
posts. Nothing here names a platform's API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from threadteam.teams.persona import Persona

__all__ = [
    "BOT_PERSONA", "ApprovalPrompt", "Directory", "Handled", "Inbound", "Memory", "Outbound",
    "Poster", "RunSummary", "ThreadKey",
]


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """Names one thread, and so one run: platform, workspace/guild, channel, thread id."""

    platform: str
    workspace: str
    channel: str
    thread: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.workspace}:{self.channel}:{self.thread}"

    @classmethod
    def parse(cls, text: str) -> ThreadKey:
        platform, workspace, channel, thread = text.split(":", 3)
        return cls(platform, workspace, channel, thread)


InboundKind = Literal["summon", "reply", "command", "button"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """Something a person did in a thread.

    - summon: `text` is `<team> <task>`; `key` is the thread the run will live in
    - reply: a message in a run's thread (a command word or plain text)
    - button: an approval button; `action` is "approve", "approve_always" (for the rest of
      the run) or "deny"; `call_id` names the call
    `event_id` is the platform's id for de-duplication; `sent_at`, the platform's
    time of the message, tells which approval requests the person could have seen; `roles`, when the platform
    event already carries them, are the labels of the person's roles (for `role:`
    approvers); otherwise the host asks the adapter's `Directory` when it needs them.
    """

    key: ThreadKey
    user: str
    text: str
    kind: InboundKind
    event_id: str
    display_name: str = ""
    roles: tuple[str, ...] = ()
    action: str | None = None
    call_id: str | None = None
    sent_at: float | None = None  # when the platform says the person sent it (epoch s)


@dataclass(frozen=True, slots=True)
class ApprovalPrompt:
    """Buttons under an approval request; `call_id` is what a button press names."""

    call_id: str
    tool: str
    args: dict[str, Any]
    number: int = 1  # "approve 2" picks the second pending approval
    always: bool = True  # offer "Approve for this run" too (not where a quorum decides)


BOT_PERSONA = Persona(display_name="threadteam", avatar="")


@dataclass(frozen=True, slots=True)
class Outbound:
    """One post the host wants in a thread.

    `persona` is the agent's face (or the bot's own for host notices).
    `idempotency_key` is unique per post: the host records the platform's message
    id under it and never posts the same key twice. `approval`, when set, asks for
    Approve / Deny buttons. `meta["agent"]` marks text a model wrote (Markdown, for
    the adapter to translate), as opposed to the host's own notices.

    `unsure` says an earlier attempt of this very post may have reached the platform
    (a crash or a lost answer before its message id was recorded): the poster looks
    for a post carrying `idempotency_key` (Slack message metadata, a Discord nonce or
    the webhook's recent posts) and returns its id instead of posting again.
    """

    key: ThreadKey
    text: str
    idempotency_key: str
    persona: Persona = BOT_PERSONA
    approval: ApprovalPrompt | None = None
    notice: bool = False  # a host notice (usage, errors, status) rather than an agent turn
    meta: dict[str, Any] = field(default_factory=dict)
    unsure: bool = False


class Poster(Protocol):
    """What an adapter offers the host for output.

    A poster that can show a reply while the model writes it also offers
    `stream(key, persona) -> TextSink | None`, asked right after `working`: the
    model's text deltas go there (Slack streams them into a message under the persona,
    or edits a placeholder post; Discord edits a webhook message; the console prints
    them), and the post that follows is the whole reply, made once.
    A poster whose message ids carry the platform's time (a Slack `ts`, a Discord
    snowflake) also offers `posted_at(message_id) -> float | None`, so a bare `approve`
    is matched only against requests posted before the person wrote it.
    """

    async def post(self, out: Outbound) -> str:
        """Post in the thread; return the platform's message id.

        Long text is split by the adapter; the id returned is the part `edit` must reach
        later: the one carrying the approval buttons, else the first. Rate limits are
        waited out, never dropped.
        """
        ...

    async def edit(self, out: Outbound, message_id: str) -> None:
        """Replace a message's text in place (e.g. "Approved by @alice"), dropping buttons."""
        ...

    async def working(self, key: ThreadKey, persona: Persona) -> None:
        """Show that `persona` is working (typing indicator or status)."""
        ...

    def mention(self, user: str) -> str:
        """How to name `user` in a post (e.g. `<@U123>`)."""
        ...


@dataclass(frozen=True, slots=True)
class Handled:
    """What became of an `Inbound`: `private` is a reply only the person should see;
    `taken` says a person's message went into a run (for an adapter's "seen" mark)."""

    private: str | None = None
    taken: bool = False


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run as a person would name it: where it lives, its team and task, its status."""

    run_id: str
    key: ThreadKey
    team: str
    task: str
    status: str
    headline: str  # the first line of `status`, e.g. "*debate* — waiting for a reply"
    pending: tuple[Outbound, ...] = ()  # its approval requests still waiting, to show again


class Directory(Protocol):
    """What an adapter knows of people that the host may ask for."""

    async def roles(self, key: ThreadKey, user: str) -> frozenset[str]:
        """Labels of the roles `user` holds where `key` lives (what `role:` approvers match).

        Asked only while deciding an approval whose run names `role:` approvers.
        A failure is the adapter's to log; it answers with no roles.
        """
        ...

    async def reach(self, key: ThreadKey, user: str, channel: str) -> str:
        """The channel id that `channel` (`#name`, `<#id>` or an id) names where `key`
        lives, if `user` could post there themselves; else raise `Refused` saying why.

        Asked before an approved side effect posts outside its thread (`post_message`):
        an approved action reaches no further than the person who approved it. Never
        another workspace or guild, never a user or a DM; on Slack only a channel the
        person is a member of, on Discord one where their permissions let them post.
        """
        ...


class Memory(Protocol):
    """Small durable values an adapter keeps (webhook ids, placeholder posts), in the
    host's store under the adapter's own namespace."""

    async def get(self, key: str) -> str | None:
        """The value stored under `key`, if any."""
        ...

    async def set(self, key: str, value: str) -> None:
        """Store `value` under `key`."""
        ...
