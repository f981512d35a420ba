"""Structured logs (one JSON object a line, or plain text) that never carry a secret."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
import re
import sys
import time

#: Variables whose values must never appear in a log line, trace or error.
SECRET_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN",
                    "SLACK_SIGNING_SECRET", "DISCORD_BOT_TOKEN", "THREADTEAM_STORE", "REDIS_URL")
_TOKEN_SHAPES = re.compile(
    r"(xox[abprs]-[0-9A-Za-z-]{6,}|xapp-[0-9A-Za-z-]{6,}|sk-(?:ant-)?[A-Za-z0-9_-]{12,}"
    r"|(?<=://)[^/@\s:]*:[^/@\s]+(?=@))")


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with secret values and token-shaped strings replaced by ***."""
    values: Mapping[str, str] = os.environ if env is None else env
    for name in SECRET_VARIABLES:
        value = values.get(name, "")
        if len(value) >= 6 and name != "THREADTEAM_STORE" and name != "REDIS_URL":
            text = text.replace(value, "***")
    return _TOKEN_SHAPES.sub("***", text)


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
