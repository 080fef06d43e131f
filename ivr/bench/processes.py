"""`ivr bench processes`: short calls through `ivr serve --processes N`; where did they land?

The supervisor (`server.supervisor`) runs N server processes on one loopback port, on the
soak's keypad flow (`bench.soak.SOAK_FLOW`, ~2 s of audio a call). Simulated callers
place the calls, `concurrency` at a time; then the bench reads, per process, the calls
`/metrics` counted (`ivr_process_calls{pid}`) and the records the store holds
(`instance_id`). With `--kill` one process is killed (SIGKILL) halfway through: its live
calls are lost with it, the supervisor starts another in its place, and the calls placed
after go on over the processes alive. It fails (exit 1) when a call placed while no
process was killed has no record with an outcome, or when a process took no call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

from ivr.bench.server import ServerProcess, children
from ivr.bench.soak import SOAK_FLOW, _calls, _Tally

__all__ = ["processes_main"]


async def _pids(base: str, want: int, avoid: frozenset[int] = frozenset()) -> dict[int, str]:
    """pid -> instance id of the processes answering `/healthz`, once `want` of them not
    in `avoid` have (a new connection each time, so the kernel picks anew); at most 60 s."""
    seen: dict[int, str] = {}
    async with asyncio.timeout(60), aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)) as http:
        while len(set(seen) - avoid) < want:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base + "/healthz") as resp:
                    body = await resp.json()
                    seen[int(body["pid"])] = str(body["instance_id"])
    return seen


async def _process_calls(base: str, http: aiohttp.ClientSession) -> dict[int, int]:
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
    return {int(pid): int(float(n)) for pid, n in re.findall(
        r'^ivr_process_calls\{pid="(\d+)"\} ([0-9.e+]+)$', text, re.M)}


def _by_instance(db: Path, sids: list[str]) -> dict[str, tuple[str, str | None]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT call_sid, instance_id, outcome FROM calls").fetchall()
    finally:
        con.close()
    wanted = set(sids)
    return {sid: (instance, outcome) for sid, instance, outcome in rows if sid in wanted}


async def processes_main(calls: int, concurrency: int, processes: int, *,
                         kill: bool = False) -> int:
    reproduce = (f"ivr bench processes --calls {calls} --concurrency {concurrency} "
                 f"--processes {processes}" + (" --kill" if kill else ""))
    with tempfile.TemporaryDirectory() as tmp:
        flows = Path(tmp) / "flows"
        flows.mkdir()
        (flows / "soak.yaml").write_text(SOAK_FLOW)
        db = Path(tmp) / "bench.db"
        server = ServerProcess(db, {"IVR_FLOWS": str(flows), "IVR_DEFAULT_FLOW": "soak",
                                    "IVR_DRAIN_S": "5"}, log=Path(tmp) / "server.log")
        server.command += ["--processes", str(processes)]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await server.start(http)
            try:
                pids = await _pids(server.base, processes)
                tally = _Tally([])
                started = time.monotonic()
                run = asyncio.create_task(_calls(server, http, calls, concurrency, tally))
                victim, restarted = None, {}
                if kill:  # mid-run: the victim holds live calls
                    while len(tally.placed) < calls // 2 and not run.done():
                        await asyncio.wait({run}, timeout=0.05)
                    victim = min(children(server.pid, "ivr serve"))
                    os.kill(victim, signal.SIGKILL)
                    restarted = await _pids(server.base, processes, frozenset({victim}))
                await run
                wall = time.monotonic() - started
                per_pid = await _process_calls(server.base, http)
            finally:
                code = await server.stop()
            records = _by_instance(db, tally.placed)
    placed = tally.placed
    landed = Counter(instance for instance, _ in records.values())
    lost = pids.get(victim or -1)  # the killed process's calls end with it
    no_outcome = [sid for sid, (instance, outcome) in records.items()
                  if outcome is None and instance != lost]
    with_victim = sum(1 for instance, _ in records.values() if instance == lost)
    cut = sum(1 for instance, outcome in records.values()
              if instance == lost and outcome is None)
    no_record = [sid for sid in placed if sid not in records]
    print(f"{calls} calls, {concurrency} at a time, through `ivr serve --processes "
          f"{processes}`: {wall:.1f} s, {calls / wall:.1f} calls/s; supervisor SIGTERM "
          f"exit {code}")
    print(f"  processes at start: {sorted(pids)}")
    print("  calls per process (/metrics ivr_process_calls): " + ", ".join(
        f"pid {pid}: {n}" for pid, n in sorted(per_pid.items())))
    print("  records per instance (store): " + ", ".join(
        f"{instance}: {n}" for instance, n in sorted(landed.items())))
    if kill:
        print(f"  killed pid {victim} ({lost}) mid-run: {with_victim} calls had landed "
              f"there, {cut} of them live (records left without an outcome until a "
              f"start-up finds them stale); answering after: {sorted(restarted)}")
    print(f"  records: {len(records)} of {len(placed)}; without an outcome (not on the "
          f"killed process): {len(no_outcome)}; no record: {len(no_record)}; calls that "
          f"did not end as scripted (caller side): {tally.caller_errors}")
    failures = []
    if code != 0:
        failures.append(f"the supervisor exited {code} on SIGTERM")
    if no_outcome or (no_record and not kill):
        failures.append(f"{len(no_outcome) + len(no_record)} calls without an outcome")
    if sum(1 for n in per_pid.values() if n) < processes:
        failures.append("a process took no call")
    print("FAIL: " + "; ".join(failures) if failures else "PASS")
    print(f"reproduce: {reproduce}")
    return 1 if failures else 0
