"""The fixtures of the Realtime tests (`test_realtime_client.py`, `test_realtime_stt.py`):
`fake`, the fake Realtime server (in place of the fake OpenAI server of `conftest.py`),
and `http`, a client session to reach it. A test module imports the functions; pytest
knows them by their fixture names."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fake_realtime import FakeRealtime, start_fake_realtime


@pytest.fixture(name="fake")
async def fake_realtime() -> AsyncIterator[FakeRealtime]:
    async with start_fake_realtime() as f:
        yield f


@pytest.fixture(name="http")
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
