"""A flood of frames with a frozen timestamp against `ivr serve` in its own process:
the server's memory is measured from outside (/proc), as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from ivr.sim.run import free_port, run_call
from ivr.sim.script import PressKeys
from ivr.sim.transcript import fetch_server_transcript
from ivr.telephony import inbound
from tests.conftest import ROOT
from tests.media_peer import (
    JITTER_S,
    LEAD_S,
    closed_with,
    max_prompt_gap,
    max_silence_heard,
    media,
    start_stream,
)

FLOOD_FRAMES = 20_000
# With the flood limit off: enough frames that keeping them (19 MB as 8 kHz PCM16 alone,
# twice that upsampled) would stand far above what the process's allocator and socket
# buffers move by on their own (1-10 MB on uvloop, the same for 20,000 or 60,000 frames).
UNLIMITED_FRAMES = 60_000
MAX_GROWTH_KB = 20 * 1024


@dataclass(frozen=True)
class Served:
    pid: int
    base: str


def rss_kb(pid: int) -> int:
    """The process's resident set (VmRSS), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None, status
    return int(match.group(1))


@pytest.fixture
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    """`python -m ivr serve` on a free loopback port, ready (its /healthz answers); an
    indirect parameter adds to its environment."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IVR_LOG_LEVEL": "warning",
           "IVR_DB": str(tmp_path / "ivr.db"), "IVR_FLOWS": str(ROOT / "flows"),
           "IVR_RECOGNIZER_WORKERS": "1", **getattr(request, "param", {})}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "serve", "--host", "127.0.0.1", "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(60):
            while True:
                assert proc.returncode is None, "the server exited"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/healthz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield Served(proc.pid, base)
    finally:
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def protocol_errors(http: aiohttp.ClientSession, base: str, reason: str) -> float:
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
    match = re.search(rf'^ivr_protocol_errors_total{{reason="{reason}"}} (\S+)$', text,
                      re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@dataclass
class Flood:
    code: int | None
    sent: int
    baseline_kb: int
    t_closed: float
    call_sid: str


class RssSampler:
    """The server's VmRSS every 10 ms while running: `peak_kb` catches what a single
    reading after the fact could miss."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self.samples.append(rss_kb(self.pid))

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(rss_kb(self.pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.01)

    @property
    def peak_kb(self) -> int:
        return max(self.samples)


async def flood(http: aiohttp.ClientSession, served: Served, *, stop: bool = False,
                frames: int = FLOOD_FRAMES) -> Flood:
    """Start a call, wait for its greeting, then send `frames` media frames all
    stamped 0 as fast as they go (until the server closes the socket); with `stop`, end
    the call with `stop` after them."""
    ws_url = served.base.replace("http", "ws") + "/media"
    async with http.ws_connect(ws_url) as ws:
        stream = await start_stream(http, served.base, ws)
        async with asyncio.timeout(10):
            assert (await ws.receive()).type == aiohttp.WSMsgType.TEXT  # its greeting
        baseline = rss_kb(served.pid)
        closed = asyncio.create_task(closed_with(ws))
        sent = 0
        for seq in range(2, frames + 2):
            if closed.done():
                break
            try:
                await ws.send_str(media(stream, seq, 0))
            except (aiohttp.ClientError, ConnectionError):
                break
            sent += 1
            # Yield once a frame: this process also times the healthy call's audio, and
            # a sender that never yields would make its frames look late.
            await asyncio.sleep(0)
        if stop:
            await ws.send_str(inbound.stop_message(frames + 2, stream.stream_sid,
                                                   stream.account_sid, stream.call_sid))
        async with asyncio.timeout(15):
            code = await closed
        return Flood(code, sent, baseline, time.monotonic(), stream.call_sid)


async def test_a_frozen_timestamp_flood_is_closed_and_the_server_stays_small(
    served: Served,
) -> None:
    """20,000 frames stamped "0", sent as fast as they go, mid-call: the flooding
    connection is closed as a flood (1008, counted), the server's RSS grows by less than
    20 MB, and the healthy caller hears its prompts without a silence."""
    ws_url = served.base.replace("http", "ws") + "/media"
    async with aiohttp.ClientSession() as http:
        async with RssSampler(served.pid) as rss:
            flooded, healthy = await asyncio.gather(
                flood(http, served),
                run_call(ws_url, [PressKeys("2")], flow="demo", transcribe=False,
                         call_timeout=60),
            )
        record = await fetch_server_transcript(http, ws_url, flooded.call_sid, max_wait=5)
        flood_errors = await protocol_errors(http, served.base, "flood")
    growth = rss.peak_kb - flooded.baseline_kb
    print(f"flood: {flooded.sent} frames sent before the close; server RSS "
          f"{flooded.baseline_kb} -> {rss.peak_kb} kB (+{growth} kB); the healthy call's "
          f"largest gap in a prompt: {max_prompt_gap(healthy) * 1000:.0f} ms")

    assert flooded.code == aiohttp.WSCloseCode.POLICY_VIOLATION
    assert flood_errors == 1
    assert record is not None
    assert (record["outcome"], record["stats"]["end_reason"]) == ("dropped", "flood")
    assert record["stats"]["frames_in"] < FLOOD_FRAMES
    assert growth < MAX_GROWTH_KB
    assert 0 < healthy.t_start < flooded.t_closed < healthy.t_end  # it was mid-call
    assert healthy.server is not None and healthy.server["outcome"] == "completed"
    # The healthy caller hears no silence: its frames may arrive late by less than the
    # lead buffered at the far end (the attacker shares the server and these 2 cores),
    # never by more.
    assert max_silence_heard(healthy) <= JITTER_S
    assert max_prompt_gap(healthy) <= LEAD_S


@pytest.mark.parametrize("served", [{"IVR_MEDIA_FLOOD_MS": str(10**9)}], indirect=True)
async def test_with_no_flood_limit_a_frozen_timestamp_still_grows_no_buffer(
    served: Served,
) -> None:
    """The per-call buffers are bounded by frames, not timestamps: with the flood limit
    out of the way, all 60,000 frames stamped "0" are taken in and the server grows by
    well under what keeping them would cost (19 MB as 8 kHz PCM16 alone) if it trimmed
    by timestamp."""
    ws_url = served.base.replace("http", "ws") + "/media"
    async with aiohttp.ClientSession() as http:
        async with RssSampler(served.pid) as rss:
            flooded = await flood(http, served, stop=True, frames=UNLIMITED_FRAMES)
        record = await fetch_server_transcript(http, ws_url, flooded.call_sid, max_wait=5)
    growth = rss.peak_kb - flooded.baseline_kb
    print(f"no flood limit: {flooded.sent} frames; server RSS {flooded.baseline_kb} -> "
          f"{rss.peak_kb} kB (+{growth} kB)")
    assert flooded.code == aiohttp.WSCloseCode.OK
    assert record is not None and record["stats"]["end_reason"] == "stop"
    assert record["stats"]["frames_in"] == UNLIMITED_FRAMES
    assert growth < 13 * 1024
