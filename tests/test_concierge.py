"""The concierge flow over the phone: LLM function calling against a local fake provider."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosqlite
from aiohttp.test_utils import TestServer

from ivr.app import create_app
from ivr.caller import Say, run_call
from ivr.providers.config import ProviderConfig
from ivr.tools.seed import seed
from tests.conftest import make_settings
from tests.fake_openai import ChatReply, Fault, ToolCall, start_fake_openai

CALLER = "+15550100088"


def _weekday_after_tomorrow() -> str:
    day = datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=2)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day.isoformat()


async def _concierge_call(
    tmp_path: Path, base_url: str, hangup_timeout: float = 20.0
) -> dict[str, object]:
    llm = ProviderConfig(role="llm", base_url=base_url, api_key="sk-test", model="gpt-test",
                         timeout_read_s=3.0, max_retries=1, backoff_base_s=0.05)
    settings = make_settings(tmp_path, recognizer_workers=1, llm=llm)
    await seed(settings.db)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        t = await run_call(f"ws://127.0.0.1:{server.port}/media", [Say("book a cleaning")],
                           flow="concierge", from_number=CALLER, transcribe=False,
                           hangup_timeout=hangup_timeout)
    finally:
        await server.close()
    assert t.server is not None, t.errors
    return t.server


async def test_concierge_books_through_llm_function_calling(tmp_path: Path) -> None:
    """The model asks, checks availability, books; the booking is in the database."""
    day = _weekday_after_tomorrow()
    async with start_fake_openai() as fake:
        fake.chat_replies.extend([
            ChatReply(content="Sure. What can I book for you?"),
            ChatReply(tool_calls=[ToolCall("bookings__check_availability",
                                           json.dumps({"day": day}))]),
            ChatReply(tool_calls=[ToolCall("bookings__book", json.dumps(
                {"service": "cleaning", "day": day, "start": "15:00", "name": "Pat"}))]),
        ])
        record = await _concierge_call(tmp_path, fake.base_url)
        sent = fake.bodies["chat"]
    assert record["outcome"] == "completed"
    prompts = " ".join(t["prompt"] for t in record["turns"])  # type: ignore[attr-defined]
    assert "What can I book for you?" in prompts and "You're booked" in prompts
    # The model saw only the step's tools (plus the agent's own), as OpenAI functions.
    offered = {t["function"]["name"] for t in sent[0]["tools"]}
    assert {"bookings__book", "lookups__order_status"} <= offered
    assert "bookings__reschedule" not in offered
    async with aiosqlite.connect(tmp_path / "ivr.db") as db:
        rows = await (await db.execute(
            "SELECT service, day, start, name FROM bookings WHERE phone = ?", (CALLER,)
        )).fetchall()
    assert rows == [("cleaning", day, "15:00", "Pat")]
    assert record["stats"]["llm_prompt_tokens"] > 0  # type: ignore[index]


async def test_llm_outage_takes_the_scripted_fallback(tmp_path: Path) -> None:
    """With the provider failing, the call goes on in the scripted main menu."""
    async with start_fake_openai() as fake:
        fake.outage["chat"] = Fault("status", status=500)
        # The caller hangs up a few seconds into the menu: what matters is that it played.
        record = await _concierge_call(tmp_path, fake.base_url, hangup_timeout=3.0)
        assert fake.requests["chat"] >= 1
    prompts = " ".join(t["prompt"] for t in record["turns"])  # type: ignore[attr-defined]
    assert "Say appointments, orders, or agent" in prompts
