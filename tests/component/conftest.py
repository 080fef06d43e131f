"""Fixtures shared by the component tests of the LLM client and agent (`test_llm.py`,
`test_llm_audio.py`): the fake OpenAI server, a chat client on it, a seeded database and
its tool registry. A test module may override any of them with one of its own (and
`llm_model`, the model the chat client asks for)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ivr.config import ProviderConfig
from ivr.llm import ChatClient
from ivr.providers.http import ProviderClient
from ivr.tools import ToolRegistry, default_registry, seed
from tests.component.test_tools import MONDAY
from tests.fake_openai import FakeOpenAI, start_fake_openai


async def _no_sleep(_: float) -> None:
    return None


def provider(base_url: str, session: aiohttp.ClientSession) -> ProviderClient:
    config = ProviderConfig(role="llm", base_url=base_url, model="test-model", max_retries=1,
                            timeout_read_s=5.0)
    return ProviderClient(config, session, sleep=_no_sleep)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with start_fake_openai() as f:
        yield f


@pytest.fixture
def llm_model() -> str:
    return "test-model"


@pytest.fixture
async def chat(fake: FakeOpenAI, llm_model: str) -> AsyncIterator[ChatClient]:
    async with aiohttp.ClientSession() as session:
        yield ChatClient(provider(fake.base_url, session), llm_model)


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "ivr.db"
    await seed(path, today=MONDAY)
    return path


@pytest.fixture
def registry(db: Path) -> ToolRegistry:
    return default_registry(db)
