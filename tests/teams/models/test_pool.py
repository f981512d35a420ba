"""ModelPool: which model a name means, and one shared client per provider."""

from __future__ import annotations

import pytest

import threadteam.teams.models as models
from threadteam.teams.errors import ModelError
from threadteam.teams.models import ModelPool, RehearsalModel, ScriptedModel

from .helpers import ask

OPENAI = {"OPENAI_API_KEY": "sk-a"}
ANTHROPIC = {"ANTHROPIC_API_KEY": "sk-ant-a"}


def test_public_surface():
    assert {"ModelPool", "ScriptedModel", "ModelRequest", "ModelResponse", "ChatMessage",
            "ToolCall", "ToolSpec", "Usage", "Candidate", "Model"} <= set(models.__all__)
    for name in models.__all__:
        assert hasattr(models, name)


@pytest.mark.parametrize(("env", "preferred", "expected"), [
    ({**OPENAI, "THREADTEAM_MODEL": "anthropic:x"}, ("openai:agent", "openai:team"), "openai:agent"),
    ({**OPENAI, "THREADTEAM_MODEL": "anthropic:x"}, (None, "openai:team"), "openai:team"),
    ({**OPENAI, "THREADTEAM_MODEL": "anthropic:x"}, ("", " "), "anthropic:x"),
    ({**OPENAI, **ANTHROPIC}, (None, None), "openai:gpt-4o-mini"),
    ({"OPENAI_BASE_URL": "http://localhost:11434/v1"}, (), "openai:gpt-4o-mini"),
    (ANTHROPIC, (), "anthropic:claude-3-5-haiku-latest"),
    ({}, (None,), "rehearsal"),
    ({"THREADTEAM_MODEL": ""}, (), "rehearsal"),
])
def test_resolve_name_precedence(env, preferred, expected):
    assert ModelPool(env=env).resolve_name(*preferred) == expected


@pytest.mark.parametrize(("env", "expected"), [
    ({}, True),
    ({"THREADTEAM_MODEL": "rehearsal"}, False),  # chosen on purpose: no notice
    ({"THREADTEAM_MODEL": "openai:gpt-4o"}, False),
    (OPENAI, False),
    (ANTHROPIC, False),
])
def test_auto_rehearsal_only_when_nothing_is_configured(env, expected):
    assert ModelPool(env=env).auto_rehearsal() is expected


async def test_one_shared_client_per_provider():
    pool = ModelPool(env={**OPENAI, **ANTHROPIC})
    try:
        mini, big = pool.get("openai:gpt-4o-mini"), pool.get("openai:gpt-4o")
        haiku, sonnet = pool.get("anthropic:claude-3-5-haiku-latest"), pool.get("anthropic:sonnet")
        assert mini is not big and mini.name == "openai:gpt-4o-mini"
        assert mini._client is big._client
        assert haiku._client is sonnet._client
        assert pool.get("openai:gpt-4o") is big
    finally:
        await pool.aclose()
    assert mini._client.is_closed() and haiku._client.is_closed()


async def test_getting_a_model_does_no_network_io(fake_openai):
    pool = ModelPool(env={"OPENAI_BASE_URL": fake_openai.url})
    pool.get("openai:llama3")
    await pool.aclose()
    assert fake_openai.requests == []


async def test_rehearsal_needs_no_key():
    pool = ModelPool(env={})
    model = pool.get(pool.resolve_name())
    assert isinstance(model, RehearsalModel)
    assert (await model.complete(ask())).text.startswith("[rehearsal] ")


def test_overrides_win_over_providers():
    scripted = ScriptedModel(name="openai:gpt-4o")
    pool = ModelPool(env={}, overrides={"openai:gpt-4o": scripted, "fast": scripted})
    assert pool.get("openai:gpt-4o") is scripted
    assert pool.get("fast") is scripted


@pytest.mark.parametrize("name", ["gpt-4o", "mistral:large", "openai:", "anthropic:"])
def test_unknown_names_say_which_forms_are_valid(name):
    with pytest.raises(ModelError) as caught:
        ModelPool(env={**OPENAI, **ANTHROPIC}, overrides={"fast": ScriptedModel()}).get(name)
    message = str(caught.value)
    assert name in message
    assert "openai:<model>" in message and "anthropic:<model>" in message
    assert "rehearsal" in message and "'fast'" in message
