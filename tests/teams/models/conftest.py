"""Models built through a real ModelPool, pointed at the local fake servers."""

from __future__ import annotations

import pytest_asyncio

from threadteam.teams.models import ModelPool

from .helpers import ANTHROPIC_KEY, OPENAI_KEY

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
