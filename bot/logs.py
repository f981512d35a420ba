"""Structured logs (one JSON object a line, or plain text) that never carry a secret."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping

from threadteam.teams.redact import redact as _redact

__all__ = ["SECRET_VARIABLES", "redact", "setup_logging"]

#: Variables whose values must never appear in a log line, trace or error.
SECRET_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
                    "SLACK_SIGNING_SECRET", "DISCORD_BOT_TOKEN", "THREADTEAM_STORE", "REDIS_URL")


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with secret values and token-shaped strings replaced by ***: the one
    `threadteam.teams.redact`, fed the values of the secret variables."""
    values: Mapping[str, str] = os.environ if env is None else env
    secrets = [v for n in SECRET_VARIABLES if n not in ("THREADTEAM_STORE", "REDIS_URL")
               and len(v := values.get(n, "")) >= 6]
    return _redact(text, secrets, mask="***", opaque=False)


class _Redacting(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        message = redact(message)
        if not self.as_json:
            return f"{time.strftime('%H:%M:%S')} {record.levelname.lower():7} {record.name}: {message}"
        return json.dumps({"ts": round(record.created, 3), "level": record.levelname.lower(),
                           "logger": record.name, "msg": message}, ensure_ascii=False)


def setup_logging(level: str = "INFO", as_json: bool | None = None) -> None:
    """Log to stderr; JSON lines unless stderr is a terminal."""
    if as_json is None:
        as_json = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Redacting(as_json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpx2", "openai", "anthropic", "discord", "slack_bolt", "slack_sdk",
                  "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
