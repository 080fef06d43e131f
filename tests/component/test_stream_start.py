"""Only a `start` `/voice` vouched for starts a call: the signed stream token on the live app.

Every refused start here follows a correctly signed upgrade: the signature on the
upgrade is the same for every call, so it proves nothing about the `start` after it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator

from ivr.logging import mask_number
from ivr.server.app import create_app
from ivr.server.services import SERVICES, Services
from ivr.sim.dial import Dialled, call_urls, dial, voice_form
from ivr.telephony import inbound
from ivr.telephony.stream_token import REJECT_REASONS
from tests.conftest import make_settings

TOKEN = "12345678901234567890123456789012"
PUBLIC = "https://ivr.example.com"
ACCOUNT = "AC" + "a" * 32
CALLER, CALLED = "+14155550123", "+14155550999"


def call_sid(n: int) -> str:
    return f"CA{n:032d}"


def stream_sid(n: int) -> str:
    return f"MZ{n:032d}"


@pytest.fixture
async def signed(tmp_path: Path) -> AsyncIterator[TestServer]:
    """The real app with Twilio signatures on (auth token and public URL set)."""
    settings = make_settings(tmp_path, twilio_auth_token=TOKEN, public_url=PUBLIC,
                             recognizer_workers=1)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def services_of(server: TestServer) -> Services:
    return server.app[SERVICES]


async def voice(http: aiohttp.ClientSession, server: TestServer, sid: str, *,
                from_number: str = CALLER, flow: str | None = "demo",
                auth_token: str | None = TOKEN) -> Dialled:
    """POST /voice as Twilio does, signed; the stream and parameters it answers."""
    base = call_urls(f"http://127.0.0.1:{server.port}").base
    return await dial(http, base, voice_form(sid, ACCOUNT, from_number, CALLED), flow=flow,
                      auth_token=auth_token, public_url=PUBLIC if auth_token else None)


async def open_stream(http: aiohttp.ClientSession, server: TestServer, dialled: Dialled,
                      sid: str, stream: str, parameters: dict[str, str], *,
                      signed: bool = True) -> aiohttp.ClientWebSocketResponse:
    """A correctly signed upgrade (as Twilio signs it), then `connected` and `start`."""
    headers = {"X-Twilio-Signature": str(
        RequestValidator(TOKEN).compute_signature(dialled.stream_url, {}))} if signed else {}
    ws = await http.ws_connect(f"ws://127.0.0.1:{server.port}/media", headers=headers)
    await ws.send_str(inbound.connected_message())
    await ws.send_str(inbound.start_message(1, stream, ACCOUNT, sid, parameters))
    return ws


async def first_message(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    return await ws.receive(timeout=15)


async def assert_refused(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The server closed the socket (policy violation) before sending anything at all."""
    msg = await first_message(ws)
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
    await ws.close()


async def assert_no_call_row(services: Services, sid: str) -> None:
    assert services.store is not None
    assert await services.store.get_call(sid) is None
    assert not services.calls


def rejected(services: Services, reason: str) -> tuple[int, float | None]:
    """The rejection as /healthz counts it and as /metrics exports it."""
    metric = services.metrics.registry.get_sample_value(
        "ivr_start_rejected_total", {"reason": reason})
    return services.counters[f"start_rejected.{reason}"], metric


async def test_genuine_sequence_is_accepted(signed: TestServer) -> None:
    """/voice TwiML -> its <Stream url> (signed upgrade) -> a start with exactly its
    <Parameter>s: the call starts, the first prompt plays, the record has the flow and
    the caller /voice vouched for."""
    services = services_of(signed)
    async with aiohttp.ClientSession() as http:
        dialled = await voice(http, signed, call_sid(1))
        assert dialled.stream_url == "wss://ivr.example.com/media"
        assert set(dialled.parameters) == {"flow", "from", "to", "token"}
        ws = await open_stream(http, signed, dialled, call_sid(1), stream_sid(1),
                               dialled.parameters)
        msg = await first_message(ws)
        assert msg.type == aiohttp.WSMsgType.TEXT and '"event":"media"' in msg.data
        live = services.calls[stream_sid(1)]
        assert getattr(live, "caller") == CALLER  # noqa: B009 (LiveCall does not declare it)
        await ws.send_str(inbound.stop_message(2, stream_sid(1), ACCOUNT, call_sid(1)))
        while (await ws.receive(timeout=15)).type != aiohttp.WSMsgType.CLOSE:
            pass
    assert services.store is not None
    record = await services.store.get_call(call_sid(1))
    assert record is not None
    assert record["flow"] == "demo" and record["from_masked"] == mask_number(CALLER)
    assert services.counters["calls_started"] == 1
    assert not any(k.startswith("start_rejected") for k in services.counters)


def _drop_token(p: dict[str, str]) -> None:
    p.pop("token")


def _change_from(p: dict[str, str]) -> None:
    p["from"] = "+19995550000"


def _change_flow(p: dict[str, str]) -> None:
    p["flow"] = "main_menu"


def _garble(p: dict[str, str]) -> None:
    p["token"] = "v1.forged"


@pytest.mark.parametrize(("tamper", "reason"), [
    (_drop_token, "missing"),
    (_change_from, "bad_signature"),
    (_change_flow, "bad_signature"),
    (_garble, "malformed"),
])
async def test_tampered_start_is_refused(
    signed: TestServer, tamper: Callable[[dict[str, str]], None], reason: str,
) -> None:
    """A start whose parameters differ from what /voice signed is closed: no call row,
    no prompt frame, `start_rejected` counted with its reason."""
    services = services_of(signed)
    async with aiohttp.ClientSession() as http:
        dialled = await voice(http, signed, call_sid(2))
        params = dict(dialled.parameters)
        tamper(params)
        ws = await open_stream(http, signed, dialled, call_sid(2), stream_sid(2), params)
        await assert_refused(ws)
    await assert_no_call_row(services, call_sid(2))
    assert rejected(services, reason) == (1, 1.0)
    assert services.counters["calls_started"] == 0


