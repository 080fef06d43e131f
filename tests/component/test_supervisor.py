"""The supervisor of `ivr serve --processes N` with stand-in children.

Each child is a few lines of Python that says it listens (the ready pipe), writes what
happened to it to a log file and then crashes or waits for signals: what the supervisor
does with them (backoff, forwarding, exit code, the environment it hands them) is seen
without starting a server. The supervisor runs in a process of its own (it owns the
signal handlers of its main thread).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from pathlib import Path

from tests.conftest import ROOT

CHILD = """
import os, signal, sys, time
log, mode = sys.argv[1], sys.argv[2]
def note(what):
    with open(log, "a") as f:
        f.write(f"{os.environ['IVR_INSTANCE_ID']} {os.getpid()} {time.monotonic()} {what}\\n")
note("start " + " ".join(os.environ[k] for k in (
    "IVR_PROCESSES", "IVR_STREAM_SECRET", "PROMETHEUS_MULTIPROC_DIR")))
fd = int(os.environ["IVR_SUPERVISOR_READY_FD"])
os.write(fd, b"1")
os.close(fd)
if mode == "crash":
    sys.exit(3)
got = []
signal.signal(signal.SIGTERM, lambda *_: (got.append("TERM"), note("TERM")))
signal.signal(signal.SIGINT, lambda *_: (got.append("INT"), note("INT")))
while len(got) < 2:  # a drain ends at the second signal, as `ivr serve` does
    signal.pause()
"""

SUPERVISOR = """
import sys
from ivr.server.supervisor import Supervisor
child, log, mode = sys.argv[1:4]
sys.exit(Supervisor([sys.executable, child, log, mode], {"IVR_STREAM_SECRET": "s" * 32}, 2,
                    instance_id="t", backoff_first_s=0.1, backoff_max_s=0.4).run())
"""


async def _supervise(tmp_path: Path, mode: str) -> asyncio.subprocess.Process:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUPERVISOR, str(child), str(tmp_path / "log"), mode,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)


def _events(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def _exists(path: str) -> bool:
    return Path(path).exists()


async def _until(tmp_path: Path, done: object) -> list[list[str]]:
    """The log's events once `done(events)` holds (the caller bounds the wait)."""
    assert callable(done)
    while True:
        events = _events(tmp_path)
        if done(events):
            return events
        await asyncio.sleep(0.02)


async def test_a_crash_loop_is_restarted_with_a_doubling_backoff(tmp_path: Path) -> None:
    proc = await _supervise(tmp_path, "crash")
    try:
        def five_each(events: list[list[str]]) -> bool:
            return all(sum(e[0] == f"t-{slot}" for e in events) >= 5 for slot in (0, 1))

        events = await asyncio.wait_for(_until(tmp_path, five_each), 20)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
    for slot in (0, 1):
        starts = [float(e[2]) for e in events if e[0] == f"t-{slot}"][:5]
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        # 0.1, 0.2, 0.4, then the 0.4 cap (each gap is the backoff plus the child's run).
        assert [g >= want for g, want in zip(gaps, (0.1, 0.2, 0.4, 0.4), strict=True)] == [
            True] * 4, gaps
    # One secret, one metrics directory, IVR_PROCESSES=1 in every child; the directory
    # is gone once the supervisor is.
    starts = {tuple(e[4:]) for e in events if e[3] == "start"}
    assert len(starts) == 1
    ((processes, secret, metrics_dir),) = starts
    assert (processes, secret) == ("1", "s" * 32)
    assert not _exists(metrics_dir)


async def test_signals_are_forwarded_and_the_supervisor_exits_0_after_its_children(
    tmp_path: Path,
) -> None:
    proc = await _supervise(tmp_path, "wait")
    try:
        await asyncio.wait_for(_until(tmp_path, lambda ev: len(ev) == 2), 20)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(_until(tmp_path, lambda ev: len(ev) == 4), 10)
        assert proc.returncode is None  # draining: the children have not exited yet
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    events = _events(tmp_path)
    assert sorted((e[0], e[3]) for e in events) == [
        ("t-0", "INT"), ("t-0", "TERM"), ("t-0", "start"),
        ("t-1", "INT"), ("t-1", "TERM"), ("t-1", "start")]
