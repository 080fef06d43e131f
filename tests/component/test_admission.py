"""Admission control on the real app: a cap of two calls, a lagging loop, a draining
process; what /voice, /media and /connect-action answer a call turned away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from xml.etree import ElementTree

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from ivr.config import Settings
from ivr.server.admission import ADMISSION
from ivr.server.services import SERVICES, Services
from ivr.sim.dial import dial, voice_form
from ivr.sim.transcript import new_sid
from ivr.telephony import inbound
from tests.conftest import make_settings
from tests.media_peer import Stream, closed_with

BUSY = "All our lines are busy right now. Please call back in a few minutes."


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    overrides: dict[str, object] = getattr(request, "param", {})
    return make_settings(tmp_path, max_calls=2, recognizer_workers=1, **overrides)


@pytest.fixture
async def peer(server: TestServer) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as http:
        yield http, f"http://127.0.0.1:{server.port}"


class FixedLag:
    def __init__(self, ms: float) -> None:
        self.ms = ms

    def p99_ms(self) -> float:
        return self.ms


def services(server: TestServer) -> Services:
    return server.app[SERVICES]


def refused(server: TestServer, door: str, reason: str) -> tuple[int, float | None]:
    """The refusals as /healthz counts them (all doors) and as /metrics exports them."""
    metric = services(server).metrics.registry.get_sample_value(
        "ivr_calls_refused_total", {"door": door, "reason": reason})
    return services(server).counters[f"refused.{reason}"], metric


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for a condition on the server's state (it changes as the server's tasks run)."""
    async with asyncio.timeout(10):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def post_voice(http: aiohttp.ClientSession, base: str) -> ElementTree.Element:
    form = {"CallSid": new_sid("CA"), "AccountSid": new_sid("AC"),
            "From": "+15550100001", "To": "+15550100002", "CallStatus": "ringing"}
    async with http.post(base + "/voice?flow=demo", data=form) as resp:
        assert resp.status == 200
        return ElementTree.fromstring(await resp.text())


async def live_call(
    http: aiohttp.ClientSession, base: str, stack: list[aiohttp.ClientWebSocketResponse],
) -> Stream:
    """A call as Twilio makes it, /voice then /media, live once its greeting's first
    frame arrives. (`media_peer.start_stream` upgrades first: that socket would hold a
    place under the cap when /voice asks.)"""
    stream = Stream(new_sid("MZ"), new_sid("CA"), new_sid("AC"))
    form = voice_form(stream.call_sid, stream.account_sid, "+15550100001", "+15550100002")
    dialled = await dial(http, base, form, flow="demo")
    ws = await http.ws_connect(base + "/media")
    stack.append(ws)
    await ws.send_str(inbound.connected_message())
    await ws.send_str(inbound.start_message(1, stream.stream_sid, stream.account_sid,
                                            stream.call_sid, dialled.parameters))
    msg = await ws.receive(timeout=15)
    assert msg.type == aiohttp.WSMsgType.TEXT and '"event":"media"' in msg.data, msg
    return stream


async def hang_up(ws: aiohttp.ClientWebSocketResponse, stream: Stream) -> None:
    await ws.send_str(inbound.stop_message(99, stream.stream_sid, stream.account_sid,
                                           stream.call_sid))
    async with asyncio.timeout(10):
        await closed_with(ws)


