"""The call record: schema versioning, calls and turns, and calls that drop mid-way."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from ivr.errors import StoreError
from ivr.sim.dial import call_urls, dial, voice_form
from ivr.store.db import SCHEMA_VERSION, CallStore, TurnRecord
from ivr.telephony import inbound

SID = "MZ" + "d" * 32
CALL = "CA" + "e" * 32
ACCOUNT = "AC" + "f" * 32


async def test_schema_is_versioned_and_reopening_keeps_data(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    store = await CallStore.open(db)
    await store.start_call(CALL, stream_sid=SID, account_sid=ACCOUNT, from_masked="+1***",
                           to_masked="", flow="demo")
    turn = TurnRecord(seq=1, step="menu", prompt="hi", timings={"endpoint": 1.5})
    await store.add_turn(CALL, turn)
    await store.end_call(CALL, outcome="completed", stats={"frames_in": 3})
    await store.close()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store = await CallStore.open(db)
    call = await store.get_call(CALL)
    await store.close()
    assert call is not None
    assert call["outcome"] == "completed" and call["stats"] == {"frames_in": 3}
    assert call["turns"][0]["timings"] == {"endpoint": 1.5}


async def test_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    sqlite3.connect(db).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this ivr"):
        await CallStore.open(db)


async def test_call_dropped_mid_way_still_gets_its_record(server: TestServer) -> None:
    """A stream that closes without `stop` in the middle of a prompt lands as 'dropped'."""
    urls = call_urls(f"http://127.0.0.1:{server.port}")
    async with aiohttp.ClientSession() as http:
        dialled = await dial(http, urls.base, voice_form(CALL, ACCOUNT, "+15550100001",
                                                         "+15550100002"), flow="demo")
        ws = await http.ws_connect(urls.media)
        await ws.send_str(inbound.connected_message())
        await ws.send_str(inbound.start_message(1, SID, ACCOUNT, CALL, dialled.parameters))
        for i in range(10):
            await ws.send_str(inbound.inbound_media_message(i + 2, SID, i + 1, i * 20,
                                                             b"\xff" * 160))
        # Wait until the bot is talking, then vanish (no stop, no close handshake).
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT
        await ws.close()
        for _ in range(100):
            async with http.get(f"http://127.0.0.1:{server.port}/api/calls/{CALL}") as resp:
                call = await resp.json() if resp.status == 200 else None
            if call and call["ended_at"]:
                break
            await asyncio.sleep(0.05)
    assert call is not None
    assert call["outcome"] == "dropped"
    assert call["stats"]["end_reason"] == "dropped"
    assert call["flow"] == "demo"
