"""`ivr bench soak`: thousands of short calls through one server process; does anything leak?

The server (`ivr serve`) runs in its own process on a short keypad flow written for the
bench ("Press one." then "Bye.", about 2 s of audio), so thousands of real-time calls
fit in minutes. Simulated callers (`ivr.sim`) place each call like Twilio — `/voice`,
then the Media Stream — and press 1 when the prompt ends, `concurrency` at a time.

After a warm-up round (caches filled, pools at size) the server's resident memory, open
descriptors, asyncio tasks and threads are read; then the measured calls run, the server
is allowed to go idle, and they are read again. The bench fails (exit 1) when memory
grew by `RSS_LIMIT_MB` or more, when descriptors did not come back to the baseline
(within `FD_SLACK`), or when any call's record has no outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ivr.bench.server import ServerProcess, fd_count, outcomes, rss_mb, thread_count
from ivr.sim.caller import SimulatedCaller
from ivr.sim.script import PressKeys

__all__ = ["FD_SLACK", "RSS_LIMIT_MB", "SOAK_FLOW", "Snapshot", "soak_main", "verdict"]

RSS_LIMIT_MB = 30.0
# Descriptors the server may hold above its baseline once idle: a pooled database or
# client connection opened lazily during the run is not a per-call leak.
FD_SLACK = 4
# How long the server gets to close the last calls' sockets and tasks before the
# "after" figures are read.
SETTLE_S = 10.0

SOAK_FLOW = """\
name: soak
description: The `ivr bench soak` line - one keypad answer, then goodbye.
start: menu
steps:
  menu:
    ask: Press one.
    choices:
      - {words: [one], key: "1", goto: bye}
    timeout_ms: 3000
    fallback: bye
  bye:
    hangup: Bye.
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    rss_mb: float
    fds: int
    tasks: int | None
    threads: int
    active_calls: int
    # The server has yet to give back what the last calls freed (`server.memory`).
    trim_pending: bool = False

    def line(self) -> str:
        return (f"RSS {self.rss_mb:.1f} MB, fds {self.fds}, asyncio tasks {self.tasks}, "
                f"threads {self.threads}, live calls {self.active_calls}")


async def _snapshot(server: ServerProcess, http: aiohttp.ClientSession) -> Snapshot:
    health = await server.health(http)
    process: dict[str, Any] = health.get("process") or {}
    tasks = process.get("tasks")
    return Snapshot(rss_mb(server.pid), fd_count(server.pid),
                    int(tasks) if tasks is not None else None, thread_count(server.pid),
                    int(health.get("active_calls", 0)), bool(process.get("heap_trim_pending")))


async def _idle(server: ServerProcess, http: aiohttp.ClientSession, baseline: Snapshot,
                settle_s: float) -> Snapshot:
    """The server's figures once it has no live call, its descriptors are back near the
    baseline and it has trimmed its heap since the last call, or as they stand after
    `settle_s`."""
    deadline = time.monotonic() + settle_s
    while True:
        snap = await _snapshot(server, http)
        settled = (snap.active_calls == 0 and snap.fds <= baseline.fds + FD_SLACK
                   and not snap.trim_pending)
        if settled or time.monotonic() >= deadline:
            return snap
        await asyncio.sleep(0.1)


def verdict(before: Snapshot, after: Snapshot, no_outcome: list[str]) -> list[str]:
    """Why the soak failed (nothing: it passed)."""
    failures = []
    growth = after.rss_mb - before.rss_mb
    if growth >= RSS_LIMIT_MB:
        failures.append(f"RSS grew {growth:.1f} MB")
    if after.fds > before.fds + FD_SLACK:
        failures.append(f"{after.fds - before.fds} descriptors not closed")
    if no_outcome:
        failures.append(f"{len(no_outcome)} records without an outcome "
                        f"(first: {no_outcome[0]})")
    return failures


@dataclass(slots=True)
class _Tally:
    placed: list[str]
    caller_errors: int = 0
    first_error: str = ""


