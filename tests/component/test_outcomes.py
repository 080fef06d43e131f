"""Outcomes that tell the truth, and a database that never blocks a call.

A process that dies leaves its calls `interrupted` (never those of a live process); a
terminal status callback fills a missing outcome; a conductor that raises ends its call
`failed` with an apology; writes the database refuses are retried, spilled, and
replayed by `ivr db recover`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from ivr.cli.main import main as ivr_main
from ivr.dialog.driver import Dialog
from ivr.flows import engine
from ivr.server.app import create_app
from ivr.server.services import SERVICES
from ivr.session.speaker import Speaker
from ivr.sim.run import free_port
from ivr.store.db import CallStore, TurnRecord
from ivr.store.queue import Write, WriteQueue, read_spill, spill_path
from ivr.telephony import inbound
from tests.component.test_serve import _env
from tests.conftest import make_settings
from tests.media_peer import FRAME, Stream, media, start_stream

LOCKED = sqlite3.OperationalError("database is locked")


def sid(n: int) -> str:
    return f"CA{n:032d}"


async def until(check: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """Wait until `check()` holds (polled every 20 ms), or fail after `within_s`."""
    for _ in range(int(within_s / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within_s} s: {check.__name__}")


async def first_media(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read until the server sends audio: the call is live and greeting."""
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if '"event":"media"' in msg.data.replace(" ", ""):
                return


async def recover(db: Path) -> int:
    """`ivr db recover --db DB` (in a thread: the command runs its own event loop)."""
    def run() -> int:
        with pytest.raises(SystemExit) as exit_:
            ivr_main(["db", "recover", "--db", str(db)])
        return int(exit_.value.code or 0)

    return await asyncio.to_thread(run)


# ------------------------------------------------------------------ the store


async def test_stale_calls_close_as_interrupted_and_live_ones_stay(tmp_path: Path) -> None:
    """Start-up closes rows whose heartbeat is stale, at that heartbeat; a row another
    live process stamped recently keeps going."""
    dead = await CallStore.open(tmp_path / "x.db", instance_id="dead")
    await dead.open_call(sid(1), stream_sid="MZ1", account_sid=None, from_masked="",
                         to_masked="", flow="demo")
    await dead.close()
    alive = await CallStore.open(tmp_path / "x.db", instance_id="alive")
    await alive.open_call(sid(2), stream_sid="MZ2", account_sid=None, from_masked="",
                          to_masked="", flow="demo")
    # The dead process's last stamp was long ago (its row was written, then nothing).
    db = sqlite3.connect(tmp_path / "x.db")
    long_ago = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="milliseconds")
    with db:
        db.execute("UPDATE calls SET heartbeat_at = ? WHERE call_sid = ?", (long_ago, sid(1)))
    assert await alive.heartbeat() == 1
    closed = await alive.close_stale(older_than=datetime.now(UTC) - timedelta(seconds=60))
    assert closed == 1
    rows = dict(db.execute("SELECT call_sid, outcome FROM calls").fetchall())
    assert rows == {sid(1): "interrupted", sid(2): None}
    assert db.execute("SELECT ended_at, instance_id FROM calls WHERE call_sid = ?",
                      (sid(1),)).fetchone() == (long_ago, "dead")
    await alive.close()


async def test_a_running_server_closes_the_calls_of_a_sibling_that_died(tmp_path: Path) -> None:
    """Not only at start-up: a process killed after this one started (`ivr serve
    --processes N`) leaves calls that a live process closes once they are stale."""
    settings = make_settings(tmp_path, recognizer_workers=1, heartbeat_ms=50,
                             stale_after_ms=200)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        dead = await CallStore.open(settings.db, instance_id="dead")
        await dead.open_call(sid(7), stream_sid="MZ7", account_sid=None, from_masked="",
                             to_masked="", flow="demo")
        await dead.close()  # no more heartbeats: the process is gone
        store = server.app[SERVICES].store
        assert store is not None

        async def interrupted() -> bool:
            assert store is not None
            return ((await store.get_call(sid(7))) or {}).get("outcome") == "interrupted"

        await until(interrupted)
    finally:
        await server.close()


