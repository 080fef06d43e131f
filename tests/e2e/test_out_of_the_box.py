"""Out of the box: a server started as `ivr serve` starts it, on a brand-new SQLite file
that nobody seeded, books a cleaning by voice through the shipped `dental_booking` flow.

The caller answers every step by voice, with the flow's own words, in the espeak voice the
flow's prompts use, and reacts to what the bot said as a person does (`ivr.bench.listening`:
it hears the prompts' words from the server's prompt record, so a check such as "Cleaning,
right?" gets a yes). The booking itself is checked in the database.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from ivr.bench.goals import Goal, Listener
from ivr.bench.listening import converse
from ivr.server.app import create_app
from ivr.sim.transcript import format_transcript
from tests.conftest import db_rows, make_settings

pytestmark = [pytest.mark.e2e]

CALLER = "+15550100088"  # in no seeded account or booking: the booking is this call's
TOKEN = "out-of-the-box-api-token-0123456789"


def next_weekday(today: date) -> date:
    """The next open day after today: its 3 p.m. is free in the demo data (the seeded
    bookings there are a 10:00 cleaning, and a whitening on the open day after)."""
    day = today + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


async def test_a_fresh_server_books_a_cleaning_by_voice(tmp_path: Path) -> None:
    db = tmp_path / "brand-new.db"  # SQLite even under `make test-pg`: it is what seeds
    assert not db.exists()
    server = TestServer(create_app(make_settings(tmp_path, db=db, api_token=TOKEN)),
                        host="127.0.0.1")
    await server.start_server()
    day = next_weekday(datetime.now(ZoneInfo("America/New_York")).date())  # the flow's zone
    listener = Listener(Goal("book", "flow", day=day, start=time(15, 0), name="john smith"))
    try:
        async with aiohttp.ClientSession() as http:
            t = await converse(f"http://127.0.0.1:{server.port}", http, TOKEN, listener,
                               flow="dental_booking", from_number=CALLER)
    finally:
        await server.close()

    assert t.server is not None, t.errors
    shown = format_transcript(t)
    assert t.server["outcome"] == "completed", shown
    spoken = [turn for turn in t.server["turns"] if turn["input_kind"]]
    assert {turn["input_kind"] for turn in spoken} == {"speech"}, shown  # no key pressed
    steps = [turn["step"] for turn in spoken]  # a step twice: an answer checked
    assert list(dict.fromkeys(steps)) == [
        "menu", "ask_service", "ask_day", "ask_time", "ask_name", "confirm"], shown
    rows = await db_rows(db, "SELECT service, day, start, status, call_sid FROM bookings "
                         "WHERE phone = ?", (CALLER,))
    assert rows == [("cleaning", day.isoformat(), "15:00", "booked", t.call_sid)], shown
    assert any("You're booked for a cleaning" in turn["prompt"] for turn in t.server["turns"])