async def test_expired_token_is_refused(signed: TestServer) -> None:
    """A token presented after its lifetime (the clock injected past it) is refused."""
    services = services_of(signed)
    async with aiohttp.ClientSession() as http:
        dialled = await voice(http, signed, call_sid(3))
        ttl = services.settings.stream_token_ttl_s
        services.stream_tokens.clock = lambda: time.time() + ttl + 1
        ws = await open_stream(http, signed, dialled, call_sid(3), stream_sid(3),
                               dialled.parameters)
        await assert_refused(ws)
    await assert_no_call_row(services, call_sid(3))
    assert rejected(services, "expired") == (1, 1.0)


async def test_token_of_another_call_is_refused(signed: TestServer) -> None:
    """Genuine parameters under another CallSid (the SID used for REST transfers)."""
    services = services_of(signed)
    async with aiohttp.ClientSession() as http:
        dialled = await voice(http, signed, call_sid(4))
        ws = await open_stream(http, signed, dialled, call_sid(5), stream_sid(4),
                               dialled.parameters)
        await assert_refused(ws)
    await assert_no_call_row(services, call_sid(5))
    await assert_no_call_row(services, call_sid(4))
    assert rejected(services, "call_sid_mismatch") == (1, 1.0)


async def test_replayed_token_is_refused(signed: TestServer) -> None:
    """The parameters an earlier call started with cannot start another stream."""
    services = services_of(signed)
    assert services.store is not None
    async with aiohttp.ClientSession() as http:
        dialled = await voice(http, signed, call_sid(6))
        first = await open_stream(http, signed, dialled, call_sid(6), stream_sid(6),
                                  dialled.parameters)
        assert (await first_message(first)).type == aiohttp.WSMsgType.TEXT
        await first.send_str(inbound.stop_message(2, stream_sid(6), ACCOUNT, call_sid(6)))
        while (await first.receive(timeout=15)).type != aiohttp.WSMsgType.CLOSE:
            pass
        before = await services.store.list_calls()
        again = await open_stream(http, signed, dialled, call_sid(6), stream_sid(7),
                                  dialled.parameters)
        await assert_refused(again)
    assert await services.store.list_calls() == before
    assert [c["stream_sid"] for c in before] == [stream_sid(6)]
    assert rejected(services, "replayed") == (1, 1.0)
    assert services.counters["calls_started"] == 1


async def test_without_auth_token_the_token_is_still_required(server: TestServer) -> None:
    """The attack of issue 9 on a server without TWILIO_AUTH_TOKEN: an unsigned start
    naming a victim's number and a flow is closed; the /voice sequence still works."""
    services = services_of(server)
    async with aiohttp.ClientSession() as http:
        forged = {"from": "+15550100001", "flow": "dental_booking"}
        dialled = Dialled(f"ws://127.0.0.1:{server.port}/media", {})
        ws = await open_stream(http, server, dialled, call_sid(8), stream_sid(8), forged,
                               signed=False)
        await assert_refused(ws)
        await assert_no_call_row(services, call_sid(8))
        genuine = await voice(http, server, call_sid(9), auth_token=None)
        ws = await open_stream(http, server, genuine, call_sid(9), stream_sid(9),
                               genuine.parameters, signed=False)
        assert (await first_message(ws)).type == aiohttp.WSMsgType.TEXT
        await ws.close()
    assert rejected(services, "missing") == (1, 1.0)


async def test_withheld_caller_id_is_an_anonymous_caller(signed: TestServer) -> None:
    """From "anonymous": the token carries no caller, and neither does the session."""
    services = services_of(signed)
    async with aiohttp.ClientSession() as http:
        dialled = await voice(http, signed, call_sid(10), from_number="anonymous")
        assert "from" not in dialled.parameters
        ws = await open_stream(http, signed, dialled, call_sid(10), stream_sid(10),
                               dialled.parameters)
        assert (await first_message(ws)).type == aiohttp.WSMsgType.TEXT
        assert getattr(services.calls[stream_sid(10)], "caller") == ""  # noqa: B009
        await ws.close()
    assert services.store is not None
    record: dict[str, Any] | None = await services.store.get_call(call_sid(10))
    assert record is not None and record["from_masked"] == ""


def test_every_reason_is_exported_from_the_start(tmp_path: Path) -> None:
    """The Prometheus label set is the closed set of reasons, present before any refusal."""
    services = Services(settings=make_settings(tmp_path))
    for reason in REJECT_REASONS:
        assert services.metrics.registry.get_sample_value(
            "ivr_start_rejected_total", {"reason": reason}) == 0.0


@pytest.mark.parametrize("form", [
    {"From": CALLER, "To": CALLED},  # no CallSid
    {"CallSid": "CA../etc", "From": CALLER, "To": CALLED},
    {"CallSid": call_sid(11), "From": CALLER, "To": "sip:" + "x" * 500 + "@example.com"},
])
async def test_voice_refuses_what_no_token_could_carry(server: TestServer,
                                                       form: dict[str, str]) -> None:
    """A /voice post whose call could never start (no usable CallSid, or a value Twilio
    would drop from its <Parameter>s) is a 400 at once, not a start refused later."""
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{server.port}/voice", data=form) as resp:
        assert resp.status == 400
