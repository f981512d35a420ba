"""Discord's text rules: the 2,000-character limit, webhook names, emoji avatars."""

from __future__ import annotations

import re

from threadteam.teams.persona import Persona

__all__ = ["LIMIT", "emoji_of", "host_text", "split_message", "thread_name", "webhook_username"]

LIMIT = 2000

# Discord does not turn `:shortcode:` into an emoji when a bot or webhook
# sends it (only the desktop client's composer does), so the common ones are
# mapped to the characters themselves; an unknown one is dropped rather than
# shown as literal text.
_EMOJI = {
    "robot_face": "🤖", "robot": "🤖", "bear": "🐻", "ox": "🐂", "bull": "🐂", "cow": "🐄",
    "owl": "🦉", "fox_face": "🦊", "fox": "🦊", "wolf": "🐺", "cat": "🐱", "dog": "🐶",
    "scales": "⚖️", "balance_scale": "⚖️", "brain": "🧠", "bulb": "💡", "mag": "🔍",
    "mag_right": "🔎", "memo": "📝", "pencil": "✏️", "pencil2": "✏️", "books": "📚",
    "book": "📖", "chart_with_upwards_trend": "📈", "chart_with_downwards_trend": "📉",
    "bar_chart": "📊", "hammer_and_wrench": "🛠️", "wrench": "🔧", "hammer": "🔨",
    "gear": "⚙️", "shield": "🛡️", "lock": "🔒", "key": "🔑", "rocket": "🚀", "fire": "🔥",
    "star": "⭐", "sparkles": "✨", "zap": "⚡", "bell": "🔔", "speech_balloon": "💬",
    "thinking_face": "🤔", "thinking": "🤔", "smile": "😄", "eyes": "👀", "judge": "🧑‍⚖️",
    "detective": "🕵️", "scientist": "🧑‍🔬", "technologist": "🧑‍💻", "teacher": "🧑‍🏫",
    "ticket": "🎫", "sos": "🆘", "ambulance": "🚑", "stethoscope": "🩺", "package": "📦",
    "clipboard": "📋", "pushpin": "📌", "white_check_mark": "✅", "x": "❌",
    "warning": "⚠️", "globe_with_meridians": "🌐", "earth_americas": "🌎", "moneybag": "💰",
    "briefcase": "💼", "crystal_ball": "🔮", "test_tube": "🧪", "dna": "🧬", "microscope": "🔬",
    "telescope": "🔭", "compass": "🧭", "world_map": "🗺️", "hourglass": "⌛", "crab": "🦀",
    "snake": "🐍", "turtle": "🐢", "rabbit": "🐰", "penguin": "🐧", "unicorn": "🦄",
    "mega": "📣", "loudspeaker": "📢", "telephone_receiver": "📞", "telephone": "☎️",
    "credit_card": "💳", "bust_in_silhouette": "👤", "busts_in_silhouette": "👥",
    "lion": "🦁", "tiger": "🐯", "monkey_face": "🐵", "bee": "🐝", "octopus": "🐙",
}

_PARAGRAPH = re.compile(r"\n\s*\n")
_SLACK_BOLD = re.compile(r"(?<![*\w])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![*\w])")


def host_text(text: str) -> str:
    """The host's own wording in Discord markdown: its `*bold*` (Slack style) becomes `**bold**`.

    Only for texts the host writes (notices, refusals, help); agents' words
    are passed through as written.
    """
    return _SLACK_BOLD.sub(r"**\1**", text)


def emoji_of(persona: Persona) -> str:
    """The persona's emoji avatar as characters ('' when it has none or it is unknown)."""
    code = persona.avatar_emoji
    if code:
        return _EMOJI.get(code.strip(":").lower(), "")
    return persona.emoji or ""  # given as the emoji itself ("🐻"): used as is


def webhook_username(persona: Persona) -> str:
    """The name a webhook post shows: emoji + display name, within Discord's rules.

    Discord rejects webhook names containing "discord" or "clyde" and caps them
    at 80 characters; a zero-width joiner keeps such a name readable.
    """
    name = persona.display_name.strip() or "threadteam"
    emoji = emoji_of(persona)
    if emoji:
        name = f"{emoji} {name}"
    for word in ("discord", "clyde"):
        name = re.sub(word, lambda m: m.group(0)[0] + "\u200d" + m.group(0)[1:], name,
                      flags=re.IGNORECASE)
    return name[:80]


def thread_name(task: str) -> str:
    """A thread name from the task: one line, at most 100 characters."""
    line = " ".join(task.split()) or "threadteam run"
    return line if len(line) <= 100 else line[:99].rstrip() + "…"


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """Cut `text` into parts of at most `limit` characters, in order.

    Cuts fall at paragraph breaks where possible, then at line breaks, then at
    spaces, and only then mid-word. A cut inside a ``` code block closes the
    block and reopens it in the next part so both render as code.
    """
    text = text.strip("\n")
    if len(text) <= limit:
        return [text] if text else []
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = _cut_point(rest, limit - 4)  # room to close a code fence
        head, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n")
        if head.count("```") % 2:
            fence = _open_fence(head)
            head += "\n```"
            rest = fence + "\n" + rest
        parts.append(head)
    if rest.strip():
        parts.append(rest)
    return parts


def _cut_point(text: str, limit: int) -> int:
    window = text[:limit + 1]
    paragraphs = [m.start() for m in _PARAGRAPH.finditer(window)]
    for candidates in (paragraphs, _all(window, "\n"), _all(window, " ")):
        good = [i for i in candidates if i > limit // 4]
        if good:
            return good[-1]
    return limit


def _all(text: str, sep: str) -> list[int]:
    return [i for i, ch in enumerate(text) if ch == sep]


def _open_fence(head: str) -> str:
    """The ``` line that opened the code block still open at the end of `head`."""
    start = head.rfind("```")
    line_end = head.find("\n", start)
    return head[start:line_end] if line_end != -1 else "```"
