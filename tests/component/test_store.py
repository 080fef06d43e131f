"""The call record on both back ends (SQLite, PostgreSQL): schema versioning, calls and
turns, what other processes must see (parked transfers, used stream-token marks), and calls
that drop mid-way."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from ivr.errors import StoreError
from ivr.sim.dial import call_urls, dial, voice_form
from ivr.store.backend import connect
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


async def test_both_back_ends_keep_calls_and_turns(db_target: Path | str) -> None:
    store = await CallStore.open(db_target)
    try:
        for _ in range(2):  # a second start (a retried write) changes nothing
            await store.start_call(CALL, stream_sid=SID, account_sid=ACCOUNT,
                                   from_masked="+1***", to_masked="", flow="demo")
        await store.add_turn(CALL, TurnRecord(seq=1, step="menu", prompt="hi", confidence=1,
                                              timings={"endpoint": 1.5}))
        await store.add_turn(CALL, TurnRecord(seq=1, step="menu", prompt="again"))  # replaced
        await store.call_status(CALL, status="completed", duration_s=7)
        await store.end_call(CALL, outcome="completed", stats={"frames_in": 3})
        call = await store.get_call(CALL)
        assert call is not None
        assert (call["outcome"], call["duration_s"], call["stats"]) == (
            "completed", 7.0, {"frames_in": 3})
        assert [(t["seq"], t["prompt"]) for t in call["turns"]] == [(1, "again")]
        assert [c["call_sid"] for c in await store.list_calls()] == [CALL]
    finally:
        await store.close()
    store = await CallStore.open(db_target)  # reopening migrates nothing, keeps the data
    try:
        assert await store.db.schema_version() == SCHEMA_VERSION
        assert (await store.get_call(CALL) or {}).get("outcome") == "completed"
    finally:
        await store.close()


async def test_a_nul_in_a_caller_controlled_value_does_not_lose_the_row(
    db_target: Path | str,
) -> None:
    """PostgreSQL text holds no NUL (SQLite's does): the row is still written."""
    store = await CallStore.open(db_target)
    try:
        await store.start_call(CALL, stream_sid="MZ\x00x", account_sid=None, from_masked="",
                               to_masked="", flow="demo")
        call = await store.get_call(CALL)
        assert call is not None and call["stream_sid"].startswith("MZ")
    finally:
        await store.close()


async def test_a_transfer_parked_by_one_process_is_taken_once_by_another(
    db_target: Path | str,
) -> None:
    a, b = await CallStore.open(db_target), await CallStore.open(db_target)
    try:
        await a.park_transfer(CALL, "+15550100000")
        assert await b.take_transfer("CA" + "0" * 32) is None
        taken = await asyncio.gather(*(b.take_transfer(CALL) for _ in range(5)),
                                     a.take_transfer(CALL))
        assert sorted(taken, key=str) == ["+15550100000"] + [None] * 5
    finally:
        await a.close()
        await b.close()


async def test_a_stream_token_is_used_once_across_processes(db_target: Path | str) -> None:
    a, b = await CallStore.open(db_target), await CallStore.open(db_target)
    try:
        far = 4_000_000_000.0
        results = await asyncio.gather(*(s.use_token("n" * 32, far) for s in (a, b, a, b)))
        assert sorted(results) == [False, False, False, True]
        assert await b.use_token("m" * 32, far)
        # An expired mark is purged (its token is refused as expired anyway).
        b._tokens_purged = 0.0
        assert await b.use_token("o" * 32, 1.0)
        b._tokens_purged = 0.0
        assert await b.use_token("p" * 32, far)
        left = await b.db.fetch("SELECT nonce FROM used_stream_tokens ORDER BY nonce")
        assert [r["nonce"][0] for r in left] == ["m", "n", "p"]
    finally:
        await a.close()
        await b.close()


async def test_newer_schema_is_refused_with_a_clear_error(db_target: Path | str) -> None:
    if isinstance(db_target, str):
        store = await CallStore.open(db_target)
        await store.db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
        await store.close()
    else:
        sqlite3.connect(db_target).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this ivr"):
        await CallStore.open(db_target)


async def test_an_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot reach the database") as caught:
        await connect("postgresql://nobody:secret@127.0.0.1:1/none")
    assert "secret" not in str(caught.value)  # the password stays out of messages


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


async def test_a_transient_store_error_is_retried_like_a_locked_file(tmp_path: Path) -> None:
    """A lost connection, a serialization failure or a deadlock (StoreError from either
    back end) is retried by the write queue, not dropped."""
    from ivr.store.queue import Write, WriteQueue

    failures = [StoreError("ConnectionDoesNotExistError: connection was closed"),
                StoreError("SerializationError: could not serialize access")]
    applied: list[Write] = []

    async def apply(write: Write) -> None:
        if failures:
            raise failures.pop(0)
        applied.append(write)

    queue = WriteQueue(apply, tmp_path / "spill.jsonl", backoff_s=0.001)
    write = Write("end", CALL, {"outcome": "completed"})
    assert await queue.put(write) is True
    await queue.close()
    assert applied == [write] and queue.stats["retried"] == 2
    assert not (tmp_path / "spill.jsonl").exists()


def test_processes_opening_a_new_sqlite_file_together_migrate_it_once(tmp_path: Path) -> None:
    """Four processes' worth of event loops open one new file at the same moment: the
    first migrates each step, the others wait for its lock and find the step done; all
    open, and the schema is whole."""
    db = tmp_path / "new.db"
    gate = threading.Barrier(4)
    errors: list[BaseException] = []

    def process() -> None:
        async def run() -> None:
            gate.wait()
            store = await CallStore.open(db)
            await store.close()

        try:
            asyncio.run(run())
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=process) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
