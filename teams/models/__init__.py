"""Models: one interface, one module per vendor, and the pool that hands them out.

Names are `openai:<model>`, `anthropic:<model>` or `rehearsal`. The vendor
modules are imported on first use, so a rehearsal-only run never loads them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from ..errors import ModelError
from ._retry import IDLE_TIMEOUT, TURN_TIMEOUT, RetryPolicy
from .base import (
    Candidate,
    ChatMessage,
    Model,
    ModelRequest,
    ModelResponse,
    RetrySink,
    TextSink,
    ToolCall,
    ToolSpec,
    Usage,
)
from .rehearsal import RehearsalModel
from .scripted import ScriptedModel

# Seconds a model may stay silent in one attempt, and seconds a turn may wait for the
# answer to begin (retries included).
MODEL_TIMEOUT_VARIABLE = "THREADTEAM_MODEL_TIMEOUT"
TURN_TIMEOUT_VARIABLE = "THREADTEAM_TURN_TIMEOUT"

AUTO_OPENAI = "openai:gpt-4o-mini"
AUTO_ANTHROPIC = "anthropic:claude-3-5-haiku-latest"
REHEARSAL = "rehearsal"


class ModelPool:
    """Resolves model names and hands out models; one vendor client per provider and base URL."""

    def __init__(self, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Model] | None = None, retry_base: float = 0.5) -> None:
        self._env = os.environ if env is None else env
        self._overrides = dict(overrides or {})
        self._policy = RetryPolicy(
            base=retry_base,
            idle_timeout=_seconds(self._env, MODEL_TIMEOUT_VARIABLE, IDLE_TIMEOUT),
            turn_timeout=_seconds(self._env, TURN_TIMEOUT_VARIABLE, TURN_TIMEOUT))
        self._clients: dict[tuple[str, str], Any] = {}
        self._models: dict[str, Model] = {}

    def resolve_name(self, *preferred: str | None) -> str:
        """The first non-empty of `preferred` (agent's, team's), else THREADTEAM_MODEL, else auto."""
        for name in (*preferred, self._env.get("THREADTEAM_MODEL")):
            if name and name.strip():
                return name.strip()
        if self._env.get("OPENAI_API_KEY") or self._env.get("OPENAI_BASE_URL"):
            return AUTO_OPENAI
        if self._env.get("ANTHROPIC_API_KEY"):
            return AUTO_ANTHROPIC
        return REHEARSAL

    def auto_rehearsal(self) -> bool:
        """True when nothing is configured, so the automatic choice is the rehearsal model."""
        return self.resolve_name() == REHEARSAL and not (self._env.get("THREADTEAM_MODEL") or "").strip()

    def get(self, name: str) -> Model:
        """The model for `name`; raises ModelError (or MissingCredentials) if it cannot be built."""
        name = name.strip()
        if name in self._overrides:
            return self._overrides[name]
        if name not in self._models:
            self._models[name] = self._build(name)
        return self._models[name]

    async def aclose(self) -> None:
        """Close every shared vendor client (overrides belong to whoever made them)."""
        clients, self._clients = list(self._clients.values()), {}
        self._models.clear()
        for client in clients:
            await client.close()

    def _build(self, name: str) -> Model:
        if name == REHEARSAL:
            return RehearsalModel()
        provider, _, model = name.partition(":")
        if provider == "openai" and model:
            from . import openai as vendor
            base = self._env.get("OPENAI_BASE_URL") or vendor.DEFAULT_BASE_URL
            client = self._client("openai", base, vendor.make_client)
            return vendor.OpenAIModel(client, model, policy=self._policy)
        if provider == "anthropic" and model:
            from . import anthropic as vendor_a
            base = self._env.get("ANTHROPIC_BASE_URL") or vendor_a.DEFAULT_BASE_URL
            client = self._client("anthropic", base, vendor_a.make_client)
            return vendor_a.AnthropicModel(client, model, policy=self._policy)
        extra = "".join(f", '{key}'" for key in sorted(self._overrides))
        raise ModelError(
            f"Unknown model '{name}': use 'openai:<model>' (also for OpenAI-compatible servers "
            f"via OPENAI_BASE_URL), 'anthropic:<model>' or '{REHEARSAL}'{extra}.")

    def _client(self, provider: str, base_url: str, make: Any) -> Any:
        key = (provider, base_url)
        if key not in self._clients:
            self._clients[key] = make(self._env)
        return self._clients[key]


def _seconds(env: Mapping[str, str], variable: str, default: float) -> float:
    text = (env.get(variable) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise ModelError(f"{variable} must be a positive number of seconds, got {text!r}.")
    return value


__all__ = [
    "Candidate", "ChatMessage", "Model", "ModelError", "ModelPool", "ModelRequest",
    "ModelResponse", "RehearsalModel", "RetrySink", "ScriptedModel", "TextSink", "ToolCall",
    "ToolSpec", "Usage",
]
