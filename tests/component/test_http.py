"""Twilio's HTTP side: TwiML from /voice, status callbacks, signatures on /voice and /media
(over the raw path, and the URL forwarded headers name only with IVR_TRUST_PROXY)."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from twilio.request_validator import RequestValidator
from yarl import URL

from ivr.server.app import create_app
from ivr.store.db import CallStore
from tests.conftest import make_settings

TOKEN = "12345678901234567890123456789012"
PUBLIC = "https://ivr.example.com"
FORM = {"CallSid": "CA" + "1" * 32, "AccountSid": "AC" + "2" * 32,
        "From": "+14155550123", "To": "+14155550999", "CallStatus": "ringing"}


@pytest.fixture
async def signed_client(tmp_path: Path) -> TestClient:
    settings = make_settings(tmp_path, twilio_auth_token=TOKEN, public_url=PUBLIC,
                             recognizer_workers=1)
    client = TestClient(TestServer(create_app(settings), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


def sign(url: str, params: dict[str, str]) -> str:
    return str(RequestValidator(TOKEN).compute_signature(url, params))


async def test_voice_returns_connect_stream_twiml(signed_client: TestClient) -> None:
    """A signed /voice gets <Connect><Stream url=wss://PUBLIC/media> with flow, from, to."""
    resp = await signed_client.post("/voice", data=FORM,
                                    headers={"X-Twilio-Signature": sign(PUBLIC + "/voice", FORM)})
    assert resp.status == 200
    assert resp.content_type == "text/xml"
    root = ElementTree.fromstring(await resp.text())
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://ivr.example.com/media"
    assert stream.get("statusCallback") == PUBLIC + "/status"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    # No ?flow=: the flow is left to routing by the called number. The token vouches
    # for the call's identity: the start must bring it back.
    assert params.pop("token", "").startswith("v1." + FORM["CallSid"] + ".")
    assert params == {"from": FORM["From"], "to": FORM["To"]}
    connect = root.find("./Connect")
    assert connect is not None and connect.get("action") == PUBLIC + "/connect-action"


async def test_voice_flow_query_selects_the_flow(signed_client: TestClient) -> None:
    """?flow=NAME on the webhook URL (signed with its query) picks the flow parameter."""
    url = PUBLIC + "/voice?flow=other"
    resp = await signed_client.post("/voice?flow=other", data=FORM,
                                    headers={"X-Twilio-Signature": sign(url, FORM)})
    assert resp.status == 200
    assert 'name="flow" value="other"' in await resp.text()


@pytest.mark.parametrize("signature", [None, "", "bm90IGEgc2lnbmF0dXJl"])
async def test_voice_rejects_missing_or_wrong_signature(
    signed_client: TestClient, signature: str | None
) -> None:
    """Without a valid X-Twilio-Signature /voice answers 403."""
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    resp = await signed_client.post("/voice", data=FORM, headers=headers)
    assert resp.status == 403


async def test_voice_rejects_signature_over_other_params(signed_client: TestClient) -> None:
    """A signature computed for different POST params is rejected (tampering)."""
    sig = sign(PUBLIC + "/voice", {**FORM, "From": "+10000000000"})
    resp = await signed_client.post("/voice", data=FORM, headers={"X-Twilio-Signature": sig})
    assert resp.status == 403


