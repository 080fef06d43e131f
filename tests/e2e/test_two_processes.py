"""Two `ivr serve` processes on two ports sharing one PostgreSQL store (and one stream
secret): a call `/voice` answered on A streams on B and its record lands in the store; its
token, spent on B, is refused on A; a transfer parked by a call on A is dialed by B's
`/connect-action`, once. Skipped without `IVR_TEST_DATABASE_URL` (see conftest)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from ivr.bench.server import ServerProcess
from ivr.sim.dial import call_urls, dial, voice_form
from ivr.store.db import CallStore
from ivr.telephony import inbound
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

CALL = "CA" + "a" * 32
OTHER = "CA" + "b" * 32
SID = "MZ" + "c" * 32
ACCOUNT = "AC" + "d" * 32
CALLER = "+15550100001"


async def test_two_servers_on_one_postgresql_share_calls_tokens_and_transfers(
    pg_url: str, tmp_path: Path,
) -> None:
    env = {"IVR_DB": pg_url, "IVR_STREAM_SECRET": "s" * 40, "IVR_FLOWS": str(ROOT / "flows"),
           "IVR_RECOGNIZER_WORKERS": "1", "IVR_MAX_LOOP_LAG_MS": "0"}
    servers = [ServerProcess(tmp_path / "unused.db",
                             env | {"IVR_CACHE_DIR": str(tmp_path / name / "cache")},
                             log=tmp_path / f"{name}.log")
               for name in ("a", "b")]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a, b = servers
    store = await CallStore.open(pg_url)
    async with aiohttp.ClientSession() as http:
        try:
            await asyncio.gather(a.start(http, max_wait=60), b.start(http, max_wait=60))
            dialled = await dial(http, a.base, voice_form(CALL, ACCOUNT, CALLER, "+15550100002"),
                                 flow="demo")
            start = inbound.start_message(1, SID, ACCOUNT, CALL, dialled.parameters)
            async with http.ws_connect(call_urls(b.base).media) as ws:
                await ws.send_str(inbound.connected_message())
                await ws.send_str(start)
                msg = await ws.receive(timeout=20)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                assert json.loads(msg.data)["event"] == "media"  # B greets the caller
            # The same start replayed at A: refused, the token was spent on B.
            async with http.ws_connect(call_urls(a.base).media) as ws:
                await ws.send_str(inbound.connected_message())
                await ws.send_str(start)
                msg = await ws.receive(timeout=20)
                assert msg.type == aiohttp.WSMsgType.CLOSE, msg
                assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
            for _ in range(400):  # B writes the call's end once the socket has gone
                call = await store.get_call(CALL)
                if call is not None and call["outcome"] is not None:
                    break
                await asyncio.sleep(0.05)
            assert call is not None and call["flow"] == "demo"
            assert call["outcome"] == "dropped" and call["stream_sid"] == SID

            # A transfer a call on A chose (parked in the store) is dialed by B, once.
            await store.park_transfer(OTHER, "+15550100000")
            form = {"CallSid": OTHER, "AccountSid": ACCOUNT}
            async with http.post(b.base + "/connect-action", data=form) as resp:
                assert "<Dial>+15550100000</Dial>" in await resp.text()
            async with http.post(a.base + "/connect-action", data=form) as resp:
                assert "<Dial>" not in await resp.text()
        finally:
            await store.close()
            codes = await asyncio.gather(a.stop(), b.stop())
    assert codes == [0, 0]
