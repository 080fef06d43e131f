"""Demo data for the tools: services, orders, accounts and a couple of bookings.

Idempotent: every row has a fixed key and goes in with INSERT OR IGNORE, so seeding again
(even on another day) adds nothing and never overwrites what callers changed since.
Dates are relative to `today` on the first seeding.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from ivr.store.db import CallStore, utc_now
from ivr.tools.base import BUSY_TIMEOUT_S
from ivr.tools.builtin.availability import OPEN_WEEKDAYS

SERVICES: tuple[tuple[str, int, str], ...] = (
    ("cleaning", 30, "Routine cleaning and polish"),
    ("checkup", 30, "Examination and advice"),
    ("whitening", 60, "Whitening treatment"),
    ("filling", 60, "A filling for one tooth"),
)

ACCOUNTS: tuple[tuple[str, str, int, str], ...] = (  # phone, name, balance_cents, plan
    ("+15550100001", "Alice Johnson", 1250, "Gold"),
    ("+15550100002", "Bob Smith", 0, "Basic"),
    ("+15550100003", "Carol Diaz", 4599, "Premium"),
    ("+15550100004", "David Lee", 101, "Basic"),
    ("+15550100005", "Erin Walsh", 23000, "Family"),
)

# number, status, item, eta in days from today (None: no eta), phone
ORDERS: tuple[tuple[str, str, str, int | None, str], ...] = (
    ("4567", "shipped", "wireless headphones", 2, "+15550100001"),
    ("1234", "processing", "electric toothbrush", 5, "+15550100001"),
    ("2048", "delivered", "coffee grinder", -3, "+15550100002"),
    ("3141", "cancelled", "desk lamp", None, "+15550100002"),
    ("5150", "shipped", "running shoes", 1, "+15550100003"),
    ("6021", "processing", "bluetooth speaker", 7, "+15550100003"),
    ("7777", "delivered", "water bottle", -10, "+15550100004"),
    ("8080", "shipped", "phone case", 3, "+15550100004"),
    ("9001", "processing", "standing desk", 12, "+15550100005"),
    ("1010", "cancelled", "yoga mat", None, "+15550100005"),
)

# ref, service, nth open day after today, start, name, phone
BOOKINGS: tuple[tuple[str, str, int, str, str, str], ...] = (
    ("BK-SEED2", "cleaning", 1, "10:00", "Alice Johnson", "+15550100001"),
    ("BK-SEED3", "whitening", 2, "14:30", "Carol Diaz", "+15550100003"),
)


def _open_day(today: date, n: int) -> date:
    """The n-th open day after today (1 = the next one): demo bookings are upcoming."""
    day = today
    while n:
        day += timedelta(days=1)
        if day.weekday() in OPEN_WEEKDAYS:
            n -= 1
    return day


async def seed(db_path: Path, *, today: date | None = None) -> dict[str, int]:
    """Insert the demo data; returns how many rows each table gained (0s when re-run)."""
    # The store owns the schema: opening it migrates a fresh or old file to the latest.
    store = await CallStore.open(db_path)
    await store.close()

    today = today or date.today()
    now = utc_now()
    plan: list[tuple[str, str, list[tuple[Any, ...]]]] = [
        ("services", "INSERT OR IGNORE INTO services (name, duration_min, description) "
                     "VALUES (?, ?, ?)", list(SERVICES)),
        ("accounts", "INSERT OR IGNORE INTO accounts (phone, name, balance_cents, plan) "
                     "VALUES (?, ?, ?, ?)", list(ACCOUNTS)),
        ("orders", "INSERT OR IGNORE INTO orders (number, status, item, eta, phone) "
                   "VALUES (?, ?, ?, ?, ?)",
         [(number, status, item,
           None if eta is None else (today + timedelta(days=eta)).isoformat(), phone)
          for number, status, item, eta, phone in ORDERS]),
        # OR IGNORE also skips a demo booking whose slot a caller has taken since: the
        # slot index is a uniqueness constraint too.
        ("bookings", "INSERT OR IGNORE INTO bookings (ref, service, day, start, name, phone, "
                     "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'booked', ?, ?)",
         [(ref, service, _open_day(today, nth).isoformat(), start, name, phone, now, now)
          for ref, service, nth, start, name, phone in BOOKINGS]),
    ]
    counts: dict[str, int] = {}
    async with aiosqlite.connect(
        str(db_path), timeout=BUSY_TIMEOUT_S, isolation_level=None
    ) as conn:
        await conn.execute("PRAGMA foreign_keys=ON")
        # One transaction: a seed is all there or not at all; closing without COMMIT
        # (on any error) rolls it back.
        await conn.execute("BEGIN IMMEDIATE")
        for table, sql, rows in plan:
            before = conn.total_changes
            await conn.executemany(sql, rows)
            counts[table] = conn.total_changes - before
        await conn.execute("COMMIT")
    return counts
