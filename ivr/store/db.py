"""The call record, in SQLite (WAL) or PostgreSQL (`store.backend`), versioned schema
(`store.schema`). It also holds what another process must see: parked transfers
(`park_transfer` / `take_transfer`) and the used marks of stream tokens (`use_token`).

A live call writes its row before the greeting (`open_call`); after that its turns and
its end go through `writes` (`store.queue`): never awaited by the call, retried, spilled
to a file `ivr db recover` replays. Each server process stamps its `instance_id` and a
heartbeat on its live calls; at start-up `close_stale` closes as `interrupted` the rows
of processes that died (no outcome, heartbeat stale), never those of a live one.

Personal data: with `redact_digits` every turn is stored with its digit runs masked
(`ivr.privacy`); `purge_turns` deletes the turns (the transcript) of calls older than a
date, keeping the call rows with their outcome and cost (`IVR_RETENTION_DAYS`,
`ivr db purge`).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from ivr.errors import StoreError
from ivr.privacy import redact_digits
from ivr.store.backend import Database, connect, describe
from ivr.store.queue import RETRYABLE, Write, WriteQueue, read_spill, spill_path
from ivr.store.schema import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported
from ivr.store.schema import migrate

log = structlog.get_logger("ivr.store")

# Outcomes a call can end with (`shutdown`: the server ended it, draining).
COMPLETED, TRANSFERRED, ABANDONED, DROPPED, FAILED, SHUTDOWN = (
    "completed", "transferred", "abandoned", "dropped", "failed", "shutdown",
)
# The process running the call died (its heartbeat went stale), or Twilio said the call
# was over and no process ever wrote its end.
INTERRUPTED = "interrupted"
TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# How long a write waits on a lock before it fails (and the queue retries it): short, since
# the call's first write holds up its greeting.
BUSY_TIMEOUT_S = 2.0
# Used stream-token marks past their expiry are deleted at most this often.
TOKEN_PURGE_S = 60.0
# A SQLite store's connection: WAL, and a purged transcript is overwritten, not merely
# unlinked from the b-tree.
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                  "secure_delete=ON")


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
    # Provider spans of the turn, each {"stage": stt|llm|tool|tts, "provider": name,
    # "start": ms, "first": ms (first byte/token; absent when the stage has none),
    # "end": ms}, on the same clock as `timings`.
    spans: list[dict[str, Any]] = field(default_factory=list)


class CallStore:
    def __init__(
        self, db: Database, *, redact_digits: bool = False,
        instance_id: str = "", spill: Path | None = None, queue_max: int = 1000,
    ) -> None:
        self._db = db
        self._tokens_purged = 0.0
        self.redact_digits = redact_digits
        self.instance_id = instance_id
        self.writes = WriteQueue(self.apply, spill or Path("ivr.db.spill.jsonl"),
                                 max_pending=queue_max)
        self._live: set[str] = set()  # calls this process runs: the heartbeat stamps them

    @classmethod
    async def open(
        cls, target: Path | str, *, redact_digits: bool = False, instance_id: str = "",
        queue_max: int = 1000, spill: Path | None = None,
    ) -> CallStore:
        """The store in `target` (a SQLite path or a PostgreSQL URL), migrated. `spill`:
        the spill file (default `store.queue.spill_path`)."""
        db = await connect(target, timeout_s=BUSY_TIMEOUT_S, pragmas=SQLITE_PRAGMAS)
        store = cls(db, redact_digits=redact_digits, instance_id=instance_id,
                    spill=spill or spill_path(target), queue_max=queue_max)
        try:
            await migrate(db, where=describe(target))
        except BaseException:
            await db.close()
            raise
        return store

    @property
    def db(self) -> Database:
        return self._db

    async def close(self) -> None:
        """Let queued writes land (or spill them), then close the connection."""
        await self.writes.close()
        await self._db.close()

    # ------------------------------------------------------------ a live call

    async def open_call(
        self, call_sid: str, *, stream_sid: str | None, account_sid: str | None,
        from_masked: str, to_masked: str, flow: str | None,
    ) -> bool:
        """A live call's row, written before its greeting and stamped with this process.
        Should the database refuse it, the call goes on and the row is queued (`writes`);
        returns whether it was written now."""
        args: dict[str, Any] = {
            "stream_sid": stream_sid, "account_sid": account_sid, "from_masked": from_masked,
            "to_masked": to_masked, "flow": flow, "started_at": utc_now(),
        }
        self._live.add(call_sid)
        try:
            await self.start_call(call_sid, **args)
        except RETRYABLE as exc:
            self.writes.put(Write("start", call_sid, args))
            _log_queued(call_sid, "start", exc)
            return False
        return True

    def record_turn(self, call_sid: str, turn: TurnRecord) -> None:
        """Queue a live call's turn (never waits)."""
        self.writes.put(Write("turn", call_sid, self._turn_row(turn)))

    def record_end(
        self, call_sid: str, *, outcome: str, stats: dict[str, Any],
    ) -> asyncio.Future[bool]:
        """Queue a live call's end; its heartbeat stops. The future: written or spilled."""
        self._live.discard(call_sid)
        return self.writes.put(Write("end", call_sid, {"outcome": outcome, "stats": stats,
                                                       "ended_at": utc_now()}))

    async def apply(self, write: Write) -> None:
        """Carry out one queued or spilled write."""
        a = write.args
        if write.op == "start":
            await self.start_call(write.call_sid, **a)
        elif write.op == "turn":
            await self._insert_turn(write.call_sid, a)
        else:
            await self.end_call(write.call_sid, outcome=a["outcome"], stats=a.get("stats"),
                                ended_at=a.get("ended_at"))

    async def heartbeat(self) -> int:
        """Stamp now on the live calls of this process; returns how many."""
        sids = list(self._live)
        if not sids:
            return 0
        now = utc_now()
        for i in range(0, len(sids), 500):
            chunk = sids[i:i + 500]
            await self._db.execute(
                f"UPDATE calls SET heartbeat_at = ? WHERE outcome IS NULL AND call_sid IN "
                f"({','.join('?' * len(chunk))})", (now, *chunk),
            )
        return len(sids)

    async def close_stale(self, *, older_than: datetime) -> int:
        """Close as `interrupted` every call with no outcome whose heartbeat (or, never
        stamped, its start) is older than `older_than`: its process is gone. It ended at
        its last known time. Returns the rows closed."""
        cutoff = older_than.astimezone(UTC).isoformat(timespec="milliseconds")
        return await self._db.execute(
            """UPDATE calls SET outcome = ?,
                 ended_at = COALESCE(ended_at, heartbeat_at, started_at)
               WHERE outcome IS NULL AND COALESCE(heartbeat_at, started_at) < ?""",
            (INTERRUPTED, cutoff),
        )

    async def replay(self, path: Path) -> tuple[int, list[str]]:
        """Apply a spill file's writes (idempotent); returns how many were applied and the
        lines that were not (unreadable or still failing), for the caller to keep."""
        writes, kept = read_spill(path)
        applied = 0
        for write in writes:
            try:
                await self.apply(write)
            except RETRYABLE as exc:
                _log_queued(write.call_sid, write.op, exc)
                kept.append(write.to_json())
            else:
                applied += 1
        return applied, kept

    # ------------------------------------------------------------ direct writes

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
        started_at = started_at or utc_now()
        await self._db.execute(
            """INSERT INTO calls (call_sid, stream_sid, account_sid, from_masked, to_masked,
                                  flow, started_at, instance_id, heartbeat_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(call_sid) DO UPDATE SET
                 stream_sid=excluded.stream_sid, account_sid=excluded.account_sid,
                 from_masked=CASE WHEN excluded.from_masked != '' THEN excluded.from_masked
                                  ELSE calls.from_masked END,
                 to_masked=CASE WHEN excluded.to_masked != '' THEN excluded.to_masked
                                ELSE calls.to_masked END,
                 flow=excluded.flow,
                 instance_id=COALESCE(excluded.instance_id, calls.instance_id),
                 heartbeat_at=CASE WHEN COALESCE(calls.heartbeat_at, '') > excluded.heartbeat_at
                                   THEN calls.heartbeat_at ELSE excluded.heartbeat_at END""",
            (call_sid, stream_sid, account_sid, from_masked, to_masked, flow, started_at,
             self.instance_id or None, started_at),
        )

    async def add_turn(self, call_sid: str, turn: TurnRecord) -> None:
        await self._insert_turn(call_sid, self._turn_row(turn))

    def _turn_row(self, turn: TurnRecord) -> dict[str, Any]:
        d = asdict(turn)
        if self.redact_digits:
            for key in ("prompt", "input_text", "understood", "slot_value"):
                if d[key]:
                    d[key] = redact_digits(d[key])
        return d

    async def _insert_turn(self, call_sid: str, d: dict[str, Any]) -> None:
        await self._db.execute(
            """INSERT INTO turns (call_sid, seq, step, prompt, prompt_heard,
                 input_kind, input_text, confidence, understood, result, timings, slot,
                 slot_value, spans)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (call_sid, seq) DO UPDATE SET
                 step=excluded.step, prompt=excluded.prompt,
                 prompt_heard=excluded.prompt_heard, input_kind=excluded.input_kind,
                 input_text=excluded.input_text, confidence=excluded.confidence,
                 understood=excluded.understood, result=excluded.result,
                 timings=excluded.timings, slot=excluded.slot,
                 slot_value=excluded.slot_value, spans=excluded.spans""",
            (call_sid, d["seq"], d["step"], d["prompt"], d["prompt_heard"], d["input_kind"],
             d["input_text"], _float(d["confidence"]), d["understood"], d["result"],
             json.dumps(d["timings"]), d["slot"], d["slot_value"], json.dumps(d["spans"])),
        )

    async def purge_turns(self, *, before: datetime) -> int:
        """Delete the turns of every call that started before `before` (an aware time);
        the call rows, their outcome and their cost stay. Returns the turns deleted."""
        cutoff = before.astimezone(UTC).isoformat(timespec="milliseconds")
        try:
            deleted = await self._db.execute(
                """DELETE FROM turns WHERE call_sid IN
                     (SELECT call_sid FROM calls WHERE started_at < ?)""",
                (cutoff,),
            )
            if self._db.dialect == "sqlite":
                # The WAL still holds earlier copies of the pages; fold it back and
                # truncate it (best effort: a reader elsewhere can keep it for now).
                await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except StoreError as exc:
            raise StoreError(f"purging turns before {cutoff} failed: {exc}") from exc
        return deleted

    async def end_call(
        self, call_sid: str, *, outcome: str, stats: dict[str, Any] | None = None,
        ended_at: str | None = None,
    ) -> None:
        """Write a call's end. The session's outcome wins over one filled in without it
        (`interrupted`, or a terminal status callback), and so does its end time."""
        await self._db.execute(
            """UPDATE calls SET outcome = ?, stats = ?,
                 ended_at = CASE WHEN ended_at IS NULL OR outcome IS NULL
                                      OR outcome = ? THEN ? ELSE ended_at END
               WHERE call_sid = ?""",
            (outcome, json.dumps(stats or {}), INTERRUPTED, ended_at or utc_now(), call_sid),
        )

    async def call_status(
        self, call_sid: str, *, status: str, duration_s: float | None,
        from_masked: str = "", to_masked: str = "", account_sid: str | None = None,
    ) -> None:
        """Record a Twilio call status callback; creates the call if /media never saw it.
        A terminal status fills in a missing outcome, never replaces one: `failed` if
        Twilio says so, `interrupted` for a call whose stream started (no process wrote
        its end), else `abandoned` (the call never reached a stream)."""
        terminal = status in TERMINAL_STATUSES
        await self._db.execute(
            """INSERT INTO calls (call_sid, account_sid, from_masked, to_masked, started_at,
                                  call_status, duration_s, ended_at, outcome)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(call_sid) DO UPDATE SET
                 call_status = excluded.call_status,
                 duration_s = COALESCE(excluded.duration_s, calls.duration_s),
                 ended_at = CASE WHEN calls.outcome IS NULL
                                 THEN COALESCE(calls.ended_at, excluded.ended_at)
                                 ELSE calls.ended_at END,
                 outcome = COALESCE(calls.outcome, CASE
                     WHEN excluded.outcome IS NULL OR excluded.outcome = ? THEN excluded.outcome
                     WHEN calls.stream_sid IS NOT NULL THEN ?
                     ELSE excluded.outcome END)""",
            (call_sid, account_sid, from_masked, to_masked, utc_now(), status,
             _float(duration_s), utc_now() if terminal else None,
             _outcome_for_status(status) if terminal else None, FAILED, INTERRUPTED),
        )

    async def get_call(self, call_sid: str) -> dict[str, Any] | None:
        call = await self._db.fetchone("SELECT * FROM calls WHERE call_sid = ?", (call_sid,))
        if call is None:
            return None
        call["stats"] = json.loads(call["stats"] or "{}")
        turns = await self._db.fetch(
            "SELECT * FROM turns WHERE call_sid = ? ORDER BY seq", (call_sid,))
        for t in turns:
            t["timings"] = json.loads(t["timings"] or "{}")
            t["spans"] = json.loads(t.get("spans") or "[]")
        call["turns"] = turns
        return call

    async def list_calls(self, limit: int = 50) -> list[dict[str, Any]]:
        return await self._db.fetch(
            "SELECT * FROM calls ORDER BY started_at DESC LIMIT ?", (limit,))

    # ------------------------------------------------ shared between processes

    async def park_transfer(self, call_sid: str, number: str) -> None:
        """Park the number a call chose to be transferred to, for /connect-action."""
        await self._db.execute(
            """INSERT INTO parked_transfers (call_sid, number, created_at) VALUES (?, ?, ?)
               ON CONFLICT (call_sid) DO UPDATE SET number = excluded.number,
                 created_at = excluded.created_at""",
            (call_sid, number, utc_now()),
        )

    async def take_transfer(self, call_sid: str) -> str | None:
        """The number parked for `call_sid`, removed in the same statement (so two
        requests never both dial it); None if there is none."""
        row = await self._db.fetchone(
            "DELETE FROM parked_transfers WHERE call_sid = ? RETURNING number", (call_sid,))
        return None if row is None else str(row["number"])

    async def use_token(self, nonce: str, expires_at: float) -> bool:
        """Mark a stream token's nonce used; False if it already was. Marks past their
        expiry are deleted now and then (an expired token is refused anyway)."""
        now = time.time()
        if now - self._tokens_purged >= TOKEN_PURGE_S:
            self._tokens_purged = now
            await self._db.execute("DELETE FROM used_stream_tokens WHERE expires_at < ?",
                                   (now,))
        changed = await self._db.execute(
            """INSERT INTO used_stream_tokens (nonce, expires_at) VALUES (?, ?)
               ON CONFLICT DO NOTHING""",
            (nonce, float(expires_at)),
        )
        return changed == 1


def _float(value: float | None) -> float | None:
    # PostgreSQL's double takes a float; an int (a whole confidence, a duration) is one.
    return None if value is None else float(value)


def _log_queued(call_sid: str, op: str, exc: BaseException) -> None:
    log.warning("store_write_deferred", call_sid=call_sid, op=op, error=str(exc))


def _outcome_for_status(status: str) -> str:
    # A call that ended at Twilio before any stream: the caller hung up, never answered, or
    # the line was busy -- unless Twilio itself says it failed.
    return FAILED if status == "failed" else ABANDONED
