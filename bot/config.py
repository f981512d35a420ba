"""Settings from flags and the environment, checked at start with errors that name the variable.

A command reads only the settings it uses (`uses=`), so a wrong value of one it does not
use never stops it: `PORT=abc` is `run slack`'s business, not `teams list`'s.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from threadteam.teams.code import CodeSettings
from threadteam.teams.errors import ToolError

from .errors import ConfigError
from .limits import SummonLimits
from .stores import default_store_url

__all__ = ["EVERY_SETTING", "Settings"]

#: The settings a command may use (`Settings.from_env(uses=...)`); PORT is asked for
#: separately, by the one command that serves HTTP (`Settings.http_port`).
EVERY_SETTING = frozenset({"store", "model", "teams_dir", "log_level", "lease_ttl", "limits",
                           "code"})

_PROVIDERS = ("openai", "anthropic")
_MODEL_HINT = "openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest or rehearsal"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_PORT = 3000


@dataclass(frozen=True)
class Settings:
    """What a threadteam process runs with. Secrets stay in `env`, never in fields."""

    store_url: str = field(default_factory=default_store_url)
    model: str | None = None
    teams_dir: str | None = None
    log_level: str = "INFO"
    lease_ttl: float = 10.0
    limits: SummonLimits = field(default_factory=SummonLimits)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, store: str | None = None,
                 model: str | None = None, teams_dir: str | None = None,
                 uses: Collection[str] = EVERY_SETTING) -> Settings:
        """Flags win over variables; each setting in `uses` is read and checked here, once,
        at start (a ConfigError of one line naming the flag or variable). Settings not in
        `uses` keep their defaults, whatever the environment says."""
        env = dict(os.environ if env is None else env)
        unknown = set(uses) - EVERY_SETTING
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        values: dict[str, object] = {}
        if "store" in uses:
            values["store_url"] = _store(store, env)
        if "model" in uses:
            values["model"] = _model(model, env)
        if "teams_dir" in uses:
            values["teams_dir"] = _teams_dir(teams_dir, env)
        if "log_level" in uses:
            values["log_level"] = _log_level(env)
        if "lease_ttl" in uses:
            values["lease_ttl"] = _seconds(env, "THREADTEAM_LEASE_TTL", 10.0)
        if "limits" in uses:
            values["limits"] = SummonLimits(
                active_per_user=_count(env, "THREADTEAM_MAX_ACTIVE_RUNS_PER_USER", 3),
                per_hour=_count(env, "THREADTEAM_MAX_RUNS_PER_HOUR", 60))
        if "code" in uses:  # run_code's THREADTEAM_CODE_* (read again where code runs)
            try:
                CodeSettings.from_env(env)
            except ToolError as exc:
                raise ConfigError(str(exc)) from None
        return cls(env=env, **values)  # type: ignore[arg-type]

    def http_port(self, flag: int | None = None) -> int:
        """The port to serve HTTP on: `--port`, else PORT, else 3000 (PORT empty is unset).

        Asked for only by a command that serves HTTP, so a wrong PORT stops nothing else.
        """
        if flag is not None:
            if not 0 <= flag <= 65535:
                raise ConfigError(f"--port must be a port number from 0 to 65535, got {flag}")
            return flag
        text = (self.env.get("PORT") or "").strip()
        if not text:
            return DEFAULT_PORT
        if not text.isdigit() or int(text) > 65535:
            raise ConfigError(f"PORT must be a port number from 0 to 65535 (or unset for "
                              f"{DEFAULT_PORT}), got {text!r}")
        return int(text)

    def model_env(self) -> dict[str, str]:
        """The environment the model pool reads, with THREADTEAM_MODEL from the flag."""
        env = dict(self.env)
        if self.model:
            env["THREADTEAM_MODEL"] = self.model
        return env


def _store(flag: str | None, env: Mapping[str, str]) -> str:
    url = (flag or env.get("THREADTEAM_STORE") or "").strip() or default_store_url()
    if not url.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
        src = "--store" if flag else "THREADTEAM_STORE"
        raise ConfigError(f"{src} must be sqlite:///path or redis://host:port/db, "
                          f"got {url.split('@')[-1]!r}")
    return url


def _model(flag: str | None, env: Mapping[str, str]) -> str | None:
    """`openai:NAME`, `anthropic:NAME` or exactly `rehearsal` (what the model pool builds)."""
    name = (flag or env.get("THREADTEAM_MODEL") or "").strip()
    if not name:
        return None
    provider, colon, model = name.partition(":")
    if name == "rehearsal":
        return name
    if provider in _PROVIDERS and colon and model.strip():
        return f"{provider}:{model.strip()}"
    src = "--model" if flag else "THREADTEAM_MODEL"
    raise ConfigError(f"{src} must look like {_MODEL_HINT}, got {name!r}")


def _teams_dir(flag: str | None, env: Mapping[str, str]) -> str | None:
    folder = flag or env.get("THREADTEAM_TEAMS_DIR") or None
    if folder and not Path(folder).expanduser().is_dir():
        src = "--teams-dir" if flag else "THREADTEAM_TEAMS_DIR"
        raise ConfigError(f"{src} is {folder!r}, which is not a directory")
    return folder


def _log_level(env: Mapping[str, str]) -> str:
    level = (env.get("THREADTEAM_LOG_LEVEL") or "").strip() or "INFO"
    if level.upper() not in _LEVELS:
        raise ConfigError(f"THREADTEAM_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
                          f"got {level!r}")
    return level.upper()


def _seconds(env: Mapping[str, str], variable: str, default: float) -> float:
    text = (env.get(variable) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(f"{variable} must be a positive number of seconds, got {text!r}")
    return value


def _count(env: Mapping[str, str], variable: str, default: int) -> int:
    text = (env.get(variable) or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{variable} must be a whole number above 0, got {text!r}")
    return value
