"""Never act on a guess, over the phone: a spoken "yes" at a booking confirmation that
is not sure enough gets "Press 1 to confirm, 2 to change.", and only the key books.

The flow sets `certainty.commit_confidence` above anything pocketsphinx reports (its
confidences stay under 0.5), so the real recognizer's "yes" is always unsure here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestServer

from ivr.flows.engine.verify import KEYS_TO_COMMIT
from ivr.server.app import create_app
from ivr.sim.run import run_call
from ivr.sim.script import PressKeys, Say
from ivr.tools.seed import seed
from tests.conftest import db_rows, make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio]

TZ = ZoneInfo("America/New_York")
CALLER = "+15550100078"


def next_weekday() -> str:
    day = datetime.now(TZ).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day.isoformat()


FLOW = """
name: sure_booking
start: confirm
tools: [bookings.book]
certainty: {commit_confidence: 0.9}
slots:
  ok: {type: yes_no}
steps:
  confirm:
    ask: A cleaning at three p m. Shall I book it? Say yes or no.
    slot: ok
    next: decide
  decide:
    branch:
      - {if: "slots.ok", goto: book}
    else: bye
  book:
    call: bookings.book
    args: {service: cleaning, day: "DAY", start: "15:00", name: Sam}
    next: booked
  booked: {say: "You're booked.", next: bye}
  bye: {hangup: Goodbye.}
"""


async def test_an_unsure_spoken_yes_is_confirmed_by_keys_only(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "sure_booking.yaml").write_text(FLOW.replace("DAY", next_weekday()))
    settings = make_settings(tmp_path, flows=flows, default_flow="sure_booking")
    await seed(settings.db)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        call = await run_call(f"ws://127.0.0.1:{server.port}/media",
                              [Say("yes"), PressKeys("1")], flow="sure_booking",
                              from_number=CALLER, transcribe=False)
    finally:
        await server.close()
    record = call.server
    assert record is not None, call.errors
    turns = [t for t in record["turns"] if t["input_kind"]]
    assert [(t["input_kind"], t["understood"]) for t in turns][:1] == [("speech", "yes")]
    assert any(KEYS_TO_COMMIT in (t["prompt"] or "") for t in record["turns"]), record["turns"]
    assert turns[-1]["input_kind"] == "dtmf"
    assert any("You're booked" in (t["prompt"] or "") for t in record["turns"])
    rows = await db_rows(settings.db, "SELECT service, start FROM bookings WHERE phone = ?",
                         (CALLER,))
    assert rows == [("cleaning", "15:00")]
