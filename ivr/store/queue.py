"""Writes a live call never waits on: turns and ends, retried, then spilled to a file.

Once the call's row is written (before the greeting), the session only `put`s its writes
here and goes on: a locked or full database must not hold a caller in silence. One writer
task applies them in order; a write that fails (a `StoreError` from either back end, a
`sqlite3.Error`, an `OSError`) is retried with doubling back-off, and one that still fails
after `attempts` is appended to the spill file (JSON lines, beside the SQLite database,
or beside the synthesis cache for a PostgreSQL one) that `ivr db recover` replays. So is a write
that finds the queue full (`max_pending`), and whatever is left when the store closes.

Every write is idempotent (an upsert, an `INSERT OR REPLACE` keyed by turn, an update),
so replaying a spill file twice, or one whose writes partly landed, changes nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from ivr.config import is_database_url
from ivr.errors import StoreError

log = structlog.get_logger("ivr.store")

WriteOp = Literal["start", "turn", "end"]
# Replay order: a turn needs its call's row, an end is last (see `read_spill`).
_REPLAY_ORDER: dict[str, int] = {"start": 0, "turn": 1, "end": 2}


@dataclass(frozen=True, slots=True)
class Write:
    """One write of a call's record, JSON-able: `args` are the store method's arguments
    (a turn's already redacted)."""

    op: WriteOp
    call_sid: str
    args: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"op": self.op, "call_sid": self.call_sid, "args": self.args},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Write:
        try:
            data = json.loads(line)
            op, call_sid, args = data["op"], data["call_sid"], data["args"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"not a spilled write: {line[:80]!r} ({exc})") from None
        if op not in _REPLAY_ORDER or not isinstance(call_sid, str) or not isinstance(args, dict):
            raise StoreError(f"not a spilled write: {line[:80]!r}")
        return cls(op, call_sid, args)


Apply = Callable[[Write], Awaitable[None]]

# Failures worth a retry: a locked database, a lost connection, a serialization failure or
# deadlock (PostgreSQL), a full disk, an I/O error. `store.backend` wraps the drivers'
# errors in StoreError.
RETRYABLE = (StoreError, sqlite3.Error, OSError)


def spill_path(db: Path | str, cache_dir: Path | None = None) -> Path:
    """The spill file of database `db`: a SQLite file's is beside it,
    `<db>.spill.jsonl`; a PostgreSQL URL's is a local file beside the synthesis cache
    directory (`cache_dir`, default ./ivr-cache): `ivr-db.spill.jsonl`."""
    if is_database_url(db):
        return (cache_dir or Path("ivr-cache")).absolute().parent / "ivr-db.spill.jsonl"
    db = Path(db)
    return db.with_name(db.name + ".spill.jsonl")


def append_spill(path: Path, writes: list[Write]) -> None:
    """Append `writes` to the spill file, flushed to disk (run in a thread).

    One `write` on an O_APPEND descriptor, not a buffered file (which splits what is past
    its buffer into several): processes sharing the file (`ivr serve --processes N`) never
    interleave their lines."""
    if not writes:
        return
    data = memoryview("".join(w.to_json() + "\n" for w in writes).encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_spill(path: Path) -> tuple[list[Write], list[str]]:
    """The writes in a spill file in replay order (starts, turns, ends; file order within
    each), and the lines that are not writes (kept, never replayed)."""
    writes: list[Write] = []
    bad: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            writes.append(Write.from_json(line))
        except StoreError:
            bad.append(line)
    writes.sort(key=lambda w: _REPLAY_ORDER[w.op])
    return writes, bad


class WriteQueue:
    """Writes applied in order by one task; retried, then spilled (see the module)."""

    def __init__(
        self, apply: Apply, spill: Path, *, max_pending: int = 1000, attempts: int = 5,
        backoff_s: float = 0.1, backoff_max_s: float = 2.0,
    ) -> None:
        self._apply = apply
        self.spill = spill
        self.max_pending = max_pending
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stats: Counter[str] = Counter()  # written, retried, spilled, lost
        self._pending: deque[tuple[Write, asyncio.Future[bool]]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._spilling: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def put(self, write: Write) -> asyncio.Future[bool]:
        """Queue `write`; never waits. A full queue spills it at once. The future says,
        for whoever cares to wait, whether it was written (True) or spilled (False)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if len(self._pending) >= self.max_pending:
            log.warning("store_queue_full", call_sid=write.call_sid, op=write.op,
                        pending=len(self._pending))
            self._spill_later([(write, done)])
            return done
        self._pending.append((write, done))
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="store-writes")
        return done

    async def flushed(self, timeout_s: float) -> bool:
        """Wait until every queued write is applied or spilled (at most `timeout_s`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return self._idle.is_set()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Give queued writes `timeout_s` to land, spill the rest, stop the writer."""
        await self.flushed(timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = list(self._pending)  # (write, future) pairs
        self._pending.clear()
        self._idle.set()
        if left:
            await self._spill(left)
        if self._spilling:
            await asyncio.gather(*self._spilling)

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            write, done = self._pending[0]
            ok = await self._write(write)
            # Popped only now: a close() that cancels the write above still spills it.
            self._pending.popleft()
            if ok:
                _resolve(done, True)
            else:
                await self._spill([(write, done)])

    async def _write(self, write: Write) -> bool:
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                await self._apply(write)
            except RETRYABLE as exc:
                log.warning("store_write_failed", call_sid=write.call_sid, op=write.op,
                            attempt=attempt, error=str(exc))
            except Exception:
                # The writer's root: a bug in one write must not stop the others.
                log.exception("store_write_error", call_sid=write.call_sid, op=write.op)
                return False
            else:
                self.stats["written"] += 1
                return True
            if attempt < self.attempts:
                self.stats["retried"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max_s)
        return False

    def _spill_later(self, writes: list[tuple[Write, asyncio.Future[bool]]]) -> None:
        task = asyncio.create_task(self._spill(writes), name="store-spill")
        self._spilling.add(task)
        task.add_done_callback(self._spilling.discard)

    async def _spill(self, entries: list[tuple[Write, asyncio.Future[bool]]]) -> None:
        writes = [w for w, _ in entries]
        try:
            await asyncio.to_thread(append_spill, self.spill, writes)
        except OSError as exc:
            # The log is the last copy left: every write in it, whole.
            self.stats["lost"] += len(writes)
            for w in writes:
                log.error("store_write_lost", call_sid=w.call_sid, op=w.op, error=str(exc),
                          write=w.to_json())
        else:
            self.stats["spilled"] += len(writes)
            log.error("store_write_spilled", writes=len(writes), file=str(self.spill),
                      fix="run `ivr db recover` once the database is writable")
        for _, done in entries:
            _resolve(done, False)


def _resolve(done: asyncio.Future[bool], ok: bool) -> None:
    if not done.done():
        done.set_result(ok)
