"""The call record: SQLite through aiosqlite (WAL), versioned schema.

`PRAGMA user_version` holds the schema version; `MIGRATIONS[i]` upgrades from version i
to i+1, so an old database file is upgraded in place at start-up.

Personal data: with `redact_digits` every turn is stored with its digit runs masked
(`ivr.privacy`); `purge_turns` deletes the turns (the transcript) of calls older than a
date, keeping the call rows with their outcome and cost (`IVR_RETENTION_DAYS`,
`ivr db purge`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from ivr.errors import StoreError
from ivr.privacy import redact_digits

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
]
SCHEMA_VERSION = len(MIGRATIONS)

# Outcomes a call can end with (`shutdown`: the server ended it, draining).
COMPLETED, TRANSFERRED, ABANDONED, DROPPED, FAILED, SHUTDOWN = (
    "completed", "transferred", "abandoned", "dropped", "failed", "shutdown",
)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class TurnRecord:
    """One exchange: what the bot said, then what the caller said or pressed.

    Timings are milliseconds on the server's clock since the stream started, except
    `caller_*` ones, which are on the caller's clock (Twilio's media.timestamp).
    """

    seq: int
    step: str | None
    prompt: str = ""
    prompt_heard: str | None = None  # played | interrupted | unheard
    input_kind: str | None = None  # speech | dtmf | no_input
    input_text: str | None = None
    confidence: float | None = None
    understood: str | None = None
    result: str | None = None  # match | no_match | no_input
    slot: str | None = None  # the slot the step fills, and the value this answer gave it
    slot_value: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


class CallStore:
    def __init__(self, conn: aiosqlite.Connection, *, redact_digits: bool = False) -> None:
        self._db = conn
        self.redact_digits = redact_digits

    @classmethod
    async def open(cls, path: Path | str, *, redact_digits: bool = False) -> CallStore:
        conn = await aiosqlite.connect(str(path))
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        # A purged transcript is overwritten, not merely unlinked from the b-tree.
        await conn.execute("PRAGMA secure_delete=ON")
        store = cls(conn, redact_digits=redact_digits)
        try:
            await store._migrate()
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        await self._db.close()

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database schema v{version} is newer than this ivr (v{SCHEMA_VERSION}); "
                "upgrade ivr or point IVR_DB at another file"
            )
        for i in range(version, SCHEMA_VERSION):
            await self._db.executescript(
                f"BEGIN; {MIGRATIONS[i]}; PRAGMA user_version = {i + 1}; COMMIT;"
            )

    async def start_call(
        self,
        call_sid: str,
        *,
        stream_sid: str | None,
        account_sid: str | None,
        from_masked: str,
        to_masked: str,
        flow: str | None,
        started_at: str | None = None,
    ) -> None:
        """Create the call row, or fill in stream details on one a status callback made."""
        await self._db.execute(
            """INSERT INTO calls (call_sid, stream_sid, account_sid, from_masked, to_masked,
                                  flow, started_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(call_sid) DO UPDATE SET
                 stream_sid=excluded.stream_sid, account_sid=excluded.account_sid,
                 from_masked=CASE WHEN excluded.from_masked != '' THEN excluded.from_masked
                                  ELSE calls.from_masked END,
                 to_masked=CASE WHEN excluded.to_masked != '' THEN excluded.to_masked
                                ELSE calls.to_masked END,
                 flow=excluded.flow""",
            (call_sid, stream_sid, account_sid, from_masked, to_masked, flow,
             started_at or utc_now()),
        )
        await self._db.commit()

    async def add_turn(self, call_sid: str, turn: TurnRecord) -> None:
        d = asdict(turn)
        if self.redact_digits:
            for key in ("prompt", "input_text", "understood", "slot_value"):
                if d[key]:
                    d[key] = redact_digits(d[key])
        await self._db.execute(
            """INSERT OR REPLACE INTO turns (call_sid, seq, step, prompt, prompt_heard,
                 input_kind, input_text, confidence, understood, result, timings, slot,
                 slot_value)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (call_sid, d["seq"], d["step"], d["prompt"], d["prompt_heard"], d["input_kind"],
             d["input_text"], d["confidence"], d["understood"], d["result"],
             json.dumps(d["timings"]), d["slot"], d["slot_value"]),
        )
        await self._db.commit()

    async def purge_turns(self, *, before: datetime) -> int:
        """Delete the turns of every call that started before `before` (an aware time);
        the call rows, their outcome and their cost stay. Returns the turns deleted."""
        cutoff = before.astimezone(UTC).isoformat(timespec="milliseconds")
        try:
            cur = await self._db.execute(
                """DELETE FROM turns WHERE call_sid IN
                     (SELECT call_sid FROM calls WHERE started_at < ?)""",
                (cutoff,),
            )
            await self._db.commit()
            # The WAL still holds earlier copies of the pages; fold it back and truncate
            # it (best effort: a reader in another connection can keep it for now).
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"purging turns before {cutoff} failed: {exc}") from exc
        return cur.rowcount

    async def end_call(
        self, call_sid: str, *, outcome: str, stats: dict[str, Any] | None = None
    ) -> None:
        await self._db.execute(
            """UPDATE calls SET ended_at = COALESCE(ended_at, ?), outcome = ?, stats = ?
               WHERE call_sid = ?""",
            (utc_now(), outcome, json.dumps(stats or {}), call_sid),
        )
        await self._db.commit()

    async def call_status(
        self, call_sid: str, *, status: str, duration_s: float | None,
        from_masked: str = "", to_masked: str = "", account_sid: str | None = None,
    ) -> None:
        """Record a Twilio call status callback; creates the call if /media never saw it."""
        terminal = status in {"completed", "busy", "failed", "no-answer", "canceled"}
        await self._db.execute(
            """INSERT INTO calls (call_sid, account_sid, from_masked, to_masked, started_at,
                                  call_status, duration_s, ended_at, outcome)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(call_sid) DO UPDATE SET
                 call_status = excluded.call_status,
                 duration_s = COALESCE(excluded.duration_s, calls.duration_s)""",
            (call_sid, account_sid, from_masked, to_masked, utc_now(), status, duration_s,
             utc_now() if terminal else None,
             _outcome_for_status(status) if terminal else None),
        )
        await self._db.commit()

    async def get_call(self, call_sid: str) -> dict[str, Any] | None:
        async with self._db.execute("SELECT * FROM calls WHERE call_sid = ?", (call_sid,)) as c:
            row = await c.fetchone()
        if row is None:
            return None
        call = dict(row)
        call["stats"] = json.loads(call["stats"] or "{}")
        async with self._db.execute(
            "SELECT * FROM turns WHERE call_sid = ? ORDER BY seq", (call_sid,)
        ) as c:
            turns = [dict(r) for r in await c.fetchall()]
        for t in turns:
            t["timings"] = json.loads(t["timings"] or "{}")
        call["turns"] = turns
        return call

    async def list_calls(self, limit: int = 50) -> list[dict[str, Any]]:
        async with self._db.execute(
            "SELECT * FROM calls ORDER BY started_at DESC LIMIT ?", (limit,)
        ) as c:
            return [dict(r) for r in await c.fetchall()]


def _outcome_for_status(status: str) -> str:
    # A call that ended at Twilio before any stream: the caller hung up, never answered, or
    # the line was busy -- unless Twilio itself says it failed.
    return FAILED if status == "failed" else ABANDONED
