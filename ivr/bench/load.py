"""`ivr bench load`: many concurrent calls against a real server process.

The server (`ivr serve`) runs in its own process; this process places N calls like
Twilio (`POST /voice`, then the Media Stream it names, started with its parameters) and
drives them: media every 20 ms (silence, so the flow's prompts play and
its no-input timers run), marks echoed when the audio before them would have played.
It reports the server's CPU per call-second (from /proc), the outbound pacing the callers
saw (frames per second, the worst gap between two frames with no mark between them, i.e.
inside a prompt, and the calls with such a gap of 40 ms or more: an audible one), the
greeting's first frame after `start` (p50/p99), the server's RSS per call, its event-loop
lag p99 and late-frame counter, so the cost of one call's media path can be extrapolated
to 1,000.

One shared 20 ms ticker sends every call's frame, and outbound media are recognised by
their prefix instead of parsed, so the load generator itself stays cheap enough to drive
many hundred calls from one core (its own late ticks are printed: an overloaded
generator must not pass for a slow server).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ivr.bench.server import rss_mb
from ivr.sim.dial import call_urls, dial, voice_form
from ivr.sim.run import free_port
from ivr.telephony import inbound, outbound

TICK = 0.020
SILENCE = b"\xff" * 160
AUDIBLE_GAP = 0.040  # a frame this late after the previous one in a prompt is heard


@dataclass
class _Call:
    ws: aiohttp.ClientWebSocketResponse
    sid: str
    started: float
    first_in: float | None = None
    seq: int = 1
    chunk: int = 0
    frames_in: int = 0
    last_in: float = 0.0
    in_prompt: bool = False  # frames came since the last mark: a silence now is a gap
    max_dry: float = 0.0  # the longest silence heard inside a prompt (buffer ran dry)
    max_gap: float = 0.0
    buffered_until: float = 0.0
    marks: list[tuple[float, str]] = field(default_factory=list)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def _reader(call: _Call) -> None:
    media = outbound.media_message(call.sid, b"\0")[:-7]  # this stream's media prefix
    async for msg in call.ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        now = time.monotonic()
        text: str = msg.data
        if text.startswith(media):
            # Not parsed (the generator must stay cheap): the payload is the base64
            # between the prefix and the closing '"}}'.
            b64 = len(text) - len(media) - 3
            _media_in(call, now, (b64 // 4 * 3 - text.count("=", len(text) - 5)) / 8000)
            continue
        out = outbound.parse_outbound(text)  # any other spelling of JSON, marks, clears
        if isinstance(out, outbound.OutMedia):
            _media_in(call, now, len(out.payload) / 8000)
        elif isinstance(out, outbound.OutMark):
            call.marks.append((max(call.buffered_until, now), out.name))
            call.in_prompt = False  # the pause before the next prompt is no gap
        elif isinstance(out, outbound.OutClear):
            call.buffered_until = now
            call.in_prompt = False


def _media_in(call: _Call, now: float, seconds: float) -> None:
    if call.in_prompt:
        call.max_gap = max(call.max_gap, now - call.last_in)
        # What the caller hears: the far end's buffer (the lead) ran dry before this frame.
        call.max_dry = max(call.max_dry, now - call.buffered_until)
    if call.first_in is None:
        call.first_in = now
    call.in_prompt = True
    call.frames_in += 1
    call.last_in = now
    call.buffered_until = max(call.buffered_until, now) + seconds


def _pct(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = math.ceil(len(ordered) * p / 100)
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]


async def _loop_lag_ms(http: aiohttp.ClientSession, base: str) -> str:
    """The server's event-loop lag p99 from /metrics ("?" where it is not readable)."""
    with contextlib.suppress(aiohttp.ClientError, ValueError):
        async with http.get(base + "/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith("ivr_event_loop_lag_p99_seconds "):
                    return f"{float(line.split()[1]) * 1000:.1f} ms"
    return "?"


async def load_main(calls: int, seconds: float, workers: int, baseline: bool = False) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        # A private loopback server: the unsigned callers here must not meet the
        # signatures (or the public URL) a production environment may configure.
        env = {k: v for k, v in os.environ.items()
               if k not in ("TWILIO_AUTH_TOKEN", "IVR_PUBLIC_URL", "IVR_HOST")}
        env |= {"IVR_LOG_LEVEL": "warning", "IVR_DB": str(Path(tmp) / "load.db"),
                "IVR_RECOGNIZER_WORKERS": str(workers),
                # It measures what lies past capacity: admission control would refuse it.
                "IVR_MAX_CALLS": "0", "IVR_MAX_LOOP_LAG_MS": "0", "IVR_DRAIN_S": "0"}
        cost = await _against(["ivr.cli.main", "serve", "--host", "127.0.0.1"], env,
                              calls, seconds, "`ivr serve`")
        if baseline:
            # The same load, one after the other (never both servers on the cores at once).
            floor = await _against(["ivr.bench.baseline"], env, calls, seconds,
                                   "the baseline server (ivr/bench/baseline.py)")
            print(f"ratio: `ivr serve` CPU per call-second / baseline's = {cost / floor:.2f}")
    print(f"reproduce: ivr bench load --calls {calls} --seconds {seconds:g}"
          + (" --baseline" if baseline else ""))
    return 0


async def _against(module: list[str], env: dict[str, str], calls: int, seconds: float,
                   name: str) -> float:
    """Run the load against `python -m <module> --port P`; its CPU per call-second."""
    port = free_port()
    # Popen only forks; the wait() below happens after the event loop work is done.
    server = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", *module, "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        return await _drive(server, port, calls, seconds, name)
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(10)


async def _drive(server: subprocess.Popen[bytes], port: int, n: int, seconds: float,
                 name: str) -> float:
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
        readers: list[asyncio.Task[None]] = []
        rss0 = rss_mb(server.pid)
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
            call = _Call(ws, sid, time.monotonic())
            calls.append(call)
            readers.append(asyncio.create_task(_reader(call)))  # reading before the start
            await ws.send_str(inbound.start_message(
                1, sid, account_sid, call_sid, dialled.parameters))
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
        rss = rss_mb(server.pid) - rss0
        lag = await _loop_lag_ms(http, base)
        for c in calls:
            await c.ws.close()
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    frames_in = sum(c.frames_in for c in calls)
    worst_gap = max(c.max_gap for c in calls) * 1000
    gappy = sum(c.max_gap >= AUDIBLE_GAP for c in calls)
    dry = sum(c.max_dry >= AUDIBLE_GAP for c in calls)
    worst_dry = max(c.max_dry for c in calls) * 1000
    greet = sorted((c.first_in - c.started) * 1000 for c in calls if c.first_in is not None)
    share = cpu / wall
    print(f"{n} concurrent calls for {wall:.1f} s against {name} (own process)")
    print(f"  server CPU: {share * 100:.1f}% of one core = {share / n * 1000:.2f} ms/s per call"
          f" -> 1,000 calls need {share / n * 1000:.2f} cores")
    print(f"  outbound frames received: {frames_in} ({frames_in / wall / n:.1f}/s per call)")
    print(f"  worst gap between outbound frames: {worst_gap:.0f} ms;"
          f" calls with a gap >= {AUDIBLE_GAP * 1000:.0f} ms: {gappy}/{n}")
    print(f"  heard (the lead buffered at the far end ran dry mid-prompt): calls with a"
          f" silence >= {AUDIBLE_GAP * 1000:.0f} ms: {dry}/{n}, worst {max(0.0, worst_dry):.0f} ms")
    if greet:
        print(f"  greeting first frame after start: p50 {_pct(greet, 50):.0f} ms,"
              f" p99 {_pct(greet, 99):.0f} ms ({len(greet)}/{n} calls greeted)")
    print(f"  server RSS: +{rss:.1f} MiB = {rss * 1024 / n:.0f} KiB per call;"
          f" event-loop lag p99: {lag}")
    print(f"  inbound sender ticks late: {late_ticks}/{ticks}")
    print(f"  server counters: {health.get('counters')}")
    return share / n
