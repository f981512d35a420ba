"""Settings from flags and the environment, checked at start with errors that name the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .limits import SummonLimits
from .stores import default_store_url

__all__ = ["Settings"]

_PROVIDERS = ("openai:", "anthropic:", "rehearsal")


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
                 model: str | None = None, teams_dir: str | None = None) -> Settings:
        """Flags win over variables; every value is checked here, once, at start."""
        env = dict(os.environ if env is None else env)
        settings = cls(
            store_url=store or env.get("THREADTEAM_STORE") or default_store_url(),
            model=model or env.get("THREADTEAM_MODEL") or None,
            teams_dir=teams_dir or env.get("THREADTEAM_TEAMS_DIR") or None,
            log_level=env.get("THREADTEAM_LOG_LEVEL", "INFO"),
            lease_ttl=_seconds(env.get("THREADTEAM_LEASE_TTL", "10"), "THREADTEAM_LEASE_TTL"),
            limits=SummonLimits(
                active_per_user=_count(env, "THREADTEAM_MAX_ACTIVE_RUNS_PER_USER", 3),
                per_hour=_count(env, "THREADTEAM_MAX_RUNS_PER_HOUR", 60)),
            env=env,
        )
        settings.check(store_flag=bool(store), model_flag=bool(model), teams_flag=bool(teams_dir))
        return settings

    def check(self, *, store_flag: bool = False, model_flag: bool = False,
              teams_flag: bool = False) -> None:
        store_src = "--store" if store_flag else "THREADTEAM_STORE"
        if not self.store_url.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
            raise ConfigError(f"{store_src} must be sqlite:///path or redis://host:port/db, "
                              f"got {self.store_url.split('@')[-1]!r}")
        if self.model and not (self.model.startswith(_PROVIDERS) and
                               (self.model == "rehearsal" or len(self.model.split(":", 1)[1]) > 0)):
            src = "--model" if model_flag else "THREADTEAM_MODEL"
            raise ConfigError(f"{src} must look like openai:gpt-4o-mini, "
                              f"anthropic:claude-3-5-haiku-latest or rehearsal, got {self.model!r}")
        if self.teams_dir and not Path(self.teams_dir).expanduser().is_dir():
            src = "--teams-dir" if teams_flag else "THREADTEAM_TEAMS_DIR"
            raise ConfigError(f"{src} is {self.teams_dir!r}, which is not a directory")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"THREADTEAM_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
                              f"got {self.log_level!r}")

    def model_env(self) -> dict[str, str]:
        """The environment the model pool reads, with THREADTEAM_MODEL from the flag."""
        env = dict(self.env)
        if self.model:
            env["THREADTEAM_MODEL"] = self.model
        return env


def _seconds(text: str, variable: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{variable} must be a positive number of seconds, got {text!r}")
    return value


def _count(env: Mapping[str, str], variable: str, default: int) -> int:
    text = env.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{variable} must be a whole number above 0, got {text!r}")
    return value