async def test_media_upgrade_checks_signature(signed_client: TestClient) -> None:
    """The WebSocket upgrade is signed over the wss:// URL with empty params."""
    good = sign("wss://ivr.example.com/media", {})
    ws = await signed_client.ws_connect("/media", headers={"X-Twilio-Signature": good})
    await ws.close()
    for bad in ({}, {"X-Twilio-Signature": sign("wss://other.example.com/media", {})}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await signed_client.ws_connect("/media", headers=bad)
        assert info.value.status == 403


async def test_status_callback_records_a_call_that_never_streamed(
    signed_client: TestClient, tmp_path: Path
) -> None:
    """A call status callback for an unknown call creates its record, numbers masked."""
    form = {**FORM, "CallStatus": "no-answer", "CallDuration": "0"}
    resp = await signed_client.post("/status", data=form,
                                    headers={"X-Twilio-Signature": sign(PUBLIC + "/status", form)})
    assert resp.status == 204
    from ivr.server.services import SERVICES

    store = await CallStore.open(signed_client.server.app[SERVICES].settings.db)
    try:
        call = await store.get_call(FORM["CallSid"])
    finally:
        await store.close()
    assert call is not None
    assert call["call_status"] == "no-answer"
    assert call["outcome"] == "abandoned"
    assert call["from_masked"] == "+*********23"  # the last 2 digits only


async def test_status_callback_without_call_sid_is_400(signed_client: TestClient) -> None:
    form = {"CallStatus": "completed"}
    resp = await signed_client.post("/status", data=form,
                                    headers={"X-Twilio-Signature": sign(PUBLIC + "/status", form)})
    assert resp.status == 400


async def test_connect_action_dials_a_parked_transfer(signed_client: TestClient) -> None:
    """After a flow transfers (no REST credentials), <Connect action> answers <Dial>."""
    from ivr.server.services import SERVICES

    signed_client.server.app[SERVICES].transfers[FORM["CallSid"]] = "+15550100000"
    form = {"CallSid": FORM["CallSid"], "AccountSid": FORM["AccountSid"]}
    headers = {"X-Twilio-Signature": sign(PUBLIC + "/connect-action", form)}
    resp = await signed_client.post("/connect-action", data=form, headers=headers)
    assert resp.status == 200
    assert "<Dial>+15550100000</Dial>" in await resp.text()
    resp = await signed_client.post("/connect-action", data=form, headers=headers)
    assert "<Hangup />" in await resp.text()


async def test_connect_action_of_another_process_dials_the_parked_transfer(
    tmp_path: Path, db_target: Path | str,
) -> None:
    """Two servers on one database: the transfer a call on A chose is dialed by B's
    /connect-action (Twilio's request may reach any process), once."""
    from ivr.server.services import SERVICES

    clients = []
    for name in ("a", "b"):
        settings = make_settings(tmp_path / name, db=db_target, twilio_auth_token=TOKEN,
                                 public_url=PUBLIC, recognizer_workers=1)
        clients.append(TestClient(TestServer(create_app(settings), host="127.0.0.1")))
    a, b = clients
    for client in clients:
        await client.start_server()
    try:
        await a.server.app[SERVICES].park_transfer(FORM["CallSid"], "+15550100000")
        assert a.server.app[SERVICES].transfers == {}  # in the store, not in A's memory
        form = {"CallSid": FORM["CallSid"], "AccountSid": FORM["AccountSid"]}
        headers = {"X-Twilio-Signature": sign(PUBLIC + "/connect-action", form)}
        resp = await b.post("/connect-action", data=form, headers=headers)
        assert "<Dial>+15550100000</Dial>" in await resp.text()
        resp = await a.post("/connect-action", data=form, headers=headers)
        assert "<Hangup />" in await resp.text()
    finally:
        for client in clients:
            await client.close()


async def test_healthz(signed_client: TestClient) -> None:
    resp = await signed_client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["ok"] is True and {"demo", "main_menu"} <= set(body["flows"])


async def test_healthz_tells_a_stranger_only_up_or_down(signed_client: TestClient) -> None:
    """A client naming another host sees {"ok": true}; no engines, counters or flows."""
    resp = await signed_client.get("/healthz", headers={"Host": "evil.example"})
    assert resp.status == 200
    assert await resp.json() == {"ok": True}


async def test_unknown_stream_events_count_as_one_other_key(signed_client: TestClient) -> None:
    """Counter keys never come from input: only Twilio's documented events get their own."""
    from ivr.server.services import SERVICES

    for event in ("stream-started", "evil-1", "evil-2", "x" * 300):
        form = {"CallSid": FORM["CallSid"], "StreamEvent": event}
        resp = await signed_client.post(
            "/status", data=form, headers={"X-Twilio-Signature": sign(PUBLIC + "/status", form)})
        assert resp.status == 204
    counters = signed_client.server.app[SERVICES].counters
    keys = {k for k in counters if k.startswith("stream_event_")}
    assert keys == {"stream_event_stream-started", "stream_event_other"}
    assert counters["stream_event_other"] == 3


async def test_signatures_cover_the_raw_path_and_query(signed_client: TestClient) -> None:
    """Twilio signs the URL as it sent it: `%64emo` is not re-encoded as `demo`."""
    raw = "/voice?flow=%64emo"
    url = URL(f"http://127.0.0.1:{signed_client.port}{raw}", encoded=True)
    for signed_over, status in ((PUBLIC + raw, 200), (PUBLIC + "/voice?flow=demo", 403)):
        resp = await signed_client.session.post(
            url, data=FORM, headers={"X-Twilio-Signature": sign(signed_over, FORM)})
        assert resp.status == status, signed_over
    good = sign("wss://ivr.example.com/media?x=%41", {})
    ws = await signed_client.session.ws_connect(
        URL(f"http://127.0.0.1:{signed_client.port}/media?x=%41", encoded=True),
        headers={"X-Twilio-Signature": good})
    await ws.close()


FORGED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "forged.example"}


