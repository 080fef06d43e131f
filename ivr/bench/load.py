"""`ivr bench load`: many concurrent calls against a real server process.

The server (`ivr serve`) runs in its own process; this process places N calls like
Twilio (`POST /voice`, then the Media Stream it names, started with its parameters) and
drives them: media every 20 ms (silence, so the flow's prompts play and
its no-input timers run), marks echoed when the audio before them would have played.
It reports the server's CPU per call (from /proc), the outbound pacing the callers saw
(frames per second, gaps inside a prompt) and the server's late-frame counter, so the
cost of one call's media path can be extrapolated to 1,000.

One shared 20 ms ticker sends every call's frame, so the load generator itself stays
cheap enough to drive a few hundred calls from one core.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ivr.sim.dial import call_urls, dial, voice_form
from ivr.sim.run import free_port
from ivr.telephony import inbound, outbound

TICK = 0.020
SILENCE = b"\xff" * 160


@dataclass
class _Call:
    ws: aiohttp.ClientWebSocketResponse
    sid: str
    seq: int = 1
    chunk: int = 0
    frames_in: int = 0
    last_in: float = 0.0
    max_gap: float = 0.0
    buffered_until: float = 0.0
    marks: list[tuple[float, str]] = field(default_factory=list)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def _reader(call: _Call) -> None:
    async for msg in call.ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        out = outbound.parse_outbound(msg.data)
        now = time.monotonic()
        if isinstance(out, outbound.OutMedia):
            if call.frames_in and now - call.last_in < 1.0:
                call.max_gap = max(call.max_gap, now - call.last_in)
            call.frames_in += 1
            call.last_in = now
            call.buffered_until = max(call.buffered_until, now) + len(out.payload) / 8000
        elif isinstance(out, outbound.OutMark):
            call.marks.append((max(call.buffered_until, now), out.name))
        elif isinstance(out, outbound.OutClear):
            call.buffered_until = now


async def load_main(calls: int, seconds: float, workers: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        # A private loopback server: the unsigned callers here must not meet the
        # signatures (or the public URL) a production environment may configure.
        env = {k: v for k, v in os.environ.items()
               if k not in ("TWILIO_AUTH_TOKEN", "IVR_PUBLIC_URL", "IVR_HOST")}
        env |= {"IVR_LOG_LEVEL": "warning", "IVR_DB": str(Path(tmp) / "load.db"),
                "IVR_RECOGNIZER_WORKERS": str(workers),
                # It measures what lies past capacity: admission control would refuse it.
                "IVR_MAX_CALLS": "0", "IVR_MAX_LOOP_LAG_MS": "0", "IVR_DRAIN_S": "0"}
        # Popen only forks; the wait() below happens after the event loop work is done.
        server = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "ivr.cli.main", "serve", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            return await _drive(server, port, calls, seconds)
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(10)


async def _drive(server: subprocess.Popen[bytes], port: int, n: int, seconds: float) -> int:
    base = f"http://127.0.0.1:{port}"
    # No connection limit: every call holds one (aiohttp's default caps a session at 100).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(base + "/healthz") as resp:
                    if resp.status == 200:
                        break
            await asyncio.sleep(0.1)
        calls: list[_Call] = []
        urls = call_urls(base)
        for i in range(n):
            # As Twilio: the voice webhook first, then the stream it names, started with
            # exactly its parameters (the signed stream token among them).
            call_sid, account_sid = "CA" + secrets.token_hex(16), "AC" + secrets.token_hex(16)
            dialled = await dial(http, urls.base, voice_form(
                call_sid, account_sid, f"+1555{i:07d}", "+15550100002"))
            ws = await http.ws_connect(urls.media, max_msg_size=0)
            sid = "MZ" + secrets.token_hex(16)
            await ws.send_str(inbound.connected_message())
            await ws.send_str(inbound.start_message(
                1, sid, account_sid, call_sid, dialled.parameters))
            calls.append(_Call(ws, sid))
        readers = [asyncio.create_task(_reader(c)) for c in calls]
        cpu0, t0 = _cpu_seconds(server.pid), time.monotonic()
        ticks, late_ticks = 0, 0
        start = time.monotonic()
        while (now := time.monotonic()) - start < seconds:
            for c in calls:
                c.seq += 1
                c.chunk += 1
                await c.ws.send_str(inbound.inbound_media_message(
                    c.seq, c.sid, c.chunk, c.chunk * 20, SILENCE))
                while c.marks and c.marks[0][0] <= now:
                    c.seq += 1
                    await c.ws.send_str(
                        inbound.inbound_mark_message(c.seq, c.sid, c.marks.pop(0)[1]))
            ticks += 1
            delay = start + ticks * TICK - time.monotonic()
            if delay < 0:
                late_ticks += 1
            await asyncio.sleep(max(0.0, delay))
        cpu = _cpu_seconds(server.pid) - cpu0
        wall = time.monotonic() - t0
        async with http.get(base + "/healthz") as resp:
            health = await resp.json()
        for c in calls:
            await c.ws.close()
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    frames_in = sum(c.frames_in for c in calls)
    worst_gap = max(c.max_gap for c in calls) * 1000
    share = cpu / wall
    print(f"{n} concurrent calls for {wall:.1f} s against `ivr serve` (own process)")
    print(f"  server CPU: {share * 100:.1f}% of one core = {share / n * 1000:.2f} ms/s per call"
          f" -> 1,000 calls need {share / n * 1000:.2f} cores")
    print(f"  outbound frames received: {frames_in} ({frames_in / wall / n:.1f}/s per call)")
    print(f"  worst gap between outbound frames: {worst_gap:.0f} ms")
    print(f"  inbound sender ticks late: {late_ticks}/{ticks}")
    print(f"  server counters: {health.get('counters')}")
    print(f"reproduce: ivr bench load --calls {n} --seconds {seconds:g}")
    return 0
