"""Shared fixtures: a real server app on loopback with a temporary database, and the
databases of both back ends (`db_target`: a SQLite file, or a fresh schema on the
PostgreSQL server `IVR_TEST_DATABASE_URL` names; skipped without one)."""

from __future__ import annotations

import asyncio
import atexit
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
    """Settings for a test server. Its database: `tmp_path/ivr.db`, or with `IVR_DB` set
    to a PostgreSQL URL (`make test-pg`) a fresh schema of its own there."""
    values: dict[str, object] = {
        "db": _test_database(tmp_path), "flows": ROOT / "flows", "recognizer_workers": 2,
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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line, when the PostgreSQL tests were skipped, saying how to run them."""
    skipped = terminalreporter.stats.get("skipped", [])
    count = sum(PG_SKIP in str(getattr(r, "longrepr", "")) for r in skipped)
    if count:
        terminalreporter.write_line(f"{count} skipped: {PG_SKIP}")


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


_session_database: list[str] = []  # made on first use, dropped at exit


def _session_pg_database(base: str) -> str:
    """A database of this test run's own on the server `base` names (`ivr_test_<random>`,
    so parallel runs never meet), dropped when the run ends."""
    if not _session_database:
        name = f"ivr_test_{secrets.token_hex(5)}"
        _run(_admin(base, f'CREATE DATABASE "{name}"'))
        atexit.register(lambda: _run(_admin(base, f'DROP DATABASE IF EXISTS "{name}" '
                                                  "WITH (FORCE)")))
        _session_database.append(_with_database(base, name))
    return _session_database[0]


def fresh_database(tmp_path: Path) -> Path | str:
    """A new test database: `tmp_path/ivr.db`, or with `IVR_DB` set to a PostgreSQL URL a
    fresh schema in the run's database."""
    return _test_database(tmp_path)


def _test_database(tmp_path: Path) -> Path | str:
    url = os.environ.get("IVR_DB", "")
    if not is_database_url(url):
        return tmp_path / "ivr.db"
    return new_pg_schema(_session_pg_database(os.environ.get(PG_ENV) or url))


@pytest.fixture(scope="session")
def pg_database() -> str:
    """The test run's database on the `IVR_TEST_DATABASE_URL` server; skipped without."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    return _session_pg_database(base)


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


def db_query(db: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a test database of either back end, from sync code (on a loop
    of its own); its rows as tuples."""
    from ivr.store.backend import connect

    async def go() -> list[tuple[Any, ...]]:
        conn = await connect(db)
        try:
            if sql.lstrip().upper().startswith("SELECT"):
                return [tuple(r.values()) for r in await conn.fetch(sql, params)]
            await conn.execute(sql, params)
            return []
        finally:
            await conn.close()

    result: list[tuple[Any, ...]] = _run(go())
    return result


async def db_rows(db: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A query's rows as tuples, on a test database of either back end."""
    from ivr.store.backend import connect

    conn = await connect(db)
    try:
        return [tuple(r.values()) for r in await conn.fetch(sql, params)]
    finally:
        await conn.close()
