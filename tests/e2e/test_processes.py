"""`ivr serve --processes 2`: two server processes on one port under the supervisor.

One real supervisor per test; the calls are raw `/media` peers (`tests.media_peer`), each
on a fresh connection, so the kernel spreads them (and a call's `/voice` and `/media`)
over both processes. Which process holds a call is read from the store (`instance_id`)
and `/healthz` (pid and instance), never guessed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp

from ivr.bench.server import children
from ivr.sim.run import free_port
from tests.conftest import ROOT
from tests.e2e.test_lifecycle_serve import Peer
from tests.media_peer import FRAME

# Heartbeats every 200 ms, stale after 1 s: a call whose start is older than that is
# kept open only by its process's heartbeat, so a restarted sibling that ignored them
# would close it as interrupted.
_LIVENESS = {"IVR_HEARTBEAT_MS": "200", "IVR_STALE_AFTER_MS": "1000"}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IVR_", "TWILIO_"))}
    env.update(PYTHONPATH=str(ROOT), IVR_DB=str(tmp_path / "ivr.db"),
               IVR_FLOWS=str(ROOT / "flows"), IVR_CACHE_DIR=str(tmp_path / "cache"),
               IVR_LOG_LEVEL="info", **extra)
    return env


async def _supervise(tmp_path: Path, port: int, **extra: str) -> asyncio.subprocess.Process:
    log = (tmp_path / "serve.log").open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ivr", "serve", "--processes", "2", "--port", str(port),
            env=_env(tmp_path, **extra), stdout=asyncio.subprocess.DEVNULL, stderr=log)
    finally:
        log.close()


def _fresh() -> aiohttp.ClientSession:
    # A connection per request: the kernel picks the process anew each time.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def _instances(base: str, want: int, proc: asyncio.subprocess.Process) -> dict[int, str]:
    """pid -> instance id of the processes answering `/healthz`, once `want` have answered
    (the caller bounds the wait)."""
    seen: dict[int, str] = {}
    async with _fresh() as http:
        while len(seen) < want:
            assert proc.returncode is None, "the supervisor exited"
            try:
                async with http.get(base + "/healthz") as resp:
                    body = await resp.json()
                seen[body["pid"]] = body["instance_id"]
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    return seen


def _calls(db: Path) -> dict[str, tuple[str, str | None]]:
    """call SID -> (instance id, outcome)."""
    with sqlite3.connect(db, timeout=10) as con:
        rows = con.execute("SELECT call_sid, instance_id, outcome FROM calls").fetchall()
    return {sid: (instance, outcome) for sid, instance, outcome in rows}


async def _closed(db: Path, peers: list[Peer]) -> None:
    """Until every call of `peers` is recorded `interrupted` (the caller bounds it)."""
    while True:
        calls = _calls(db)
        if all(calls[p.stream.call_sid][1] == "interrupted" for p in peers):
            return
        await asyncio.sleep(0.1)


async def _metrics(base: str) -> str:
    async with _fresh() as http, http.get(base + "/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_two_processes_share_the_port_survive_a_kill_and_drain_on_sigterm(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await _supervise(tmp_path, port, IVR_DRAIN_S="1", **_LIVENESS)
    loop = asyncio.get_running_loop()
    peers: list[Peer] = []
    db = tmp_path / "ivr.db"
    try:
        first = await asyncio.wait_for(_instances(base, 2, proc), 60)
        assert set(first) == set(children(proc.pid, "ivr serve"))
        assert len(set(first.values())) == 2  # an instance id each

        # Calls until both processes hold one (each lands on either; bounded).
        async with _fresh() as http:
            while len({instance for instance, _ in _calls(db).values()}) < 2:
                assert len(peers) < 20, "twenty calls all landed on one process"
                peer = await Peer.call(http, base, FRAME)
                peers.append(peer)
                await asyncio.wait_for(peer.first.wait(), 10)
            by_instance: dict[str, list[Peer]] = {}
            calls = _calls(db)
            for peer in peers:
                by_instance.setdefault(calls[peer.stream.call_sid][0], []).append(peer)
            pid_of = {instance: pid for pid, instance in first.items()}
            victim, survivor = sorted(by_instance, key=lambda i: pid_of[i])

            # /metrics of either process counts both processes' calls.
            text = await _metrics(base)
            started = {int(pid): float(n) for pid, n in re.findall(
                r'^ivr_process_calls\{pid="(\d+)"\} ([0-9.]+)$', text, re.M)}
            assert started == {pid_of[i]: float(len(by_instance[i])) for i in by_instance}
            assert re.search(rf"^ivr_active_calls {len(peers)}\.0$", text, re.M)

            # Older than IVR_STALE_AFTER_MS: only the survivor's heartbeats keep its calls.
            await asyncio.sleep(1.2)
            os.kill(pid_of[victim], signal.SIGKILL)
            killed = loop.time()
            for peer in by_instance[victim]:
                await asyncio.wait_for(peer.closed.wait(), 5)
            # The supervisor starts another process in the dead one's place.
            after = await asyncio.wait_for(_instances(base, 2, proc), 30)
            assert pid_of[survivor] in after and pid_of[victim] not in after
            assert len(set(children(proc.pid, "ivr serve"))) == 2
            # The survivor's calls went on through all that, still live in the store.
            for peer in by_instance[survivor]:
                peer.first.clear()  # set again by the next frame the server sends
                await asyncio.wait_for(peer.first.wait(), 5)
                assert not peer.closed.is_set()
                assert peer.heard[-1] > killed
            calls = _calls(db)
            assert all(calls[p.stream.call_sid][1] is None for p in by_instance[survivor])
            # The dead process's calls are closed once stale, by a live process.
            await asyncio.wait_for(_closed(db, by_instance[victim]), 10)

            # SIGTERM: each process drains (IVR_DRAIN_S=1), then the supervisor exits 0.
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
            assert children(proc.pid) == []
            for peer in by_instance[survivor]:
                await asyncio.wait_for(peer.closed.wait(), 1)
        calls = _calls(db)
        assert {calls[p.stream.call_sid][1] for p in by_instance[survivor]} == {"shutdown"}
    finally:
        for peer in peers:
            await peer.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_first_process_that_cannot_listen_stops_the_supervisor(tmp_path: Path) -> None:
    """The port is held by a socket without SO_REUSEPORT: the first child fails to bind,
    and the supervisor exits 1 rather than restarting it forever."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        proc = await _supervise(tmp_path, holder.getsockname()[1])
        assert await asyncio.wait_for(proc.wait(), 30) == 1
    finally:
        holder.close()
    assert "exited before it listened" in (tmp_path / "serve.log").read_text()
