"""Twilio's HTTP side: TwiML from /voice, status callbacks, signatures on /voice and /media."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from twilio.request_validator import RequestValidator

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
    store = await CallStore.open(tmp_path / "ivr.db")
    try:
        call = await store.get_call(FORM["CallSid"])
    finally:
        await store.close()
    assert call is not None
    assert call["call_status"] == "no-answer"
    assert call["outcome"] == "abandoned"
    assert call["from_masked"] == "+1415***0123"


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


async def test_healthz(signed_client: TestClient) -> None:
    resp = await signed_client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["ok"] is True and {"demo", "main_menu"} <= set(body["flows"])
