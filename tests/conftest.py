"""Shared fixtures: a real server app on loopback with a temporary database, and the
databases of both back ends (`db_target`: a SQLite file, or a fresh schema on the
PostgreSQL server `IVR_TEST_DATABASE_URL` names; skipped without one)."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from ivr.config import Settings, is_database_url
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
    if is_database_url(str(values["db"])) and "cache_dir" not in overrides:
        # A URL store's cache (and spill file) would default to the working directory.
        values["cache_dir"] = tmp_path / "ivr-cache"
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


# ------------------------------------------------------------------ PostgreSQL

PG_ENV = "IVR_TEST_DATABASE_URL"
PG_SKIP = (f"PostgreSQL tests: set {PG_ENV}=postgresql://postgres@127.0.0.1:5432/postgres "
           "or run make test-pg")


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` to the end on a loop of its own (in a thread: a test's loop may run)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            out["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of this test session's own on the `IVR_TEST_DATABASE_URL` server
    (`ivr_test_<random>`, so parallel runs never meet), dropped at the end."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    name = f"ivr_test_{secrets.token_hex(5)}"
    _run(_admin(base, f'CREATE DATABASE "{name}"'))
    yield _with_database(base, name)
    _run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """A fresh schema of this test's own in the session's database: its URL sets the
    search path (asyncpg passes unknown URL parameters as server settings)."""
    return new_pg_schema(pg_database)


def new_pg_schema(database_url: str) -> str:
    schema = f"t_{secrets.token_hex(6)}"
    _run(_admin(database_url, f'CREATE SCHEMA "{schema}"'))
    sep = "&" if urlsplit(database_url).query else "?"
    return f"{database_url}{sep}search_path={schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """An empty database of each back end: a SQLite path, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return tmp_path / "ivr.db"
    url: str = request.getfixturevalue("pg_url")
    return url
