"""`ivr bench load`: many concurrent calls against a real server process.

The server (`ivr serve`) runs in its own process; this process places N calls like
Twilio (`POST /voice`, then the Media Stream it names, started with its parameters) and
drives them as `ivr.bench.load_peer` describes: media every 20 ms, marks echoed when the
audio before them would have played, a key pressed after each prompt has been heard. It
reports the server's CPU per call-second (from /proc), the outbound pacing the callers
saw (frames per second, the worst gap between two frames inside a prompt, the calls with
such a gap of 40 ms or more, and the calls whose far-end buffer ran dry: an audible
silence), the greeting's first frame after `start` and the DTMF reply's first frame
after the key (p50/p99), the server's RSS per call and its event-loop lag p99, so the
cost of one call's media path can be extrapolated to 1,000. `--baseline` runs the same
load against `ivr.bench.baseline` (a naive media server) and prints the CPU ratio.

The generator must not pass for a slow server: it prints its own late ticks and CPU per
call-second. It is built to be cheap: it runs on uvloop where installed, one shared
20 ms ticker sends every call's frames, media messages are filled into per-call string
templates, and the Media Stream sockets are spoken by hand (`_Stream`): each frame sent
is one synchronous write, each one received is handled as it arrives, with no task or
coroutine per message, and outbound media are recognised by their prefix, not parsed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import aiohttp

from ivr.bench.load_peer import (
    CALLED,
    TICK,
    Caller,
    Figures,
    measure,
    read_frames,
    table,
    text_frame,
)
from ivr.bench.server import rss_mb
from ivr.errors import IvrError
from ivr.sim.dial import call_urls, dial, voice_form
from ivr.sim.run import free_port
from ivr.telephony import inbound, outbound


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


class _Stream(asyncio.Protocol):
    """One call's Media Stream socket, spoken by hand.

    aiohttp's client WebSocket wakes a task for every message and awaits a coroutine
    for every send; at a thousand calls that is most of the generator's CPU. Here the
    upgrade is one request, each frame the server sends is handled in `data_received`
    as it arrives (outbound media recognised by their prefix, not parsed) and each frame
    the caller sends is one synchronous write.
    """

    def __init__(self, host: str, path: str) -> None:
        self.request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}"
                        f"\r\n\r\n").encode()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.call: Caller | None = None
        self.media = b""  # the prefix of this stream's outbound media, compact JSON
        self.spaced = b""  # and as json.dumps spells it (the baseline's)
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(IvrError(f"no upgrade: {buf[:40]!r}"))
                return
            self.upgraded.set_result(None)
            buf = buf[end + 4:]
        self.buf = buf[read_frames(buf, self._frame):]

    def _frame(self, opcode: int, payload: bytes) -> None:
        call = self.call
        if opcode == 0x1 and call is not None:
            now = time.monotonic()
            prefix = self.media if payload.startswith(self.media) else (
                self.spaced if payload.startswith(self.spaced) else None)
            if prefix is not None:
                # The payload is the base64 between the prefix and the closing '"}}'.
                b64 = len(payload) - len(prefix) - 3
                call.media_in(now, (b64 // 4 * 3 - payload.count(b"=", -5)) / 8000)
                return
            out = outbound.parse_outbound(payload)  # other spellings of JSON, marks, clears
            if isinstance(out, outbound.OutMedia):
                call.media_in(now, len(out.payload) / 8000)
            elif isinstance(out, outbound.OutMark):
                call.mark_in(now, out.name)
            elif isinstance(out, outbound.OutClear):
                call.clear_in(now)
        elif opcode == 0x8 and self.transport is not None:
            self.transport.close()

    def send(self, text: str) -> None:
        # A closed stream drops it: `connection_lost` has ended the call, so the ticker
        # sends it nothing more.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(text_frame(text.encode()))

    def close(self) -> None:
        """A normal closure (1000), then the socket."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"\x88\x82\0\0\0\0\x03\xe8")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionResetError("closed before the upgrade"))
        if self.call is not None and self.call.ended is None:
            self.call.ended = time.monotonic()


