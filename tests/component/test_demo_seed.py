"""The demo business at start-up: a server on a new SQLite database seeds it once
(`demo_seeded`), never over an operator's data, never with `IVR_DEMO_SEED=0`, and never a
PostgreSQL store; several processes starting together seed it once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web
from structlog.testing import capture_logs

from ivr.config import Settings
from ivr.server.app import create_app
from ivr.store.db import CallStore
from ivr.tools.seed import ACCOUNTS, ORDERS, SERVICES
from tests.conftest import db_rows, make_settings


async def _start_and_stop(settings: Settings) -> list[dict[str, Any]]:
    """Start the real application as `ivr serve` would, then stop it; its seed logs."""
    with capture_logs() as logs:
        runner = web.AppRunner(create_app(settings))
        await runner.setup()  # every start-up context runs here: store, engines, flows
        await runner.cleanup()
    return [e for e in logs if e["event"].startswith("demo_")]


def _settings(db: Path | str, tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(tmp_path, db=db, recognizer_workers=1, **overrides)


async def test_a_new_sqlite_database_gets_the_demo_business_once(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    [logged] = await _start_and_stop(_settings(db, tmp_path))
    assert logged["event"] == "demo_seeded" and logged["services"] == len(SERVICES)
    assert "IVR_DEMO_SEED=0" in logged["hint"]
    assert await db_rows(db, "SELECT name, duration_min FROM services ORDER BY name") == sorted(
        (name, minutes) for name, minutes, _ in SERVICES)
    assert len(await db_rows(db, "SELECT phone FROM accounts")) == len(ACCOUNTS)
    assert len(await db_rows(db, "SELECT number FROM orders")) == len(ORDERS)

    # What callers and the operator changed since is theirs: a second start neither
    # duplicates nor puts back anything.
    await _exec(db, "UPDATE services SET duration_min = 45 WHERE name = 'cleaning'",
                "DELETE FROM services WHERE name = 'filling'",
                "DELETE FROM orders WHERE number = '4567'")
    assert await _start_and_stop(_settings(db, tmp_path)) == []
    assert await db_rows(db, "SELECT name, duration_min FROM services ORDER BY name") == [
        ("checkup", 30), ("cleaning", 45), ("whitening", 60)]
    assert len(await db_rows(db, "SELECT number FROM orders")) == len(ORDERS) - 1


async def test_demo_seed_off_leaves_the_database_empty(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    settings = _settings(db, tmp_path, demo_seed=False)
    assert Settings.from_env({"IVR_DEMO_SEED": "0"}).demo_seed is False
    assert await _start_and_stop(settings) == []
    for table in ("services", "accounts", "orders", "bookings"):
        assert await db_rows(db, f"SELECT * FROM {table}") == [], table


async def test_a_database_with_services_is_left_untouched(tmp_path: Path) -> None:
    db = tmp_path / "operator.db"
    store = await CallStore.open(db)  # the operator's own database, their one service
    await store.close()
    await _exec(db, "INSERT INTO services (name, duration_min, description) "
                    "VALUES ('fluoride', 15, 'ours')")
    assert await _start_and_stop(_settings(db, tmp_path)) == []
    assert await db_rows(db, "SELECT name, duration_min, description FROM services") == [
        ("fluoride", 15, "ours")]
    # Nothing else of the demo either: the operator's database is not a demo.
    for table in ("accounts", "orders", "bookings"):
        assert await db_rows(db, f"SELECT * FROM {table}") == [], table


async def test_servers_starting_together_seed_once(tmp_path: Path) -> None:
    """`ivr serve --processes 2` on a new file: the look and the seed are one write
    transaction, so one start seeds and the other finds the services."""
    db = tmp_path / "shared.db"
    logs = await asyncio.gather(*(_start_and_stop(_settings(db, tmp_path / str(i)))
                                  for i in range(2)))
    assert sorted(len(x) for x in logs) == [0, 1]
    assert len(await db_rows(db, "SELECT name FROM services")) == len(SERVICES)


async def test_a_postgresql_store_is_never_seeded_implicitly(
    tmp_path: Path, pg_url: str,
) -> None:
    [logged] = await _start_and_stop(_settings(pg_url, tmp_path))
    assert logged["event"] == "demo_not_seeded" and "ivr db seed" in logged["hint"]
    assert await db_rows(pg_url, "SELECT name FROM services") == []


async def _exec(db: Path, *statements: str) -> None:
    from ivr.store.backend import connect

    conn = await connect(db)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()
