"""The call store's schema, versioned, one for both back ends: `MIGRATIONS[i]` upgrades a
database from version i to i+1, so an old one is upgraded in place at start-up
(`CallStore.open` -> `migrate`). SQLite keeps the version in `PRAGMA user_version`,
PostgreSQL in a `schema_version` table. The text is SQLite's; `backend.ddl` gives
PostgreSQL its few type differences."""

from __future__ import annotations

import contextlib

from ivr.errors import StoreError
from ivr.store.backend import Database, ddl

MIGRATIONS: list[str] = [
    """
    CREATE TABLE calls (
        call_sid        TEXT PRIMARY KEY,
        stream_sid      TEXT,
        account_sid     TEXT,
        from_masked     TEXT NOT NULL DEFAULT '',
        to_masked       TEXT NOT NULL DEFAULT '',
        flow            TEXT,
        started_at      TEXT NOT NULL,
        ended_at        TEXT,
        outcome         TEXT,
        call_status     TEXT,
        duration_s      REAL,
        stats           TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX calls_started ON calls(started_at);
    CREATE TABLE turns (
        call_sid        TEXT NOT NULL REFERENCES calls(call_sid),
        seq             INTEGER NOT NULL,
        step            TEXT,
        prompt          TEXT NOT NULL DEFAULT '',
        prompt_heard    TEXT,
        input_kind      TEXT,
        input_text      TEXT,
        confidence      REAL,
        understood      TEXT,
        result          TEXT,
        timings         TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (call_sid, seq)
    );
    """,
    # v2: the data the built-in tools (ivr.tools) work on.
    """
    CREATE TABLE services (
        name            TEXT PRIMARY KEY,
        duration_min    INTEGER NOT NULL CHECK (duration_min > 0),
        description     TEXT NOT NULL DEFAULT ''
    );
    -- A cancelled booking keeps its row (the reference still resolves), so the slot
    -- rule below only counts rows that are booked.
    CREATE TABLE bookings (
        id              INTEGER PRIMARY KEY,
        ref             TEXT NOT NULL UNIQUE,
        service         TEXT NOT NULL REFERENCES services(name),
        day             TEXT NOT NULL,
        start           TEXT NOT NULL,
        name            TEXT NOT NULL,
        phone           TEXT NOT NULL DEFAULT '',
        status          TEXT NOT NULL DEFAULT 'booked'
                        CHECK (status IN ('booked', 'cancelled')),
        created_at      TEXT NOT NULL,
        updated_at      TEXT NOT NULL,
        -- No foreign key to calls: a tool can run before the call's row is written.
        call_sid        TEXT
    );
    -- One chair: a slot holds one booking whatever the service (durations are
    -- informational). The database, not the code, is what makes a double booking
    -- impossible, even for writers that skip the tools' own check.
    CREATE UNIQUE INDEX bookings_one_per_slot ON bookings(day, start)
        WHERE status = 'booked';
    CREATE INDEX bookings_phone ON bookings(phone, day);
    CREATE TABLE orders (
        number          TEXT PRIMARY KEY,
        status          TEXT NOT NULL,
        item            TEXT NOT NULL,
        eta             TEXT,
        phone           TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE accounts (
        phone           TEXT PRIMARY KEY,
        name            TEXT NOT NULL,
        balance_cents   INTEGER NOT NULL DEFAULT 0,
        plan            TEXT NOT NULL
    );
    """,
    # v3: what a turn filled (slot name and the value's text form).
    """
    ALTER TABLE turns ADD COLUMN slot TEXT;
    ALTER TABLE turns ADD COLUMN slot_value TEXT;
    """,
    # v4: which server process runs a call and when it last said so: a row with no outcome
    # whose heartbeat is stale belongs to a process that died (closed as `interrupted`).
    """
    ALTER TABLE calls ADD COLUMN instance_id TEXT;
    ALTER TABLE calls ADD COLUMN heartbeat_at TEXT;
    CREATE INDEX calls_open ON calls(heartbeat_at) WHERE outcome IS NULL;
    """,
    # v5: what another process must see. A transfer a call chose, parked until Twilio asks
    # /connect-action (maybe of another process) where to dial; and the used marks of
    # stream tokens (a token starts one stream, whichever process it reaches), kept until
    # the token expires (unix seconds).
    """
    CREATE TABLE parked_transfers (
        call_sid        TEXT PRIMARY KEY,
        number          TEXT NOT NULL,
        created_at      TEXT NOT NULL
    );
    CREATE TABLE used_stream_tokens (
        nonce           TEXT PRIMARY KEY,
        expires_at      REAL NOT NULL
    );
    CREATE INDEX used_stream_tokens_expiry ON used_stream_tokens(expires_at);
    """,
    # v6: a turn's provider spans (recognition, model, tools, synthesis: who served each,
    # when it was asked, its first byte or token, when it was done), a JSON list.
    """
    ALTER TABLE turns ADD COLUMN spans TEXT NOT NULL DEFAULT '[]';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
# Any constant: the key of the PostgreSQL advisory lock that lets one process migrate.
_MIGRATION_LOCK = 0x1F5_0DB


async def migrate(db: Database, *, where: str) -> None:
    """Bring `db` to SCHEMA_VERSION; a newer schema is refused (`where` names the database
    in the message)."""
    if db.dialect == "postgresql":
        async with db.transaction() as tx:
            # Two processes starting together: the second waits, then finds it done.
            await tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            await tx.script("CREATE TABLE IF NOT EXISTS schema_version "
                            "(version INTEGER NOT NULL)")
            version = await tx.schema_version()
            _check(version, where)
            for i in range(version, SCHEMA_VERSION):
                await tx.script(ddl(MIGRATIONS[i], db.dialect))
            if version < SCHEMA_VERSION:
                await tx.execute("DELETE FROM schema_version")
                await tx.execute("INSERT INTO schema_version (version) VALUES (?)",
                                 (SCHEMA_VERSION,))
        return
    # SQLite: one step per transaction, under the write lock (BEGIN IMMEDIATE). Two
    # processes opening a new file together both read version 0; the second waits for
    # the lock, then fails on tables that now exist: it rolls back, reads the version
    # again and goes on from there. A step that fails with the version unchanged is a
    # real error.
    while (version := await db.schema_version()) < SCHEMA_VERSION:
        try:
            await db.script(f"BEGIN IMMEDIATE; {MIGRATIONS[version]}; "
                            f"PRAGMA user_version = {version + 1}; COMMIT;")
        except StoreError:
            with contextlib.suppress(StoreError):
                await db.execute("ROLLBACK")
            if await db.schema_version() <= version:
                raise
    _check(version, where)


def _check(version: int, where: str) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database schema v{version} is newer than this ivr (v{SCHEMA_VERSION}); "
            f"upgrade ivr or point IVR_DB at another database (not {where})"
        )
