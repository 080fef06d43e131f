"""`ivr bench conversation`'s machinery on two calls: a caller who books by voice with the
flow's own words, and one who cancels by keypad, each reacting to the prompts it reads
from the server's prompt record (behind the API token), judged by the database."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from ivr.bench.conversation import ZONE, Bench, Plan, Slots
from ivr.server.app import create_app
from tests.conftest import make_settings

pytestmark = [pytest.mark.e2e]

TOKEN = "bench-t0ken"


@dataclass(frozen=True)
class _Served:
    base: str
    db: Path


async def test_a_voice_booking_and_a_keypad_cancel_reach_their_goals(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"  # seeded with the demo business at start-up
    server = TestServer(create_app(make_settings(tmp_path, db=db, api_token=TOKEN)),
                        host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            slots = Slots(datetime.now(ZONE).date(), set(), random.Random(1))
            bench = Bench(_Served(f"http://127.0.0.1:{server.port}", db), http, TOKEN, slots,
                          datetime.now(ZONE).date())
            voice = await bench.call(Plan("book", "flow", "en-us", 165, False), 0)
            keys = await bench.call(Plan("cancel", "keys", "en-us", 165, False), 1)
    finally:
        await server.close()

    for result in (voice, keys):
        assert result.success, result
        assert result.wrong_actions == [], result
        assert result.outcome == "completed", result
    # What the callers heard came from the prompt record: the read-back and the outcome.
    assert any("Shall I book it?" in text for text in voice.heard), voice.heard
    assert any("is cancelled" in text for text in keys.heard), keys.heard
    assert all(said.isdigit() or said.endswith("#") for said in keys.said), keys.said
