"""The limits of one /media connection, on the real app: message size, audio rate,
start and idle timeouts (small ones here: they are settings)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode
from aiohttp.test_utils import TestServer

from ivr.config import Settings
from ivr.server.services import SERVICES, Services
from ivr.telephony import inbound
from tests.conftest import make_settings
from tests.media_peer import Stream, closed_with, media, start_stream

START_TIMEOUT_MS = 300
IDLE_TIMEOUT_MS = 500


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, media_start_timeout_ms=START_TIMEOUT_MS,
                         media_idle_timeout_ms=IDLE_TIMEOUT_MS)


@pytest.fixture
async def peer(server: TestServer) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as http:
        yield http, f"http://127.0.0.1:{server.port}"


def services(server: TestServer) -> Services:
    return server.app[SERVICES]


async def ended_call(server: TestServer, call_sid: str) -> dict[str, Any]:
    """The call's record once it has ended (the end is written as the socket closes)."""
    store = services(server).store
    assert store is not None
    async with asyncio.timeout(10):
        while True:
            call = await store.get_call(call_sid)
            if call is not None and call["ended_at"]:
                return call
            await asyncio.sleep(0.02)


def mark_of_size(stream: Stream, size: int) -> str:
    """A valid `mark` frame exactly `size` bytes long (its name pads it)."""
    frame = inbound.inbound_mark_message(2, stream.stream_sid, "")
    text = inbound.inbound_mark_message(2, stream.stream_sid, "x" * (size - len(frame)))
    assert len(text.encode()) == size
    return text


async def test_a_message_at_the_limit_is_read_and_one_byte_more_closes_with_1009(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    http, base = peer
    async with http.ws_connect(base + "/media") as ws:
        stream = await start_stream(http, base, ws)
        await ws.send_str(mark_of_size(stream, 16 * 1024))  # read: an unknown (stale) mark
        await ws.send_str(mark_of_size(stream, 16 * 1024 + 1))
        async with asyncio.timeout(10):
            assert await closed_with(ws) == WSCloseCode.MESSAGE_TOO_BIG
    call = await ended_call(server, stream.call_sid)
    assert (call["outcome"], call["stats"]["end_reason"]) == ("dropped", "oversized")
    assert call["stats"]["stale_marks"] == 1
    assert services(server).counters["protocol_error.oversized"] == 1


async def test_audio_more_than_3_s_ahead_of_the_wall_clock_closes_as_a_flood(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    """Frames of a frozen timestamp, as fast as they go: the audio is counted by bytes
    received, so the connection closes (1008) after about 3 s of it."""
    http, base = peer
    async with http.ws_connect(base + "/media") as ws:
        stream = await start_stream(http, base, ws)
        for seq in range(2, 402):  # 8 s of audio
            await ws.send_str(media(stream, seq, 0))
        async with asyncio.timeout(10):
            assert await closed_with(ws) == WSCloseCode.POLICY_VIOLATION
    assert ws.close_code == WSCloseCode.POLICY_VIOLATION
    call = await ended_call(server, stream.call_sid)
    assert (call["outcome"], call["stats"]["end_reason"]) == ("dropped", "flood")
    # 150 frames are 3 s; the time the sending took earns a few more.
    assert 150 <= call["stats"]["frames_in"] < 250
    assert services(server).counters["protocol_error.flood"] == 1


async def test_a_burst_of_2_s_of_audio_is_jitter_not_a_flood(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    http, base = peer
    async with http.ws_connect(base + "/media") as ws:
        stream = await start_stream(http, base, ws)
        for seq in range(2, 102):
            await ws.send_str(media(stream, seq, (seq - 2) * 20))
        await ws.send_str(inbound.stop_message(102, stream.stream_sid, stream.account_sid,
                                               stream.call_sid))
        async with asyncio.timeout(10):
            assert await closed_with(ws) == WSCloseCode.OK
    call = await ended_call(server, stream.call_sid)
    assert (call["stats"]["end_reason"], call["stats"]["frames_in"]) == ("stop", 100)
    assert services(server).counters["protocol_error.flood"] == 0


async def test_media_of_another_stream_is_refused_and_not_heard(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    """Canonical media frames (the fast lane's) of a foreign streamSid are protocol
    errors: counted on the call, never fed as its audio; the call goes on."""
    http, base = peer
    async with http.ws_connect(base + "/media") as ws:
        stream = await start_stream(http, base, ws)
        other = "MZ" + "f" * 32
        assert other != stream.stream_sid
        async with asyncio.timeout(10):  # the greeting: start is done, the lane is open
            assert (await ws.receive()).type == aiohttp.WSMsgType.TEXT
        for seq in range(2, 12):
            await ws.send_str(media(stream, seq, (seq - 2) * 20))
            await ws.send_str(inbound.inbound_media_message(seq, other, seq - 1,
                                                            (seq - 2) * 20, b"\xff" * 160))
        await ws.send_str(inbound.stop_message(12, stream.stream_sid, stream.account_sid,
                                               stream.call_sid))
        async with asyncio.timeout(10):
            assert await closed_with(ws) == WSCloseCode.OK
    call = await ended_call(server, stream.call_sid)
    assert (call["stats"]["end_reason"], call["stats"]["frames_in"]) == ("stop", 10)
    assert call["stats"]["protocol_errors"] == 10
    assert services(server).counters["protocol_error.bad_stream_sid"] == 10


async def test_a_socket_without_start_is_closed_after_the_start_timeout(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    http, base = peer
    async with http.ws_connect(base + "/media") as ws:
        t0 = time.monotonic()
        await ws.send_str(inbound.connected_message())
        await ws.send_str(json.dumps({"event": "nothing"}))  # frames that are not start
        async with asyncio.timeout(10):
            assert await closed_with(ws) == WSCloseCode.POLICY_VIOLATION
        assert time.monotonic() - t0 >= START_TIMEOUT_MS / 1000
    assert services(server).counters["protocol_error.no_start"] == 1
    assert services(server).counters["calls_started"] == 0


async def test_a_call_with_no_inbound_frame_for_the_idle_timeout_ends_as_dropped(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    http, base = peer
    async with http.ws_connect(base + "/media") as ws:
        stream = await start_stream(http, base, ws)
        for seq in range(2, 7):
            await ws.send_str(media(stream, seq, (seq - 2) * 20))
        t_last = time.monotonic()
        async with asyncio.timeout(10):
            assert await closed_with(ws) == WSCloseCode.GOING_AWAY
        assert time.monotonic() - t_last >= IDLE_TIMEOUT_MS / 1000
    call = await ended_call(server, stream.call_sid)
    assert (call["outcome"], call["stats"]["end_reason"]) == ("dropped", "idle")
    assert services(server).counters["media_idle"] == 1
