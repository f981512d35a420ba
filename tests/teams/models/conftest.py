"""Models built through a real ModelPool, pointed at the local fake servers."""

from __future__ import annotations

import anthropic
import openai
import pytest_asyncio

from threadteam.teams.models import ModelPool
from threadteam.teams.models._retry import RetryPolicy
from threadteam.teams.models.anthropic import AnthropicModel
from threadteam.teams.models.openai import OpenAIModel

from .helpers import ANTHROPIC_KEY, INTERNAL_HOST, OPENAI_KEY

TINY = 0.001  # retry backoff base: retries stay real but take no time


@pytest_asyncio.fixture
async def openai_pool(fake_openai):
    pool = ModelPool(env={"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": fake_openai.url},
                     retry_base=TINY)
    yield pool
    await pool.aclose()


@pytest_asyncio.fixture
async def anthropic_pool(fake_anthropic):
    pool = ModelPool(env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY,
                          "ANTHROPIC_BASE_URL": fake_anthropic.url}, retry_base=TINY)
    yield pool
    await pool.aclose()


@pytest_asyncio.fixture
async def gpt(openai_pool):
    return openai_pool.get("openai:gpt-4o-mini")


@pytest_asyncio.fixture
async def claude(anthropic_pool):
    return anthropic_pool.get("anthropic:claude-3-5-haiku-latest")


@pytest_asyncio.fixture
async def internal_gpt(fake_openai):
    """An OpenAI-compatible server known by an internal host name (reached through the fake
    as a proxy, since the name resolves nowhere)."""
    client = openai.AsyncOpenAI(
        base_url=fake_openai.url_at(INTERNAL_HOST), api_key=OPENAI_KEY, max_retries=0,
        http_client=openai.DefaultAioHttpClient(proxy=fake_openai.proxy_url))
    model = OpenAIModel(client, "gpt-4o-mini", policy=RetryPolicy(base=TINY), owns_client=True)
    yield model
    await model.aclose()


@pytest_asyncio.fixture
async def internal_claude(fake_anthropic):
    """Anthropic behind a gateway with an internal host name (ANTHROPIC_BASE_URL)."""
    client = anthropic.AsyncAnthropic(
        base_url=fake_anthropic.url_at(INTERNAL_HOST), api_key=ANTHROPIC_KEY, max_retries=0,
        http_client=anthropic.DefaultAioHttpClient(proxy=fake_anthropic.proxy_url))
    model = AnthropicModel(client, "claude-3-5-haiku-latest", policy=RetryPolicy(base=TINY),
                           owns_client=True)
    yield model
    await model.aclose()
