"""The one `redact`: secrets and anything shaped like a key or token, taken out of text.

Model errors (teams/models), log lines and CLI errors (bot/logs) all go through it,
so a key shape learnt once is hidden everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["redact"]

# Each alternative is a plain character run: linear time on any input.
_TOKEN_SHAPES = re.compile(
    r"xox[abeprs]-[0-9A-Za-z-]{6,}|xapp-[0-9A-Za-z-]{6,}"  # Slack tokens
    r"|\bsk-[A-Za-z0-9_\-*]{6,}"  # OpenAI and Anthropic keys (sk-…, sk-ant-…)
    r"|\b[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{20,}"  # Discord bot tokens
    r"|(?<=://)[^/@\s:]*:[^/@\s]+(?=@)")  # the password in scheme://user:password@host
# A key of a shape not listed above. Off for logs, where 32-hex run ids look just like it.
_OPAQUE = re.compile(r"\b[A-Za-z0-9_\-]{32,}")


def redact(text: str, secrets: Iterable[str | None] = (), *, mask: str = "[redacted]",
           opaque: bool = True) -> str:
    """`text` with each of `secrets` and every token-shaped string replaced by `mask`.

    `opaque` also hides any run of 32 or more key characters (a key of an unknown shape).
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, mask)
    text = _TOKEN_SHAPES.sub(mask, text)
    return _OPAQUE.sub(mask, text) if opaque else text