async def test_a_terminal_status_fills_a_missing_outcome_only(tmp_path: Path) -> None:
    store = await CallStore.open(tmp_path / "x.db")
    for n in (1, 2):
        await store.open_call(sid(n), stream_sid=f"MZ{n}", account_sid=None, from_masked="",
                              to_masked="", flow="demo")
    await store.end_call(sid(2), outcome="completed")
    await store.call_status(sid(1), status="in-progress", duration_s=None)
    assert (await store.get_call(sid(1)) or {})["outcome"] is None
    for n in (1, 2):
        await store.call_status(sid(n), status="completed", duration_s=12.0)
    await store.call_status(sid(3), status="no-answer", duration_s=None)
    one, two, three = [await store.get_call(sid(n)) or {} for n in (1, 2, 3)]
    # The stream started and no process wrote its end: the service failed the caller.
    assert one["outcome"] == "interrupted" and one["ended_at"] and one["duration_s"] == 12.0
    assert two["outcome"] == "completed"
    assert three["outcome"] == "abandoned"
    # The session's own end still wins over the one filled in for it.
    await store.end_call(sid(1), outcome="abandoned")
    assert (await store.get_call(sid(1)) or {})["outcome"] == "abandoned"
    await store.close()


async def test_failed_writes_are_retried_in_order(tmp_path: Path) -> None:
    """Two failures, then the database takes the write; what was queued behind it waits."""
    done: list[str] = []
    failures = iter([LOCKED, LOCKED])

    async def apply(write: Write) -> None:
        if write.op == "start" and (exc := next(failures, None)) is not None:
            raise exc
        done.append(write.op)

    queue = WriteQueue(apply, tmp_path / "spill.jsonl", backoff_s=0.001)
    for op in ("start", "turn", "end"):
        queue.put(Write(op, sid(1), {}))
    assert await queue.flushed(5)
    assert done == ["start", "turn", "end"]
    assert queue.stats["retried"] == 2 and not (tmp_path / "spill.jsonl").exists()
    await queue.close()


async def test_writes_that_keep_failing_spill_and_replay_once(tmp_path: Path) -> None:
    """A turn and an end the database refuses land in the spill file; `ivr db recover`
    writes them, and a second run finds nothing more to do."""
    db = tmp_path / "x.db"
    store = await CallStore.open(db)
    await store.open_call(sid(1), stream_sid="MZ1", account_sid=None, from_masked="",
                          to_masked="", flow="demo")
    store.writes.backoff_s = 0.001
    real_apply = store.writes._apply

    async def refuse(write: Write) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    store.writes._apply = refuse
    store.record_turn(sid(1), TurnRecord(seq=1, step="menu", prompt="Say sales.",
                                         input_kind="dtmf", input_text="1", result="match"))
    store.record_end(sid(1), outcome="completed", stats={"fillers": 1})
    assert await store.writes.flushed(5)
    writes, bad = read_spill(spill_path(db))
    assert [w.op for w in writes] == ["turn", "end"] and bad == []
    assert store.writes.stats["spilled"] == 2
    store.writes._apply = real_apply
    await store.close()

    assert await recover(db) == 0
    assert not spill_path(db).exists()
    store = await CallStore.open(db)
    call = await store.get_call(sid(1)) or {}
    assert call["outcome"] == "completed" and call["stats"] == {"fillers": 1}
    assert [(t["seq"], t["input_text"]) for t in call["turns"]] == [(1, "1")]
    # Replaying the same writes again changes nothing.
    spill_path(db).write_text("".join(w.to_json() + "\n" for w in writes))
    await store.close()
    assert await recover(db) == 0
    store = await CallStore.open(db)
    again = await store.get_call(sid(1)) or {}
    assert again == call
    await store.close()
    assert await recover(db) == 0  # nothing to recover


# ------------------------------------------------------------------ a live call


