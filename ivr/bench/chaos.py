"""`ivr bench chaos`: faults against a real server process; is every call still recorded?

Four rounds, each with a few simulated calls (`ivr.sim`) live while the fault happens,
all on one SQLite database:

1. **worker** — a recognizer worker (a child of the server running
   `ivr.speech.sphinx.worker`) is killed with SIGKILL while it decodes a caller's answer
   (seen as its CPU time rising); the turn should no-match and the call go on.
2. **provider** — remote TTS and STT (`IVR_TTS_*`, `IVR_STT_*`) point at a fake provider
   in this process (`ivr.bench.fake_provider`) that hangs from the start, then flaps
   (ok, hang, error); start-up and the calls should not wait on it.
3. **sigterm** — SIGTERM with a silent, a speaking and a keypad caller live; the server
   should drain (`IVR_DRAIN_S`) and exit 0.
4. **kill -9** — SIGKILL with calls live, then a restart on the same database; their rows
   should be closed (`interrupted`). Rows are closed by a start-up sweep of calls whose
   heartbeat went stale, so when a quick restart leaves them open the bench restarts once
   more after `stale_s`.

It prints every call's outcome and what was lost: a call with no row, or a row without an
outcome. It exits 1 when anything was lost (or a round could not run), 0 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ivr.bench.fake_provider import FakeProvider
from ivr.bench.server import ServerProcess, children, outcomes
from ivr.errors import IvrError
from ivr.sim.caller import SimulatedCaller
from ivr.sim.script import CallerAction, PressKeys, Say, Silence
from ivr.sim.transcript import CallTranscript

__all__ = ["chaos_main"]

WORKER = "ivr.speech.sphinx.worker"
LONG_SPEECH = "I would like to speak to somebody about the order I placed last week please"


@dataclass(slots=True)
class _Call:
    round: str
    sid: str
    task: asyncio.Task[CallTranscript]


@dataclass(slots=True)
class _Chaos:
    http: aiohttp.ClientSession
    db: Path
    logs: Path
    calls: list[_Call] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def server(self, name: str, env: dict[str, str] | None = None) -> ServerProcess:
        # The flows are the operator's (IVR_FLOWS, default ./flows); each call asks for
        # the demo flow by name.
        return ServerProcess(self.db, env or {}, log=self.logs / f"{name}.log")

    def place(self, round_: str, server: ServerProcess,
              actions: Sequence[CallerAction]) -> _Call:
        caller = SimulatedCaller(server.base, actions, flow="demo", quiet_ms=400,
                                 prompt_timeout=15.0, hangup_timeout=15.0,
                                 call_timeout=90.0, session=self.http)
        call = _Call(round_, caller.transcript.call_sid, asyncio.create_task(caller.run()))
        self.calls.append(call)
        return call

    async def live(self, server: ServerProcess, n: int, max_wait: float = 20.0) -> None:
        """Wait until the server has `n` live calls."""
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                if int((await server.health(self.http)).get("active_calls", 0)) >= n:
                    return
            await asyncio.sleep(0.05)
        raise IvrError(f"the server never had {n} live calls")

    async def settle(self, round_: str, max_wait: float = 120.0) -> None:
        tasks = [c.task for c in self.calls if c.round == round_]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=max_wait)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _cpu_ticks(pid: int) -> int:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return -1


async def _kill_decoding_worker(server: ServerProcess, max_wait: float) -> str:
    """SIGKILL the first worker seen decoding (its CPU time rising); say what was done."""
    workers = children(server.pid, WORKER)
    if not workers:
        raise IvrError(f"no recognizer worker found under pid {server.pid}")
    ticks = {pid: _cpu_ticks(pid) for pid in workers}
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        for pid in workers:
            now = _cpu_ticks(pid)
            if now > ticks[pid]:
                os.kill(pid, signal.SIGKILL)
                return f"killed worker {pid} while it decoded"
            ticks[pid] = now
    os.kill(workers[0], signal.SIGKILL)
    return f"killed worker {workers[0]} (never seen decoding within {max_wait:g} s)"


async def _round_worker(chaos: _Chaos, n: int) -> None:
    server = chaos.server("worker", {"IVR_RECOGNIZER_WORKERS": "1"})
    await server.start(chaos.http)
    try:
        for _ in range(n):
            chaos.place("worker", server, [Say(LONG_SPEECH), Say("sales"), Say("sales")])
        chaos.notes.append("worker: " + await _kill_decoding_worker(server, 20.0))
        await chaos.settle("worker")
        chaos.notes.append(f"worker: recognizer workers after: "
                           f"{len(children(server.pid, WORKER))}")
    finally:
        await server.stop()


async def _round_provider(chaos: _Chaos, n: int) -> None:
    fake = FakeProvider()
    await fake.start()
    fake.mode = "hang"
    env = {f"IVR_{role}_{key}": value for role in ("TTS", "STT") for key, value in
           (("BASE_URL", fake.base_url), ("API_KEY", "chaos"), ("TIMEOUT_S", "2"))}
    server = chaos.server("provider", env)
    try:
        started = time.monotonic()
        await server.start(chaos.http, max_wait=90.0)
        took = time.monotonic() - started
        chaos.notes.append(f"provider: /healthz answered {took:.1f} s after start with the "
                           "provider hung")
        if took > 2.0:
            chaos.problems.append(f"start-up waited {took:.1f} s on a hung provider (> 2 s)")
        for i in range(n):
            chaos.place("provider", server, [PressKeys("1")] if i % 2 else [Say("sales")])
        await asyncio.sleep(3.0)  # the hang, as callers meet it: then the provider flaps
        fake.mode = "flap"
        for i in range(n):
            chaos.place("provider", server, [Say("support")] if i % 2 else [PressKeys("2")])
        await chaos.settle("provider")
        chaos.notes.append(f"provider: requests {dict(sorted(fake.requests.items()))}")
    finally:
        await server.stop()
        await fake.close()


async def _round_sigterm(chaos: _Chaos, drain_s: float) -> None:
    server = chaos.server("sigterm", {"IVR_DRAIN_S": f"{drain_s:g}"})
    await server.start(chaos.http)
    try:
        chaos.place("sigterm", server, [Silence(60_000)])
        chaos.place("sigterm", server, [Say(LONG_SPEECH), Say(LONG_SPEECH)])
        chaos.place("sigterm", server, [Silence(3_000), PressKeys("3")])
        await chaos.live(server, 3)
        await asyncio.sleep(1.0)  # into the greeting and the first answers
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        code = await server.wait(drain_s + 5.0)
        took = time.monotonic() - started
        chaos.notes.append(f"sigterm: exit {code} after {took:.1f} s (IVR_DRAIN_S={drain_s:g})")
        if code != 0:
            chaos.problems.append(f"SIGTERM: exit {code} (want 0 within {drain_s + 5:g} s)")
        await chaos.settle("sigterm", max_wait=30.0)
    finally:
        await server.stop()


async def _round_kill(chaos: _Chaos, n: int, stale_s: float) -> None:
    server = chaos.server("kill9")
    await server.start(chaos.http)
    try:
        for _ in range(n):
            chaos.place("kill -9", server, [Silence(60_000)])
        await chaos.live(server, n)
        server.signal(signal.SIGKILL)
        killed = time.monotonic()
        await server.wait(10.0)
        await chaos.settle("kill -9", max_wait=30.0)
        await server.start(chaos.http)
        sids = [c.sid for c in chaos.calls if c.round == "kill -9"]
        if any(o is None for o in outcomes(chaos.db, sids).values()):
            # Only a heartbeat older than the window is closed at start-up (another live
            # process may still own a fresh one): restart once the rows are stale.
            await server.stop()
            await asyncio.sleep(max(0.0, killed + stale_s - time.monotonic()))
            await server.start(chaos.http)
            chaos.notes.append(f"kill -9: restarted twice ({stale_s:g} s apart)")
        else:
            chaos.notes.append("kill -9: restarted once")
    finally:
        await server.stop()


async def chaos_main(calls: int = 3, drain_s: float = 8.0, stale_s: float = 65.0) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            chaos = _Chaos(http, Path(tmp) / "chaos.db", Path(tmp))
            rounds = (("worker", _round_worker(chaos, calls)),
                      ("provider", _round_provider(chaos, calls)),
                      ("sigterm", _round_sigterm(chaos, drain_s)),
                      ("kill -9", _round_kill(chaos, calls, stale_s)))
            for name, round_ in rounds:
                print(f"round {name} ...", flush=True)
                try:
                    await round_
                except (IvrError, OSError) as exc:
                    chaos.problems.append(f"round {name} could not run: {exc}")
                    await chaos.settle(name, max_wait=10.0)
            recorded = outcomes(chaos.db, [c.sid for c in chaos.calls])
            return _report(chaos, recorded, calls, drain_s)


def _report(chaos: _Chaos, recorded: dict[str, str | None], calls: int, drain_s: float) -> int:
    lost: list[str] = []
    print("\ncalls:")
    for c in chaos.calls:
        heard = c.task.result().closed_by if c.task.done() and not c.task.cancelled() \
            and c.task.exception() is None else "?"
        if c.sid not in recorded:
            outcome = "NO RECORD"
            lost.append(f"{c.round} {c.sid}: no record")
        elif recorded[c.sid] is None:
            outcome = "NO OUTCOME"
            lost.append(f"{c.round} {c.sid}: no outcome")
        else:
            outcome = str(recorded[c.sid])
        print(f"  {c.round:<9} {c.sid}  outcome {outcome:<12} closed by {heard}")
    print("\nnotes:")
    for note in chaos.notes:
        print(f"  {note}")
    for problem in chaos.problems:
        print(f"  PROBLEM: {problem}")
    print(f"\nlost: {len(lost)}")
    for line in lost:
        print(f"  {line}")
    failed = bool(lost) or any("could not run" in p for p in chaos.problems)
    print("FAIL" if failed else "PASS")
    print(f"reproduce: ivr bench chaos --calls {calls} --drain {drain_s:g}")
    return 1 if failed else 0