async def _open(url: str, sid: str) -> _Stream:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(lambda: _Stream(parts.netloc, parts.path), host, port)
    await asyncio.wait_for(stream.upgraded, 10)
    stream.media = outbound.media_message(sid, b"\0")[:-7].encode()
    stream.spaced = json.dumps({"event": "media", "streamSid": sid,
                                "media": {"payload": ""}})[:-3].encode()
    return stream


async def _loop_lag_ms(http: aiohttp.ClientSession, base: str) -> float | None:
    """The server's event-loop lag p99 from /metrics (None where it is not readable)."""
    with contextlib.suppress(aiohttp.ClientError, ValueError):
        async with http.get(base + "/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith("ivr_event_loop_lag_p99_seconds "):
                    return float(line.split()[1]) * 1000
    return None


async def load_main(calls: int, seconds: float, workers: int, baseline: bool = False,
                    json_path: Path | None = None) -> int:
    loop = type(asyncio.get_running_loop())
    print(f"load generator: one process on {loop.__module__}.{loop.__name__}")
    runs: list[Figures] = []
    with tempfile.TemporaryDirectory() as tmp:
        # A private loopback server: the unsigned callers here must not meet the
        # signatures (or the public URL) a production environment may configure.
        env = {k: v for k, v in os.environ.items()
               if k not in ("TWILIO_AUTH_TOKEN", "IVR_PUBLIC_URL", "IVR_HOST")}
        env |= {"IVR_LOG_LEVEL": "warning", "IVR_DB": str(Path(tmp) / "load.db"),
                "IVR_RECOGNIZER_WORKERS": str(workers),
                # It measures what lies past capacity: admission control would refuse it.
                "IVR_MAX_CALLS": "0", "IVR_MAX_LOOP_LAG_MS": "0", "IVR_DRAIN_S": "0"}
        runs.append(await _against(["ivr.cli.main", "serve", "--host", "127.0.0.1"], env,
                                   calls, seconds, "ivr serve"))
        if baseline:
            # The same load, one after the other (never both servers on the cores at once).
            runs.append(await _against(["ivr.bench.baseline"], env, calls, seconds, "baseline"))
    command = (f"ivr bench load --calls {calls} --seconds {seconds:g}"
               + (" --baseline" if baseline else ""))
    print()
    for line in table(runs):
        print(line)
    print(f"reproduce: {command}")
    if json_path is not None:
        write_json(json_path, command, runs)
    return 0


def write_json(path: Path, command: str, runs: list[Figures]) -> None:
    """The figures of `runs` (and the CPU ratio with a baseline run) as JSON."""
    ratio = runs[0].cpu_ms_per_call_s / runs[1].cpu_ms_per_call_s if len(runs) == 2 else None
    path.write_text(json.dumps(
        {"command": command, "runs": [asdict(f) for f in runs], "cpu_ratio": ratio},
        indent=2, default=str) + "\n")


async def _against(module: list[str], env: dict[str, str], calls: int, seconds: float,
                   name: str) -> Figures:
    """Run the load against `python -m <module> --port P`."""
    port = free_port()
    # Popen only forks; the wait() below happens after the event loop work is done.
    server = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", *module, "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        figures = await _drive(server, port, calls, seconds, name)
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)
    _print(figures)
    return figures


class _Ticker:
    """One 20 ms clock for every call: each tick sends every live call's due messages.
    Its late ticks are counted from `measuring` on (the steady window)."""

    def __init__(self, calls: list[Caller]) -> None:
        self.calls = calls
        self.measuring = False
        self.ticks = 0
        self.late = 0

    async def run(self) -> None:
        monotonic = time.monotonic
        start, n = monotonic(), 0
        while True:
            for c in self.calls:  # no await inside: calls placed meanwhile join next tick
                if c.ended is None:
                    try:
                        c.tick(monotonic())
                    except ConnectionError:
                        c.ended = monotonic()
            n += 1
            delay = start + n * TICK - monotonic()
            if self.measuring:
                self.ticks += 1
                self.late += delay < 0
            await asyncio.sleep(max(0.0, delay))


