"""The call store's schema, versioned: `PRAGMA user_version` holds the version and
`MIGRATIONS[i]` upgrades a database from version i to i+1, so an old file is upgraded in
place at start-up (`CallStore.open`)."""

from __future__ import annotations

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
]
SCHEMA_VERSION = len(MIGRATIONS)
