"""Demo data for the tools: services, orders, accounts and a couple of bookings.

Idempotent: every row has a fixed key and goes in with ON CONFLICT DO NOTHING, so seeding again
(even on another day) adds nothing and never overwrites what callers changed since.
Dates are relative to `today` on the first seeding.

`seed` is `ivr db seed` (and the tests'); `seed_new` is what `ivr serve` runs at start-up on
a new SQLite database, so the shipped flows book and look up out of the box.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ivr.store.backend import Database, connect
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


# Both back ends: a row whose key (or slot) is there already is skipped.
_IGNORE = "ON CONFLICT DO NOTHING"


def _open_day(today: date, n: int) -> date:
    """The n-th open day after today (1 = the next one): demo bookings are upcoming."""
    day = today
    while n:
        day += timedelta(days=1)
        if day.weekday() in OPEN_WEEKDAYS:
            n -= 1
    return day


def _plan(today: date) -> list[tuple[str, str, list[tuple[Any, ...]]]]:
    """Each table's insert and rows, dated from `today`."""
    now = utc_now()
    return [
        ("services", "INSERT INTO services (name, duration_min, description) "
                     f"VALUES (?, ?, ?) {_IGNORE}", list(SERVICES)),
        ("accounts", "INSERT INTO accounts (phone, name, balance_cents, plan) "
                     f"VALUES (?, ?, ?, ?) {_IGNORE}", list(ACCOUNTS)),
        ("orders", "INSERT INTO orders (number, status, item, eta, phone) "
                   f"VALUES (?, ?, ?, ?, ?) {_IGNORE}",
         [(number, status, item,
           None if eta is None else (today + timedelta(days=eta)).isoformat(), phone)
          for number, status, item, eta, phone in ORDERS]),
        # DO NOTHING also skips a demo booking whose slot a caller has taken since: the
        # slot index is a uniqueness constraint too.
        ("bookings", "INSERT INTO bookings (ref, service, day, start, name, phone, "
                     "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'booked', ?, ?) "
                     + _IGNORE,
         [(ref, service, _open_day(today, nth).isoformat(), start, name, phone, now, now)
          for ref, service, nth, start, name, phone in BOOKINGS]),
    ]


async def _insert(tx: Database, today: date | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table, sql, rows in _plan(today or date.today()):
        counts[table] = await tx.executemany(sql, rows)
    return counts


async def seed(db_path: Path | str, *, today: date | None = None) -> dict[str, int]:
    """Insert the demo data; returns how many rows each table gained (0s when re-run)."""
    # The store owns the schema: opening it migrates a fresh or old file to the latest.
    store = await CallStore.open(db_path)
    await store.close()

    db = await connect(db_path, timeout_s=BUSY_TIMEOUT_S, pragmas=("foreign_keys=ON",))
    try:
        # One transaction: a seed is all there or not at all.
        async with db.transaction() as tx:
            return await _insert(tx, today)
    finally:
        await db.close()


async def seed_new(db: Database, *, today: date | None = None) -> dict[str, int] | None:
    """Seed a migrated database that offers no services yet (a new one); None if it does.

    The look and the inserts are one write transaction, so of several processes starting
    on one new SQLite file (`ivr serve --processes N`) exactly one seeds: the others wait
    for its lock and then find the services. A database an operator has filled, even
    partly, is left as it is.
    """
    async with db.transaction() as tx:
        if await tx.fetchone("SELECT 1 FROM services LIMIT 1") is not None:
            return None
        return await _insert(tx, today)
