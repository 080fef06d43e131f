"""Personal data in the store: turns masked on write (IVR_REDACT_DIGITS=1), transcripts
purged by age (IVR_RETENTION_DAYS, `ivr db purge`) while the call rows and costs stay."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from aiohttp.test_utils import TestServer

from ivr.cli.main import main as ivr_main
from ivr.server import app as app_module
from ivr.server.app import create_app
from ivr.server.services import SERVICES
from ivr.store.db import CallStore, TurnRecord
from tests.conftest import db_query, make_settings

COST = {"total": 0.0123, "stt": 0.01}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The `ivr` command configures logging for the process; undo it after."""
    saved = structlog.get_config()
    saved = {**saved, "processors": list(saved["processors"])}
    yield
    structlog.configure(**saved)


def sid(n: int) -> str:
    return f"CA{n:032x}"


async def add_call(store: CallStore, call_sid: str, *, started: datetime, turns: int = 2) -> None:
    await store.start_call(call_sid, stream_sid=None, account_sid=None, from_masked="+****01",
                           to_masked="", flow="order_status",
                           started_at=started.isoformat(timespec="milliseconds"))
    for seq in range(1, turns + 1):
        await store.add_turn(call_sid, TurnRecord(seq=seq, step="ask_order", prompt="Order?",
                                                  input_kind="dtmf", input_text="4567"))
    await store.end_call(call_sid, outcome="completed", stats={"cost": COST})


def turn_count(db: Path | str, call_sid: str) -> int:
    [(count,)] = db_query(db, "SELECT COUNT(*) FROM turns WHERE call_sid = ?", (call_sid,))
    return int(count)


def on_disk(db: Path) -> bytes:
    """Every byte of the database: its file, and its WAL when one is left."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.glob(db.name + "*")))


def age(db: Path | str, call_sid: str, days: float) -> None:
    """Move a call's start back in time, in the database itself (no waiting)."""
    started = datetime.now(UTC) - timedelta(days=days)
    db_query(db, "UPDATE calls SET started_at = ? WHERE call_sid = ?",
             (started.isoformat(timespec="milliseconds"), call_sid))


async def test_redacting_store_masks_digit_runs_in_every_text_of_a_turn(tmp_path: Path) -> None:
    """A keyed or spoken order number, and the prompt reading it back, are stored masked."""
    store = await CallStore.open(tmp_path / "x.db", redact_digits=True)
    try:
        await store.start_call(sid(1), stream_sid=None, account_sid=None, from_masked="",
                               to_masked="", flow="order_status")
        await store.add_turn(sid(1), TurnRecord(
            seq=1, step="ask_order", prompt="Say or key in your four digit order number.",
            input_kind="dtmf", input_text="4567", understood="4567", slot="order",
            slot_value="4567", result="match"))
        await store.add_turn(sid(1), TurnRecord(
            seq=2, step="ask_order", prompt="I couldn't find order four five six seven.",
            input_kind="speech", input_text="four five six seven", understood="4567",
            slot="order", slot_value="4567", result="match"))
        call = await store.get_call(sid(1))
    finally:
        await store.close()
    assert call is not None
    keyed, spoken = call["turns"]
    assert (keyed["input_text"], keyed["understood"], keyed["slot_value"]) == ("****",) * 3
    assert keyed["prompt"] == "Say or key in your four digit order number."
    assert (spoken["input_text"], spoken["understood"]) == ("****", "****")
    assert spoken["prompt"] == "I couldn't find order ****."
    raw = on_disk(tmp_path / "x.db")
    assert b"4567" not in raw and b"four five six seven" not in raw


async def test_store_without_redaction_keeps_the_text(tmp_path: Path) -> None:
    store = await CallStore.open(tmp_path / "x.db")
    try:
        await add_call(store, sid(1), started=datetime.now(UTC), turns=1)
        call = await store.get_call(sid(1))
    finally:
        await store.close()
    assert call is not None and call["turns"][0]["input_text"] == "4567"