async def _drive(server: subprocess.Popen[bytes], port: int, n: int, seconds: float,
                 name: str) -> Figures:
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(port)
    # No connection limit: every call holds one (aiohttp's default caps a session at 100).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        break
            await asyncio.sleep(0.1)
        calls: list[Caller] = []
        streams: list[_Stream] = []
        rss0 = rss_mb(server.pid)
        urls = call_urls(base)
        ticker = _Ticker(calls)
        ticking = asyncio.create_task(ticker.run())  # calls are driven as they are placed
        try:
            for i in range(n):
                # As Twilio: the voice webhook first, then the stream it names, started
                # with exactly its parameters (the signed stream token among them).
                call_sid, account_sid = "CA" + secrets.token_hex(16), "AC" + secrets.token_hex(16)
                dialled = await dial(http, urls.base, voice_form(
                    call_sid, account_sid, f"+1555{i:07d}", CALLED))
                sid = "MZ" + secrets.token_hex(16)
                stream = await _open(urls.media, sid)
                streams.append(stream)
                stream.send(inbound.connected_message())
                stream.call = call = Caller(sid, time.monotonic(), stream.send,
                                            random.Random(rng.random()))
                stream.send(inbound.start_message(
                    1, sid, account_sid, call_sid, dialled.parameters))
                calls.append(call)  # the ticker sends its frames from the next tick on
            cpu0, t0, own0 = _cpu_seconds(server.pid), time.monotonic(), os.times()
            ticker.measuring = True
            await asyncio.sleep(seconds)
            cpu = _cpu_seconds(server.pid) - cpu0
            wall = time.monotonic() - t0
            own1 = os.times()
            until = time.monotonic()
        finally:
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)
        async with http.get(base + "/healthz") as resp:
            health = await resp.json()
        rss = rss_mb(server.pid) - rss0
        lag = await _loop_lag_ms(http, base)
        for stream in streams:
            stream.close()
    figures = measure(name, calls, seconds=wall, cpu_s=cpu, rss_kib=rss * 1024,
                      loop_lag_ms=lag, late_ticks=ticker.late, ticks=ticker.ticks,
                      generator_cpu_s=own1.user + own1.system - own0.user - own0.system,
                      generator_sys_s=own1.system - own0.system, until=until)
    figures.counters = health.get("counters") or {}
    return figures


def _print(f: Figures) -> None:
    n = f.calls
    share = f.cpu_ms_per_call_s * n / 1000
    print(f"{n} concurrent calls for {f.seconds:.1f} s against {f.server} (own process)")
    print(f"  server CPU: {share * 100:.1f}% of one core = {f.cpu_ms_per_call_s:.2f} ms/s"
          f" per call -> 1,000 calls need {f.cpu_ms_per_call_s:.2f} cores")
    print(f"  outbound frames received: {f.frames_per_call_s:.1f}/s per call")
    print(f"  worst gap between outbound frames: {f.worst_gap_ms:.0f} ms;"
          f" calls with a gap >= 40 ms: {f.gap_calls}/{n}")
    print(f"  heard (the lead buffered at the far end ran dry mid-prompt): calls with a"
          f" silence >= 40 ms: {f.heard_calls}/{n}, worst {f.worst_heard_ms:.0f} ms")
    print(f"  greeting first frame after start: p50 {f.greeting_p50_ms:.0f} ms,"
          f" p99 {f.greeting_p99_ms:.0f} ms ({f.greeted}/{n} calls greeted)")
    print(f"  DTMF -> first reply frame: p50 {f.dtmf_p50_ms:.0f} ms, p99 {f.dtmf_p99_ms:.0f} ms"
          f" ({f.replies}/{f.presses} keys answered)")
    lag = "?" if f.loop_lag_p99_ms is None else f"{f.loop_lag_p99_ms:.1f} ms"
    print(f"  server RSS: {f.rss_kib_per_call:.0f} KiB per call; event-loop lag p99: {lag}")
    print(f"  streams the server closed during the run: {f.ended_early}/{n}")
    print(f"  load generator: ticks late {f.late_ticks}/{f.ticks},"
          f" CPU {f.generator_cpu_ms_per_call_s:.2f} ms per call-second"
          f" ({f.generator_sys_ms_per_call_s:.2f} of it in the kernel)")
    print(f"  server counters: {f.counters}")
