"""/api: bearer token rules, call list and detail, stats, bookings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ivr.analytics.report import build_report
from ivr.server.app import create_app
from ivr.store.db import CallStore, TurnRecord
from ivr.tools.seed import seed
from tests.conftest import make_settings


async def _seeded(tmp_path: Path) -> Path:
    db = tmp_path / "ivr.db"
    await seed(db)
    store = await CallStore.open(db)
    for i, outcome in enumerate(["completed", "abandoned", "completed"]):
        sid = f"CA{i:032d}"
        await store.start_call(sid, stream_sid=f"MZ{i:032d}", account_sid=None,
                               from_masked="+1555***0001", to_masked="", flow="demo")
        await store.add_turn(sid, TurnRecord(seq=1, step="menu", prompt="Say sales.",
                                       input_kind="speech", result="match",
                                       timings={"speech_start": 100.0, "endpoint": 900.0,
                                                "recognized": 950.0,
                                                "reply_first_frame": 1000.0,
                                                "response_ms": 100.0 + i}))
        await store.end_call(sid, outcome=outcome,
                             stats={"cost": {"telephony": 0.0125, "total": 0.0125},
                                    "last_step": "menu", "duration_ms": 10000})
    await store.close()
    return db


async def _client(tmp_path: Path, **settings: object) -> TestClient:  # type: ignore[type-arg]
    await _seeded(tmp_path)
    client = TestClient(TestServer(create_app(make_settings(tmp_path, recognizer_workers=1,
                                                            **settings)), host="127.0.0.1"))
    await client.start_server()
    return client


async def test_token_is_required_when_set(tmp_path: Path) -> None:
    client = await _client(tmp_path, api_token="t0ken")
    try:
        assert (await client.get("/api/calls")).status == 401
        bad = await client.get("/api/calls", headers={"Authorization": "Bearer nope"})
        assert bad.status == 401
        ok = await client.get("/api/calls", headers={"Authorization": "Bearer t0ken"})
        assert ok.status == 200
    finally:
        await client.close()


async def test_no_token_on_a_public_bind_refuses_the_api(tmp_path: Path) -> None:
    client = await _client(tmp_path, host="0.0.0.0")
    try:
        assert (await client.get("/api/stats")).status == 403
    finally:
        await client.close()


async def test_calls_detail_stats_and_bookings(tmp_path: Path) -> None:
    client = await _client(tmp_path)  # loopback without a token: open (with a warning)
    try:
        listing = await (await client.get("/api/calls?limit=2&outcome=completed")).json()
        assert len(listing["calls"]) == 2
        assert {c["outcome"] for c in listing["calls"]} == {"completed"}
        assert listing["calls"][0]["cost"] == 0.0125
        sid = listing["calls"][0]["call_sid"]
        detail = await (await client.get(f"/api/calls/{sid}")).json()
        assert detail["turns"][0]["prompt"] == "Say sales."
        assert detail["waterfall"][0]["points"]["endpoint"] == 900.0
        assert detail["costs"]["total"] == 0.0125
        assert (await client.get("/api/calls/CAnope")).status == 404
        stats = await (await client.get("/api/stats")).json()
        assert stats == await build_report(tmp_path / "ivr.db")
        # Figures computed here from what was seeded: 3 calls, 2 completed, 1 abandoned
        # at "menu", $0.0125 each, voice-to-voice 100/101/102 ms (nearest-rank p50: 101).
        assert stats["calls"] == 3
        assert (stats["outcomes"]["completed"], stats["outcomes"]["abandoned"]) == (2, 1)
        assert stats["containment"]["rate"] == pytest.approx(2 / 3, abs=1e-3)
        assert stats["cost"]["total"] == pytest.approx(3 * 0.0125)
        assert stats["latency_ms"]["response_ms"]["p50"] == 101
        assert stats["drop_off"] == [{"step": "menu", "count": 1}]
        assert (await client.get("/api/calls?limit=x")).status == 400
        booked = await (await client.get("/api/bookings?status=booked")).json()
        assert booked["bookings"] and {b["status"] for b in booked["bookings"]} == {"booked"}
    finally:
        await client.close()


async def test_ivr_report_json_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ivr report --db F --json` prints the same figures as /api/stats."""
    import json

    from ivr.cli.main import main

    db = await _seeded(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        await asyncio.to_thread(main, ["report", "--db", str(db), "--json"])
    assert exit_.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["calls"] == 3 and report["outcomes"]["completed"] == 2
    assert report["cost"]["total"] == pytest.approx(3 * 0.0125)
