"""Shared fixtures: a real server app on loopback with a temporary database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from ivr.config import Settings
from ivr.server.app import create_app

ROOT = Path(__file__).resolve().parent.parent


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "db": tmp_path / "ivr.db", "flows": ROOT / "flows", "recognizer_workers": 2,
        # The loop-lag refusal is tested on its own (tests/*/test_admission.py) with an
        # injected lag; a busy test machine must not turn test calls away.
        "max_loop_lag_ms": 0,
    }
    values.update(overrides)
    return Settings.from_env({}, **values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[TestServer]:
    """The real application on a loopback port (127.0.0.1)."""
    app: web.Application = create_app(settings)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Commands run in-process (`ivr db recover`, `ivr report`, ...) configure logging for
    a terminal (level warning); the next test's `capture_logs` must still see info events."""
    saved = structlog.get_config()
    saved = {**saved, "processors": list(saved["processors"])}
    yield
    structlog.configure(**saved)
