"""A real `ivr serve` process for the benchmarks, and what /proc says about it.

`ServerProcess` starts the server on a free loopback port with a private environment
(no Twilio token or public URL: the bench's unsigned callers must not meet the checks a
production environment configures), waits for `/healthz`, and can be stopped politely
(SIGTERM), killed (SIGKILL) and started again on the same database, which is what
`ivr bench chaos` does to it. The `/proc` readings (RSS, open descriptors, threads, child
processes) are Linux-only, like the server's own CPU figures in `ivr bench load`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from ivr.errors import IvrError
from ivr.sim.run import free_port

__all__ = ["ServerProcess", "children", "fd_count", "outcomes", "rss_mb", "thread_count"]

_PRIVATE = ("TWILIO_AUTH_TOKEN", "IVR_PUBLIC_URL", "IVR_HOST", "IVR_PORT")


def rss_mb(pid: int) -> float:
    """Resident set size of `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def children(pid: int, running: str = "") -> list[int]:
    """Direct child processes of `pid` whose command line contains `running`."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            # Field 4 (ppid) follows the parenthesised command name, which may hold spaces.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and running in _cmdline(int(entry)):
                found.append(int(entry))
    return sorted(found)


def outcomes(db: Path, call_sids: list[str]) -> dict[str, str | None]:
    """The recorded outcome of each call (None: a row with no outcome); calls with no
    row at all are absent from the result."""
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        found: dict[str, str | None] = {}
        for i in range(0, len(call_sids), 500):
            chunk = call_sids[i:i + 500]
            rows = con.execute(
                f"SELECT call_sid, outcome FROM calls WHERE call_sid IN "
                f"({','.join('?' * len(chunk))})", chunk).fetchall()
            found.update({str(sid): outcome for sid, outcome in rows})
        return found
    finally:
        con.close()


class ServerProcess:
    """`python -m ivr serve` on 127.0.0.1; `env` is laid over the private environment."""

    def __init__(self, db: Path, env: dict[str, str], *, log: Path | None = None) -> None:
        self.db = db
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k not in _PRIVATE}
        self.env |= {"IVR_LOG_LEVEL": "warning", "IVR_DB": str(db)} | env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.command = [sys.executable, "-m", "ivr.cli.main", "serve", "--host", "127.0.0.1",
                        "--port", str(self.port)]

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise IvrError("the server is not running")
        return self.proc.pid

    async def start(self, http: aiohttp.ClientSession, max_wait: float = 30.0) -> None:
        out = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        try:
            # Popen only forks; waiting happens in `stop`, off the event loop.
            self.proc = subprocess.Popen(  # noqa: ASYNC220
                self.command, env=self.env, stdout=out, stderr=out)
        finally:
            if not isinstance(out, int):
                out.close()
        try:
            async with asyncio.timeout(max_wait):
                while True:
                    if self.proc.poll() is not None:
                        raise IvrError(f"the server exited with {self.proc.returncode} "
                                       "while starting" + (f" (log: {self.log})" if self.log
                                                           else ""))
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(self.base + "/healthz") as resp:
                            if resp.status == 200:
                                return
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise IvrError(f"the server did not answer /healthz within {max_wait:g} s") from None

    async def health(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with asyncio.timeout(10):
            async with http.get(self.base + "/healthz") as resp:
                body: dict[str, Any] = await resp.json()
                return body

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def wait(self, max_wait: float) -> int | None:
        """The exit code, or None if the process is still running after `max_wait` s."""
        if self.proc is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), max_wait)
        except TimeoutError:
            return None

    async def stop(self, max_wait: float = 40.0) -> int | None:
        """SIGTERM, then SIGKILL past `max_wait` s; the exit code of the polite stop."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else None
        self.signal(signal.SIGTERM)
        code = await self.wait(max_wait)
        if code is None:
            self.proc.kill()
            await self.wait(10)
        return code
