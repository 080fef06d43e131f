"""Thousands of calls and the memory stays flat (`ivr bench soak` measures it).

An ended call is freed by reference counting the moment it ends: no reference cycle
leaves its objects and buffers to the next full garbage collection. Memory the calls
freed goes back to the system when the server goes idle (`server.memory`).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from ivr.server.app import create_app
from ivr.server.memory import HeapTrimmer, native_trim
from ivr.server.services import SERVICES, Services
from ivr.telephony import inbound
from tests.component.test_outcomes import first_media
from tests.conftest import make_settings
from tests.media_peer import start_stream


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Only reference counting frees objects while the test runs."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
async def app_server(tmp_path: Path) -> AsyncIterator[TestServer]:
    settings = make_settings(tmp_path, recognizer_workers=1, mark_grace_ms=50)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_an_ended_call_is_freed_without_the_garbage_collector(
    app_server: TestServer, no_collector: None,
) -> None:
    services = app_server.app[SERVICES]
    base = f"http://127.0.0.1:{app_server.port}"
    async with aiohttp.ClientSession() as http, http.ws_connect(base + "/media") as ws:
        stream = await start_stream(http, base, ws)
        await first_media(ws)
        session = services.calls[stream.stream_sid]
        # The call's parts, each of which held the session (directly or through a
        # callback) before the back-references became weak.
        parts = (session, session.speaker, session.answers,  # type: ignore[attr-defined]
                 session.dialog, session.inbound)  # type: ignore[attr-defined]
        alive = set(range(len(parts)))
        all_freed = asyncio.Event()

        def freed(i: int) -> None:
            alive.discard(i)
            if not alive:
                all_freed.set()

        for i, part in enumerate(parts):
            weakref.finalize(part, freed, i)
        del session, parts, part
        await ws.send_str(inbound.stop_message(9, stream.stream_sid, stream.account_sid,
                                               stream.call_sid))
        async with asyncio.timeout(10):
            while (await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass  # the server closes the socket once the call has ended
    async with asyncio.timeout(10):
        await all_freed.wait()
    assert services.calls == {}


class _Calls:
    def __init__(self, services: Services) -> None:
        self.services = services

    def start(self, sid: str) -> None:
        self.services.counters["calls_started"] += 1
        self.services.calls[sid] = object()  # type: ignore[assignment]

    def end(self, sid: str) -> None:
        del self.services.calls[sid]


async def test_the_heap_is_trimmed_when_idle_and_at_most_every_interval_when_busy(
    tmp_path: Path,
) -> None:
    services = Services(settings=make_settings(tmp_path))
    trims: list[int] = []
    trimmer = HeapTrimmer(services, every_s=30, trim=lambda: trims.append(1) or 1)
    calls = _Calls(services)
    assert not await trimmer.step()  # no call yet: nothing to give back
    calls.start("a")
    calls.start("b")
    assert trimmer.pending and not await trimmer.step()  # busy, and not 30 s yet
    calls.end("a")
    assert not await trimmer.step()  # one call is still live
    trimmer._last -= 31  # busy for longer than the interval
    assert await trimmer.step() and not trimmer.pending
    assert not await trimmer.step()  # nothing new since
    calls.start("c")
    calls.end("b")
    calls.end("c")
    assert await trimmer.step()  # idle after calls: at once
    assert len(trims) == services.heap_trims == 2


def test_glibc_gives_memory_back() -> None:
    trim = native_trim()
    if trim is None:
        pytest.skip("no glibc malloc_trim on this platform")
    blocks = [bytearray(4096) for _ in range(10_000)]
    del blocks[::2]
    assert trim() in (0, 1)