async def test_purge_turns_deletes_old_transcripts_and_keeps_calls_and_costs(
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    store = await CallStore.open(tmp_path / "x.db")
    try:
        await add_call(store, sid(1), started=now - timedelta(days=3))
        await add_call(store, sid(2), started=now - timedelta(hours=2))
        purged = await store.purge_turns(before=now - timedelta(days=1))
        old, recent = await store.get_call(sid(1)), await store.get_call(sid(2))
    finally:
        await store.close()
    assert purged == 2
    assert old is not None and old["turns"] == []
    assert old["outcome"] == "completed" and old["stats"]["cost"] == COST
    assert old["flow"] == "order_status" and old["from_masked"] == "+****01"
    assert recent is not None and len(recent["turns"]) == 2
    raw = on_disk(tmp_path / "x.db")
    assert raw.count(b"4567") == 2  # the purged rows are overwritten, not just unlinked


async def test_server_with_retention_purges_at_start_and_then_periodically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """IVR_RETENTION_DAYS=1: turns of calls older than a day are gone once the server has
    started, and again each interval after; the call rows and their costs stay."""
    settings = make_settings(tmp_path, recognizer_workers=1, retention_days=1)
    store = await CallStore.open(settings.db)
    try:
        await add_call(store, sid(1), started=datetime.now(UTC))
        await add_call(store, sid(2), started=datetime.now(UTC))
    finally:
        await store.close()
    age(settings.db, sid(1), days=1.5)
    monkeypatch.setattr(app_module, "RETENTION_INTERVAL_S", 0.05)
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        assert turn_count(settings.db, sid(1)) == 0  # purged before the first call
        assert turn_count(settings.db, sid(2)) == 2  # an hour old: kept
        live = app[SERVICES].store
        assert live is not None
        purged_some = asyncio.Event()
        purge = live.purge_turns

        async def watched(*, before: datetime) -> int:
            n = await purge(before=before)
            if n:
                purged_some.set()
            return n

        monkeypatch.setattr(live, "purge_turns", watched)
        age(settings.db, sid(2), days=2)
        async with asyncio.timeout(10):
            await purged_some.wait()
        calls = [await live.get_call(sid(n)) for n in (1, 2)]
    finally:
        await server.close()
    for call in calls:
        assert call is not None and call["turns"] == []
        assert call["outcome"] == "completed" and call["stats"]["cost"] == COST


async def test_server_without_retention_keeps_transcripts(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, recognizer_workers=1)
    store = await CallStore.open(settings.db)
    try:
        await add_call(store, sid(1), started=datetime.now(UTC) - timedelta(days=400))
    finally:
        await store.close()
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    await server.close()
    assert turn_count(settings.db, sid(1)) == 2


@pytest.mark.usefixtures("restore_logging")
def test_db_purge_command_deletes_turns_before_the_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """`ivr db purge --before DATE` by hand: older transcripts go, call rows stay."""
    db = tmp_path / "ivr.db"

    async def populate() -> None:
        store = await CallStore.open(db)
        try:
            await add_call(store, sid(1), started=datetime(2026, 1, 10, 23, 59, tzinfo=UTC))
            await add_call(store, sid(2), started=datetime(2026, 1, 11, 0, 0, tzinfo=UTC))
        finally:
            await store.close()

    asyncio.run(populate())
    with pytest.raises(SystemExit) as done:
        ivr_main(["db", "purge", "--before", "2026-01-11", "--db", str(db)])
    assert done.value.code == 0
    assert "purged 2 turn(s)" in capsys.readouterr().out
    assert (turn_count(db, sid(1)), turn_count(db, sid(2))) == (0, 2)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 2


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("before", ["last tuesday", "2026-13-01"])
def test_db_purge_command_refuses_a_date_it_cannot_read(
    tmp_path: Path, before: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        ivr_main(["db", "purge", "--before", before, "--db", str(tmp_path / "ivr.db")])
    assert "expected an ISO date" in str(done.value.code)
