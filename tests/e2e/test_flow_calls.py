"""The shipped flows over the phone: the simulated caller against the real server.

All calls of this module are placed at once by one fixture (they run in real time);
each test checks one behaviour of the results.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from ivr.bench.goals import Goal, Listener
from ivr.bench.listening import converse
from ivr.dialog.conversation import TextConversation
from ivr.flows.library import FlowLibrary
from ivr.server.app import create_app
from ivr.sim.run import run_call
from ivr.sim.script import CallerAction, PressKeys
from ivr.sim.transcript import CallTranscript
from ivr.store.backend import connect
from ivr.tools.registry import default_registry
from ivr.tools.seed import seed
from tests.conftest import ROOT, db_rows, make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

TZ = ZoneInfo("America/New_York")
CALLER = "+15550100077"
ORDER = "2468"  # the caller's own order (added to the seed): its details may be read out
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday"]


TOKEN = "flow-calls-api-token-0123456789"


def booking_day(now: datetime) -> date:
    """A weekday that is not today (today's afternoon slots may already be past)."""
    day = now + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day.date()


NOW = datetime.now(TZ)
DAY_WORD = WEEKDAYS[booking_day(NOW).weekday()]
# The voice booking's caller reacts to what the bot says (a check such as "Cleaning,
# right?" gets a yes): it answers with the flow's own words ("book", "cleaning", the
# weekday, "three p m", "john", "yes").
BOOKER = Goal("book", "flow", day=booking_day(NOW), start=time(15, 0), name="john smith")
CALLS: dict[str, tuple[str, list[CallerAction]]] = {
    "menu_to_orders_by_keypad": ("main_menu", [PressKeys("2"), PressKeys(ORDER)]),
    "menu_to_a_person": ("main_menu", [PressKeys("3")]),
}


@dataclass
class Placed:
    transcript: CallTranscript
    record: dict[str, Any]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def placed(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Path, dict[str, Placed]]]:
    tmp = tmp_path_factory.mktemp("e2e_flows")
    settings = make_settings(tmp, api_token=TOKEN)
    await seed(settings.db)
    conn = await connect(settings.db)
    try:
        await conn.execute("INSERT INTO orders (number, status, item, eta, phone) "
                           "VALUES (?, 'shipped', 'garden hose', NULL, ?)", (ORDER, CALLER))
    finally:
        await conn.close()
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    url = f"ws://127.0.0.1:{server.port}/media"
    try:
        async with aiohttp.ClientSession() as http:
            transcripts = await asyncio.gather(
                *(run_call(url, actions, flow=flow, from_number=CALLER, transcribe=False,
                           api_token=TOKEN)
                  for flow, actions in CALLS.values()),
                converse(f"http://127.0.0.1:{server.port}", http, TOKEN, Listener(BOOKER),
                         flow="dental_booking", from_number=CALLER))
    finally:
        await server.close()
    out = {}
    for name, t in zip([*CALLS, "dental_by_voice"], transcripts, strict=True):
        assert t.server is not None, f"{name}: no record: {t.errors}"
        out[name] = Placed(t, t.server)
    yield settings.db, out


def _answers(record: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(t["step"], t["understood"]) for t in record["turns"] if t["input_kind"]]


async def test_dental_booking_by_voice_lands_in_the_database(
    placed: tuple[Path, dict[str, Placed]],
) -> None:
    """Book, cleaning, a weekday, three p m, a name, yes: the booking is stored."""
    db, calls = placed
    rec = calls["dental_by_voice"].record
    assert rec["outcome"] == "completed", _answers(rec)
    steps = [s for s, _ in _answers(rec)]  # a step twice: an answer checked
    assert list(dict.fromkeys(steps)) == [
        "menu", "ask_service", "ask_day", "ask_time", "ask_name", "confirm"], _answers(rec)
    rows = await db_rows(db, "SELECT service, day, start, phone, status, call_sid FROM bookings "
                         "WHERE phone = ?", (CALLER,))
    assert len(rows) == 1, rows
    service, day, start, _phone, status, call_sid = rows[0]
    assert (service, start, status) == ("cleaning", "15:00", "booked")
    assert datetime.fromisoformat(day).strftime("%A").lower() == DAY_WORD
    assert call_sid == calls["dental_by_voice"].transcript.call_sid
    assert any("You're booked" in t["prompt"] for t in rec["turns"])


async def test_phone_call_and_chat_give_the_same_transcript(
    placed: tuple[Path, dict[str, Placed]],
) -> None:
    """The same inputs typed into `ivr chat`'s engine produce the prompts the call played."""
    db, calls = placed
    phone = [t["prompt"] for t in calls["menu_to_orders_by_keypad"].record["turns"]]
    library = FlowLibrary(ROOT / "flows", default="main_menu")
    library.load()
    chat = TextConversation(library.flows, "main_menu", default_registry(db), db_path=db,
                            caller=CALLER)
    typed = [" ".join((await chat.start()).bot)]
    for keys in ("#2", "#" + ORDER):
        typed.append(" ".join((await chat.turn(keys)).bot))
    assert phone == typed
    assert "shipped" in typed[-1]


async def test_transfer_closes_the_stream_and_parks_the_dial(
    placed: tuple[Path, dict[str, Placed]],
) -> None:
    """Without REST credentials a transfer closes the stream for <Connect action> to dial."""
    _, calls = placed
    call = calls["menu_to_a_person"]
    assert call.transcript.closed_by == "server"
    assert call.record["outcome"] == "transferred"
    assert call.record["stats"]["transfer_via_connect_action"] == 1
    assert "put you through" in call.record["turns"][-1]["prompt"]
