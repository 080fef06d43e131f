"""A misbehaving OpenAI-compatible speech provider for `ivr bench chaos`, on loopback.

`POST /v1/audio/speech` answers raw 24 kHz PCM (a tone), `POST /v1/audio/transcriptions`
a fixed text, each according to the current `Mode`: `ok`, `hang` (accept the request and
never answer, until the client gives up), `error` (HTTP 500). `flap` cycles
ok → hang → error every `period` seconds, the way a provider in trouble looks from
outside. (tests/fake_openai.py is the test suite's scriptable fake; this is the bench's
own, small on purpose.)
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections import Counter
from typing import Literal

from aiohttp import web

__all__ = ["FakeProvider", "Mode"]

Mode = Literal["ok", "hang", "error", "flap"]

_RATE = 24000
_FLAP: tuple[Mode, ...] = ("ok", "hang", "error")


def _tone(seconds: float, freq: float = 440.0) -> bytes:
    n = int(seconds * _RATE)
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * freq * i / _RATE))
                                   for i in range(n)))


class FakeProvider:
    """Start with `await start()`, point `IVR_TTS_BASE_URL`/`IVR_STT_BASE_URL` at
    `base_url`, change `mode` at will, `await close()` at the end."""

    def __init__(self, *, text: str = "sales", period: float = 2.0) -> None:
        self.mode: Mode = "ok"
        self.text = text
        self.period = period
        self.requests: Counter[str] = Counter()  # "speech:ok", "transcriptions:hang", ...
        self._speech = _tone(0.6)
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def current(self) -> Mode:
        if self.mode != "flap":
            return self.mode
        return _FLAP[int(time.monotonic() / self.period) % len(_FLAP)]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/audio/speech", self._speech_route)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions_route)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"

    async def close(self) -> None:
        self._released.set()  # let hung handlers finish so the runner can stop
        if self._runner is not None:
            await self._runner.cleanup()

    async def _fault(self, route: str) -> web.Response | None:
        mode = self.current()
        self.requests[f"{route}:{mode}"] += 1
        if mode == "hang":
            await self._released.wait()  # held until the client disconnects or we close
            return web.Response(status=503)
        if mode == "error":
            return web.json_response({"error": {"message": "chaos", "type": "server_error"}},
                                     status=500)
        return None

    async def _speech_route(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        faulted = await self._fault("speech")
        if faulted is not None:
            return faulted
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await resp.prepare(request)
        for i in range(0, len(self._speech), 4800):
            await resp.write(self._speech[i:i + 4800])
        await resp.write_eof()
        return resp

    async def _transcriptions_route(self, request: web.Request) -> web.Response:
        await request.read()
        faulted = await self._fault("transcriptions")
        return faulted if faulted is not None else web.json_response({"text": self.text})
