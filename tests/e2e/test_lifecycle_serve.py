"""`ivr serve` as an orchestrator runs it: start-up with a hung voice provider, SIGTERM
with live calls, a second signal.

Each test runs `python -m ivr serve` in its own process and reads its SQLite file after
it has exited.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp
import pytest

from ivr.audio.codec import pcm16_to_ulaw
from ivr.sim.run import free_port
from tests.conftest import ROOT
from tests.fake_openai import Fault, start_fake_openai, tone_pcm
from tests.media_peer import FRAME, Stream, media, start_stream

TONE = pcm16_to_ulaw(tone_pcm(0.02, rate=8000))  # 20 ms a caller's voice would fill
assert len(TONE) == len(FRAME)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IVR_", "TWILIO_"))}
    env.update(PYTHONPATH=str(ROOT), IVR_DB=str(tmp_path / "ivr.db"),
               IVR_FLOWS=str(ROOT / "flows"), IVR_RECOGNIZER_WORKERS="1",
               IVR_CACHE_DIR=str(tmp_path / "cache"), **extra)
    return env


async def _serve(tmp_path: Path, port: int, **extra: str) -> asyncio.subprocess.Process:
    log = (tmp_path / "serve.log").open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ivr", "serve", "--port", str(port),
            env=_env(tmp_path, **extra), stdout=asyncio.subprocess.DEVNULL, stderr=log)
    finally:
        log.close()


async def _status(http: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
            return resp.status
    except (aiohttp.ClientConnectionError, TimeoutError):
        return None


async def _until_refused(http: aiohttp.ClientSession, url: str) -> None:
    """Probe `url` until it answers 503 (the signal reaches the server a moment after
    `send_signal` returns; the caller bounds the wait)."""
    while await _status(http, url) != 503:
        pass


async def _until_up(http: aiohttp.ClientSession, url: str,
                    proc: asyncio.subprocess.Process) -> None:
    """Probe `url` as an orchestrator does until it answers 200 (the caller bounds it)."""
    while await _status(http, url) != 200:
        assert proc.returncode is None, "the server exited"
        await asyncio.sleep(0.02)


def _outcomes(tmp_path: Path) -> dict[str, str | None]:
    with sqlite3.connect(tmp_path / "ivr.db") as db:
        return dict(db.execute("SELECT call_sid, outcome FROM calls").fetchall())


class Peer:
    """One live call on a raw socket: sends `payload` every 20 ms (None: nothing), keeps
    the arrival time of every frame the server sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream: Stream,
                 payload: bytes | None) -> None:
        self.ws, self.stream, self.payload = ws, stream, payload
        self.heard: list[float] = []
        self.first = asyncio.Event()
        self.closed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._read())]
        if payload is not None:
            self._tasks.append(asyncio.create_task(self._talk()))

    @classmethod
    async def call(cls, http: aiohttp.ClientSession, base: str, payload: bytes | None) -> Peer:
        ws = await http.ws_connect(base.replace("http", "ws") + "/media")
        return cls(ws, await start_stream(http, base, ws), payload)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["event"] == "media":
                self.heard.append(loop.time())
                self.first.set()
        self.closed.set()

    async def _talk(self) -> None:
        assert self.payload is not None
        seq = 2
        while not self.ws.closed:
            await self.ws.send_str(media(self.stream, seq, (seq - 2) * 20, self.payload))
            seq += 1
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()


async def test_a_hung_voice_provider_holds_back_neither_start_up_nor_the_greeting(
    tmp_path: Path,
) -> None:
    """/healthz answers within 2 s of the process starting; the first call's greeting
    (the embedded voice) starts within 1 s of its `start`."""
    async with start_fake_openai() as fake:
        fake.outage["speech"] = Fault("hang")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        loop = asyncio.get_running_loop()
        started = loop.time()
        proc = await _serve(tmp_path, port, IVR_TTS_BASE_URL=fake.base_url,
                            IVR_TTS_API_KEY="sk-test", IVR_DRAIN_S="0")
        try:
            async with aiohttp.ClientSession() as http:
                await asyncio.wait_for(_until_up(http, base + "/healthz", proc), 10)
                assert loop.time() - started < 2.0
                peer = await Peer.call(http, base, FRAME)
                called = loop.time()
                try:
                    await asyncio.wait_for(peer.first.wait(), 5)
                    assert peer.heard[0] - called < 1.0
                finally:
                    await peer.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert fake.requests["speech"] >= 1  # the provider was asked, and given up on


async def test_sigterm_drains_live_calls_then_exits_0_with_every_record(
    tmp_path: Path,
) -> None:
    """Three live calls (one listening to a prompt, one speaking, one silent): /readyz is
    503 at once, a new /media is refused, the calls hear the shutdown prompt after
    IVR_DRAIN_S and end as `shutdown`, the process exits 0 within IVR_DRAIN_S + 5 s."""
    drain_s = 1
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await _serve(tmp_path, port, IVR_DRAIN_S=str(drain_s))
    loop = asyncio.get_running_loop()
    peers: list[Peer] = []
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.wait_for(_until_up(http, base + "/readyz", proc), 30)
            peers = [await Peer.call(http, base, p) for p in (None, TONE, FRAME)]
            await asyncio.wait_for(asyncio.gather(*(p.first.wait() for p in peers)), 10)
            proc.send_signal(signal.SIGTERM)
            signalled = loop.time()
            await asyncio.wait_for(_until_refused(http, base + "/readyz"), 0.2)
            assert await _status(http, base + "/healthz") == 200
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(base.replace("http", "ws") + "/media")
            assert refused.value.status == 503
            assert await asyncio.wait_for(proc.wait(), drain_s + 5) == 0
            assert loop.time() - signalled < drain_s + 5
            for peer in peers:
                await asyncio.wait_for(peer.closed.wait(), 1)
                # The shutdown prompt: audio after the drain's time was up.
                assert peer.heard[-1] > signalled + drain_s
    finally:
        for peer in peers:
            await peer.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    outcomes = _outcomes(tmp_path)
    assert sorted(outcomes) == sorted(p.stream.call_sid for p in peers)
    assert set(outcomes.values()) == {"shutdown"}


async def test_a_second_signal_ends_the_calls_at_once(tmp_path: Path) -> None:
    """SIGTERM, then SIGINT: no drain wait, no prompt; every record still written."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await _serve(tmp_path, port, IVR_DRAIN_S="25")
    loop = asyncio.get_running_loop()
    peers: list[Peer] = []
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.wait_for(_until_up(http, base + "/readyz", proc), 30)
            peers = [await Peer.call(http, base, FRAME) for _ in range(2)]
            await asyncio.wait_for(asyncio.gather(*(p.first.wait() for p in peers)), 10)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(_until_refused(http, base + "/readyz"), 0.2)
            proc.send_signal(signal.SIGINT)
            signalled = loop.time()
            assert await asyncio.wait_for(proc.wait(), 5) == 0
            assert loop.time() - signalled < 3
    finally:
        for peer in peers:
            await peer.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert set(_outcomes(tmp_path).values()) == {"shutdown"}