async def assert_media_refused(http: aiohttp.ClientSession, base: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(base + "/media")
    assert info.value.status == 503


async def test_past_the_cap_voice_is_busy_and_media_refused_until_a_call_ends(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    """IVR_MAX_CALLS=2: with two calls live the third /voice gets the busy TwiML and the
    third /media a 503 before the upgrade; once one call ends a new one is accepted."""
    http, base = peer
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    try:
        first = await live_call(http, base, sockets)
        await live_call(http, base, sockets)
        assert len(services(server).calls) == 2

        busy = await post_voice(http, base)
        assert busy.find("./Connect") is None
        assert [(el.tag, el.text) for el in busy] == [("Say", BUSY), ("Hangup", None)]
        await assert_media_refused(http, base)
        assert refused(server, "voice", "cap") == (2, 1.0)
        assert refused(server, "media", "cap") == (2, 1.0)
        assert services(server).counters["calls_started"] == 2

        await hang_up(sockets[0], first)
        await until(lambda: len(services(server).calls) == 1)
        third = await live_call(http, base, sockets)
        assert third.stream_sid in services(server).calls
        assert services(server).counters["calls_started"] == 3
    finally:
        for ws in sockets:
            await ws.close()


async def test_a_stream_opening_holds_its_place_under_the_cap(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    """Upgraded streams count before their `start`: two open sockets fill a cap of two,
    and closing one without a start gives its place back."""
    http, base = peer
    a = await http.ws_connect(base + "/media")
    b = await http.ws_connect(base + "/media")
    try:
        assert server.app[ADMISSION].live == 2
        await assert_media_refused(http, base)
        await a.close()
        await until(lambda: server.app[ADMISSION].live == 1)
        c = await http.ws_connect(base + "/media")
        await c.close()
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("settings", [{"max_loop_lag_ms": 50}], indirect=True)
async def test_a_lagging_loop_refuses_new_calls(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    """A loop-lag p99 over 50 ms refuses at both doors; back under it, calls are taken."""
    http, base = peer
    admission = server.app[ADMISSION]
    admission.lag = FixedLag(80.0)
    busy = await post_voice(http, base)
    assert busy.find("./Connect") is None and busy.find("./Say") is not None
    await assert_media_refused(http, base)
    assert refused(server, "voice", "lag") == (2, 1.0)
    assert refused(server, "media", "lag") == (2, 1.0)

    admission.lag = FixedLag(50.0)  # at the limit, not over it
    assert (await post_voice(http, base)).find("./Connect/Stream") is not None
    ws = await http.ws_connect(base + "/media")
    await ws.close()
    assert refused(server, "voice", "lag")[0] == 2


async def test_a_draining_process_refuses_new_calls(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    http, base = peer
    services(server).draining = True
    assert (await post_voice(http, base)).find("./Connect") is None
    await assert_media_refused(http, base)
    assert refused(server, "media", "draining") == (2, 1.0)
    assert refused(server, "voice", "draining") == (2, 1.0)


async def test_voice_puts_the_busy_message_after_connect(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    """Without `action` Twilio goes on to the next verb when the stream ends: a stream
    refused at /media then hears the busy message, not silence."""
    http, base = peer
    twiml = await post_voice(http, base)
    assert [el.tag for el in twiml] == ["Connect", "Say"]
    assert twiml[1].text == BUSY


async def connect_action(http: aiohttp.ClientSession, base: str, call_sid: str) -> list[str]:
    async with http.post(base + "/connect-action", data={"CallSid": call_sid}) as resp:
        assert resp.status == 200
        return [el.tag for el in ElementTree.fromstring(await resp.text())]


async def test_connect_action_speaks_the_busy_message_when_the_stream_never_started(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    """`<Connect action>` replaces the verbs after <Connect>: the action says busy for a
    call whose stream was refused (no `start`), and just hangs up a call that ran."""
    http, base = peer
    assert await connect_action(http, base, new_sid("CA")) == ["Say", "Hangup"]
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    try:
        stream = await live_call(http, base, sockets)
        await hang_up(sockets[0], stream)
    finally:
        await sockets[0].close()
    assert await connect_action(http, base, stream.call_sid) == ["Hangup"]


@pytest.mark.parametrize("settings", [{"busy": "reject"}], indirect=True)
async def test_busy_reject_mode_rejects_the_call_unanswered(
    server: TestServer, peer: tuple[aiohttp.ClientSession, str],
) -> None:
    http, base = peer
    services(server).draining = True
    twiml = await post_voice(http, base)
    assert [(el.tag, el.get("reason")) for el in twiml] == [("Reject", "busy")]