async def _calls(server: ServerProcess, http: aiohttp.ClientSession, n: int,
                 concurrency: int, tally: _Tally) -> None:
    next_call = iter(range(n))

    async def one_line() -> None:
        for i in next_call:
            caller = SimulatedCaller(server.base, [PressKeys("1")], voice=None,
                                     from_number=f"+1555{i % 10_000_000:07d}",
                                     quiet_ms=300, prompt_timeout=10.0, hangup_timeout=10.0,
                                     call_timeout=30.0, session=http)
            tally.placed.append(caller.transcript.call_sid)
            try:
                transcript = await caller.run()
            except Exception as exc:  # a task root: one failed call must not stop the soak
                transcript = None
                tally.caller_errors += 1
                tally.first_error = tally.first_error or repr(exc)
            if transcript is not None and (transcript.errors or
                                           transcript.closed_by != "server"):
                tally.caller_errors += 1
                tally.first_error = tally.first_error or (
                    "; ".join(transcript.errors) or f"closed by {transcript.closed_by}")

    await asyncio.gather(*(one_line() for _ in range(concurrency)))


async def soak_main(calls: int, concurrency: int, *, warmup: int | None = None,
                    workers: int = 1, settle_s: float = SETTLE_S) -> int:
    warm = warmup if warmup is not None else max(concurrency, min(calls // 10, 200))
    reproduce = (f"ivr bench soak --calls {calls} --concurrency {concurrency} "
                 f"--warmup {warm} --workers {workers}")
    with tempfile.TemporaryDirectory() as tmp:
        flows = Path(tmp) / "flows"
        flows.mkdir()
        (flows / "soak.yaml").write_text(SOAK_FLOW)
        db = Path(tmp) / "soak.db"
        server = ServerProcess(db, {"IVR_FLOWS": str(flows), "IVR_DEFAULT_FLOW": "soak",
                                    "IVR_RECOGNIZER_WORKERS": str(workers)},
                               log=Path(tmp) / "server.log")
        # No connection limit: every live call holds one (aiohttp's default is 100).
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await server.start(http)
            try:
                warm_tally, tally = _Tally([]), _Tally([])
                await _calls(server, http, warm, concurrency, warm_tally)
                before = await _idle(server, http, await _snapshot(server, http), settle_s)
                started = time.monotonic()
                await _calls(server, http, calls, concurrency, tally)
                wall = time.monotonic() - started
                after = await _idle(server, http, before, settle_s)
                recorded = outcomes(db, warm_tally.placed + tally.placed)
            finally:
                with contextlib.suppress(Exception):
                    await server.stop()
    placed = warm_tally.placed + tally.placed
    no_outcome = sorted(sid for sid, outcome in recorded.items() if outcome is None)
    no_record = [sid for sid in placed if sid not in recorded]
    growth = after.rss_mb - before.rss_mb
    print(f"{calls} calls, {concurrency} at a time, after {warm} warm-up calls, against "
          f"`ivr serve` (own process): {wall:.1f} s, {calls / wall:.1f} calls/s")
    print(f"  before: {before.line()}")
    print(f"  after:  {after.line()}")
    print(f"  RSS growth: {growth:+.1f} MB (limit < {RSS_LIMIT_MB:g}); fds "
          f"{after.fds - before.fds:+d} (slack {FD_SLACK})")
    print(f"  records: {len(recorded)} of {len(placed)} calls; without an outcome: "
          f"{len(no_outcome)}; calls with no record (refused or lost): {len(no_record)}")
    errors = warm_tally.caller_errors + tally.caller_errors
    if errors:
        print(f"  calls that did not end as scripted (caller side): {errors}; first: "
              f"{warm_tally.first_error or tally.first_error}")
    failures = verdict(before, after, no_outcome)
    print("FAIL: " + "; ".join(failures) if failures else "PASS")
    print(f"reproduce: {reproduce}")
    return 1 if failures else 0