async def _unpinned(tmp_path: Path, **settings: object) -> TestClient:
    """A signed server with no IVR_PUBLIC_URL: the URL comes from the request."""
    client = TestClient(TestServer(create_app(make_settings(
        tmp_path, twilio_auth_token=TOKEN, recognizer_workers=1, **settings)), host="127.0.0.1"))
    await client.start_server()
    return client


async def test_forwarded_headers_change_nothing_without_trust_proxy(tmp_path: Path) -> None:
    """Signed for the real URL passes, even with forged forwarded headers; signed for
    the URL the forged headers name fails."""
    client = await _unpinned(tmp_path)
    real = f"http://127.0.0.1:{client.port}/voice"
    try:
        for headers, signed_over, status in (
            ({}, real, 200), (FORGED, real, 200), (FORGED, "https://forged.example/voice", 403),
        ):
            resp = await client.post("/voice", data=FORM, headers={
                **headers, "X-Twilio-Signature": sign(signed_over, FORM)})
            assert resp.status == status, (headers, signed_over)
            if status == 200:
                assert f'url="ws://127.0.0.1:{client.port}/media"' in await resp.text()
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await client.ws_connect("/media", headers={
                **FORGED, "X-Twilio-Signature": sign("wss://forged.example/media", {})})
    finally:
        await client.close()


async def test_with_trust_proxy_the_forwarded_url_is_used(tmp_path: Path) -> None:
    client = await _unpinned(tmp_path, trust_proxy=True)
    try:
        resp = await client.post("/voice", data=FORM, headers={
            **FORGED, "X-Twilio-Signature": sign("https://forged.example/voice", FORM)})
        assert resp.status == 200
        assert 'url="wss://forged.example/media"' in await resp.text()
        real = f"http://127.0.0.1:{client.port}/voice"
        resp = await client.post("/voice", data=FORM, headers={
            **FORGED, "X-Twilio-Signature": sign(real, FORM)})
        assert resp.status == 403
        ws = await client.ws_connect("/media", headers={
            **FORGED, "X-Twilio-Signature": sign("wss://forged.example/media", {})})
        await ws.close()
    finally:
        await client.close()


async def test_with_a_public_url_forwarded_headers_are_ignored(tmp_path: Path) -> None:
    client = await _unpinned(tmp_path, trust_proxy=True, public_url=PUBLIC)
    try:
        for signed_over, status in ((PUBLIC + "/voice", 200),
                                    ("https://forged.example/voice", 403)):
            resp = await client.post("/voice", data=FORM, headers={
                **FORGED, "X-Twilio-Signature": sign(signed_over, FORM)})
            assert resp.status == status, signed_over
    finally:
        await client.close()