@pytest.fixture
async def app_server(tmp_path: Path) -> AsyncIterator[TestServer]:
    settings = make_settings(tmp_path, recognizer_workers=1, mark_grace_ms=50,
                             error_prompt="Sorry.")
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_a_conductor_exception_ends_the_call_failed_with_the_apology(
    app_server: TestServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in the flow's run: no step runs, the caller hears IVR_ERROR_PROMPT, the call
    is recorded `failed` (not `dropped`), and it leaves the live set and the gauge."""
    said: list[str] = []
    real_play = Speaker.play

    async def spy(self: Speaker, action: engine.Play, *, interruptible: bool) -> Any:
        said.append(action.text)
        return await real_play(self, action, interruptible=interruptible)

    async def bug(self: Dialog) -> None:
        raise KeyError("a bug in the conductor")

    monkeypatch.setattr(Speaker, "play", spy)
    monkeypatch.setattr(Dialog, "run", bug)
    services = app_server.app[SERVICES]
    assert services.store is not None
    base = f"http://127.0.0.1:{app_server.port}"
    async with aiohttp.ClientSession() as http, http.ws_connect(base + "/media") as ws:
        stream = await start_stream(http, base, ws)
        await first_media(ws)
        async with asyncio.timeout(10):
            while (await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                pass  # the apology, then the server hangs up
    await until(lambda: _ended(services.store, stream))
    call = await services.store.get_call(stream.call_sid) or {}
    assert said == ["Sorry."]
    assert call["outcome"] == "failed" and call["stats"]["failures"] == 1
    assert services.calls == {}
    assert services.metrics.active_calls._value.get() == 0


async def _ended(store: CallStore | None, stream: Stream) -> bool:
    assert store is not None
    call = await store.get_call(stream.call_sid)
    return bool(call and call["outcome"])


async def test_a_store_that_refuses_writes_never_stops_the_call(
    app_server: TestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Every write fails: the greeting still plays, the row and the end are retried, then
    spilled; `ivr db recover` writes them once the database is back."""
    services = app_server.app[SERVICES]
    store = services.store
    assert store is not None
    store.writes.backoff_s = 0.001

    async def locked(*args: Any, **kwargs: Any) -> None:
        raise LOCKED

    with monkeypatch.context() as patch:
        for name in ("start_call", "_insert_turn", "end_call"):
            patch.setattr(CallStore, name, locked)
        base = f"http://127.0.0.1:{app_server.port}"
        async with aiohttp.ClientSession() as http, http.ws_connect(base + "/media") as ws:
            stream = await start_stream(http, base, ws)
            await first_media(ws)  # greeted, with no row written
            for seq in range(3, 8):
                await ws.send_str(media(stream, seq, (seq - 3) * 20, FRAME))
            await ws.send_str(inbound.stop_message(8, stream.stream_sid, stream.account_sid,
                                                   stream.call_sid))

        spill = spill_path(services.settings.db, services.settings.speech_cache_dir)

        async def end_spilled() -> bool:
            return spill.exists() and "end" in [w.op for w in read_spill(spill)[0]]

        await until(end_spilled)
        assert services.calls == {}
    writes, _ = read_spill(spill)
    ops = [w.op for w in writes]
    assert ops[0] == "start" and ops[-1] == "end"
    assert store.writes.stats["retried"] == 4 * len(ops)  # every write, four retries each
    assert await store.get_call(stream.call_sid) is None
    if services.settings.cache_dir is not None:  # where a URL store's spill file is
        monkeypatch.setenv("IVR_CACHE_DIR", str(services.settings.cache_dir))
    assert await recover(services.settings.db) == 0
    call = await store.get_call(stream.call_sid) or {}
    assert call["flow"] == "demo" and call["outcome"] == "abandoned"


# ------------------------------------------------------------------ kill -9


async def _serve(tmp_path: Path, port: int, **env: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ivr", "serve", "--host", "127.0.0.1", "--port", str(port),
        env=_env(tmp_path, IVR_CACHE_DIR=str(tmp_path / "cache"), **env),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    seen: list[str] = []

    async def running() -> None:
        assert proc.stderr is not None
        while line := (await proc.stderr.readline()).decode():
            seen.append(line)
            if "Running on" in line:
                return
        raise AssertionError("the server exited:\n" + "".join(seen))

    await asyncio.wait_for(running(), 60)
    return proc


async def test_kill_9_with_three_live_calls_leaves_three_interrupted_rows(
    tmp_path: Path,
) -> None:
    """SIGKILL mid-call, then a new server on the same database: the three calls it left
    are closed as `interrupted` before the new one answers anything."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    first = await _serve(tmp_path, port, IVR_HEARTBEAT_MS="100")
    streams: list[Stream] = []
    try:
        async with aiohttp.ClientSession() as http:
            sockets = [await http.ws_connect(base + "/media") for _ in range(3)]
            for ws in sockets:
                streams.append(await start_stream(http, base, ws))
            for ws in sockets:
                await first_media(ws)
            os.kill(first.pid, signal.SIGKILL)
            await first.wait()
            for ws in sockets:
                await ws.close()
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    db = sqlite3.connect(tmp_path / "ivr.db")
    rows = db.execute("SELECT outcome, heartbeat_at FROM calls").fetchall()
    assert len(rows) == 3 and all(outcome is None for outcome, _ in rows)
    last_beat = datetime.fromisoformat(max(beat for _, beat in rows))
    # The new server's threshold (500 ms) has passed since the dead one's last stamp.
    await asyncio.sleep(max(0.0, (last_beat + timedelta(milliseconds=600)
                                  - datetime.now(UTC)).total_seconds()))
    second = await _serve(tmp_path, free_port(), IVR_HEARTBEAT_MS="100",
                          IVR_STALE_AFTER_MS="500")
    try:
        rows = db.execute("SELECT call_sid, outcome, ended_at, heartbeat_at FROM calls"
                          ).fetchall()
    finally:
        second.terminate()
        await asyncio.wait_for(second.wait(), 30)
    assert sorted(r[0] for r in rows) == sorted(s.call_sid for s in streams)
    assert {r[1] for r in rows} == {"interrupted"}
    assert all(ended == beat for _, _, ended, beat in rows)  # at their last known time
