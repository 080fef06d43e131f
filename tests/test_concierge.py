"""The concierge flow over the phone: LLM function calling against a local fake provider."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosqlite
from aiohttp.test_utils import TestServer

from ivr.config import ProviderConfig
from ivr.server.app import create_app
from ivr.sim.run import run_call
from ivr.sim.script import Say
from ivr.sim.transcript import CallTranscript
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
    return (await _concierge_transcript(tmp_path, base_url, hangup_timeout)).server or {}


async def _concierge_transcript(
    tmp_path: Path, base_url: str, hangup_timeout: float = 20.0
) -> CallTranscript:
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
    return t


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
    assert sent[0]["model"] == "gpt-test"  # IVR_LLM_MODEL; flows may override (engines:)
    offered = {t["function"]["name"] for t in sent[0]["tools"]}
    assert {"bookings__book", "lookups__order_status"} <= offered
    assert "bookings__reschedule" not in offered
    async with aiosqlite.connect(tmp_path / "ivr.db") as db:
        rows = await (await db.execute(
            "SELECT service, day, start, name FROM bookings WHERE phone = ?", (CALLER,)
        )).fetchall()
    assert rows == [("cleaning", day, "15:00", "Pat")]
    assert record["stats"]["llm_prompt_tokens"] > 0  # type: ignore[index]


FAULTS = {
    "429": Fault("status", status=429, retry_after="1"),
    "500": Fault("status", status=500),
    "reset": Fault("reset"),
    "hang": Fault("hang"),
    "garbage": Fault("malformed_json"),
    "wrong_type": Fault("wrong_content_type"),
}


async def test_every_llm_fault_ends_in_the_spoken_fallback(tmp_path: Path) -> None:
    """429s, 500s, resets, hangs and garbage: each call still reaches the scripted menu
    (the step's fallback), after the client's retries, and its record lands."""

    async def one(name: str, fault: Fault) -> tuple[str, dict[str, object], int]:
        async with start_fake_openai() as fake:
            fake.outage["chat"] = fault
            # The caller hangs up a few seconds into the menu: what matters is that it played.
            record = await _concierge_call(tmp_path / name, fake.base_url, hangup_timeout=12.0)
            return name, record, fake.requests["chat"]

    for name in FAULTS:
        (tmp_path / name).mkdir()
    results = await asyncio.gather(*(one(n, f) for n, f in FAULTS.items()))
    for name, record, requests in results:
        prompts = " ".join(t["prompt"] for t in record["turns"])  # type: ignore[attr-defined]
        assert "Say appointments, orders, or agent" in prompts, name
        assert record["ended_at"], name
        if name == "hang":  # two read timeouts: the caller heard fillers, not silence
            assert record["stats"]["fillers"] >= 2  # type: ignore[index]
        # Retryable faults were retried (max_retries=1: two attempts); garbage is not.
        assert requests >= (1 if name in ("garbage", "wrong_type") else 2), (name, requests)


async def test_first_audio_leaves_before_the_llm_reply_is_complete(tmp_path: Path) -> None:
    """A reply whose second sentence comes 2 s later: its first sentence is already
    being played to the caller while the model is still talking."""
    async with start_fake_openai() as fake:
        fake.chat_replies.append(ChatReply(
            content="Sure thing. Let me see what we have for you this week.",
            pause_after="Sure thing. ", pause_s=2.0, split=3))
        t = await _concierge_transcript(tmp_path, fake.base_url, hangup_timeout=3.0)
        started, done = fake.chat_stream_started[0], fake.chat_stream_done[0]
    during = [at for at, _ in t.frames if started < at < done]
    assert during, "no audio reached the caller while the reply was streaming"
    assert done - during[0] > 1.0
