"""The concierge flow over the phone and typed: LLM function calling against a local
fake provider; the tools reach only the caller's own bookings; the call's token budget."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from ivr.config import ProviderConfig
from ivr.dialog.agent_step import per_flow_model
from ivr.dialog.conversation import TextConversation
from ivr.flows.library import FlowLibrary
from ivr.llm.client import ChatClient
from ivr.providers.http import ProviderClient
from ivr.server.app import create_app
from ivr.sim.run import run_call
from ivr.sim.script import Say
from ivr.sim.transcript import CallTranscript
from ivr.tools.registry import default_registry
from ivr.tools.seed import seed
from tests.conftest import ROOT, db_rows, fresh_database, make_settings
from tests.fake_openai import ChatReply, Fault, ToolCall, start_fake_openai

CALLER = "+15550100088"


def _weekday_after_tomorrow() -> str:
    day = datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=2)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day.isoformat()


async def _concierge_call(
    tmp_path: Path, base_url: str, hangup_timeout: float = 20.0, **settings: object
) -> dict[str, object]:
    return (await _concierge_transcript(tmp_path, base_url, hangup_timeout,
                                        **settings)).server or {}


async def _concierge_transcript(
    tmp_path: Path, base_url: str, hangup_timeout: float = 20.0, **overrides: object
) -> CallTranscript:
    llm = ProviderConfig(role="llm", base_url=base_url, api_key="sk-test", model="gpt-test",
                         timeout_read_s=3.0, max_retries=1, backoff_base_s=0.05)
    settings = make_settings(tmp_path, recognizer_workers=1, llm=llm, **overrides)
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
        db = fresh_database(tmp_path)
        record = await _concierge_call(tmp_path, fake.base_url, db=db)
        sent = fake.bodies["chat"]
    assert record["outcome"] == "completed"
    prompts = " ".join(t["prompt"] for t in record["turns"])  # type: ignore[attr-defined]
    assert "What can I book for you?" in prompts and "You're booked" in prompts
    # The model saw only the step's tools (plus the agent's own), as OpenAI functions.
    assert sent[0]["model"] == "gpt-test"  # IVR_LLM_MODEL; flows may override (engines:)
    offered = {t["function"]["name"] for t in sent[0]["tools"]}
    assert {"bookings__book", "lookups__order_status"} <= offered
    assert "bookings__reschedule" not in offered
    rows = await db_rows(db, "SELECT service, day, start, name FROM bookings WHERE phone = ?",
                         (CALLER,))
    assert rows == [("cleaning", day, "15:00", "Pat")]
    assert record["stats"]["llm_prompt_tokens"] > 0  # type: ignore[index]


async def test_a_model_cancelling_another_numbers_booking_gets_a_tool_error(
    tmp_path: Path,
) -> None:
    """On a call from CALLER the model cancels BK-SEED2 (another number's): the model is
    told the booking is not found, the booking stays booked, and no request to the model
    ever held the caller's number."""
    async with start_fake_openai() as fake:
        fake.chat_replies.extend([
            ChatReply(content="Sure. Which booking?"),
            ChatReply(tool_calls=[ToolCall("bookings__cancel", '{"ref": "BK-SEED2"}')]),
            ChatReply(content="Sorry, I can't find that booking. Goodbye.",
                      tool_calls=[ToolCall("end_conversation", "{}")]),
        ])
        db = fresh_database(tmp_path)
        record = await _concierge_call(tmp_path, fake.base_url, db=db)
        sent = fake.bodies["chat"]
    assert record["outcome"] == "completed"
    results = [json.loads(m["content"]) for m in sent[2]["messages"] if m["role"] == "tool"]
    assert results == [{"ok": False, "error": "no booking with reference BK-SEED2 under the "
                                              "caller's number"}]
    assert await db_rows(db, "SELECT status FROM bookings WHERE ref = 'BK-SEED2'") == [
        ("booked",)]
    assert CALLER[-7:] not in json.dumps(sent)


async def test_the_llm_budget_ends_the_agent_step_with_its_fallback(tmp_path: Path) -> None:
    """`IVR_LLM_MAX_TOKENS_PER_CALL=100`: the model's first reply reports 110 tokens, so
    after the caller's answer no request is made: the caller gets the scripted menu (the
    step's fallback) and the call record counts the spent budget."""
    async with start_fake_openai() as fake:
        fake.chat_replies.extend([
            ChatReply(content="Sure. What can I book for you?", prompt_tokens=90,
                      completion_tokens=20),
            ChatReply(content="Never sent."),
        ])
        record = await _concierge_call(tmp_path, fake.base_url, hangup_timeout=12.0,
                                       llm_max_tokens_per_call=100)
        requests = fake.requests["chat"]
    prompts = " ".join(t["prompt"] for t in record["turns"])  # type: ignore[attr-defined]
    assert "What can I book for you?" in prompts
    assert "Say appointments, orders, or agent" in prompts
    assert "Never sent" not in prompts and requests == 1
    stats = record["stats"]
    assert stats["llm_budget_spent"] == 1  # type: ignore[index]
    assert stats["llm_prompt_tokens"] + stats["llm_completion_tokens"] == 110  # type: ignore[index]


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


def _script(day: str) -> list[ChatReply]:
    """The model's side of one booking: two questions, an availability check, the booking."""
    return [
        ChatReply(content="Sure. What can I book for you?"),
        ChatReply(content="Which day would you like?"),
        ChatReply(tool_calls=[ToolCall("bookings__check_availability",
                                       json.dumps({"day": day}))]),
        ChatReply(tool_calls=[ToolCall("bookings__book", json.dumps(
            {"service": "cleaning", "day": day, "start": "15:00", "name": "Pat"}))]),
    ]


def _without_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's messages without tool-call ids (the fake numbers them per server)."""
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if k != "tool_call_id"}
        if m.get("tool_calls"):
            m["tool_calls"] = [{k: v for k, v in c.items() if k != "id"}
                               for c in m["tool_calls"]]
        out.append(m)
    return out


async def _booked(db: Path | str) -> list[tuple[Any, ...]]:
    return await db_rows(db, "SELECT service, day, start, name FROM bookings WHERE phone = ?",
                         (CALLER,))


async def test_chat_with_an_llm_books_and_gives_the_phone_calls_transcript(
    tmp_path: Path,
) -> None:
    """The concierge typed (`ivr chat`'s conversation, LLM configured) and spoken, with the
    same model replies and the same caller words: both book, and the bot's lines, the
    caller's lines, the tool calls and everything the model was sent are the same."""
    day = _weekday_after_tomorrow()
    said = ["book a cleaning", "the day after tomorrow"]
    async with start_fake_openai() as fake:
        llm = ProviderConfig(role="llm", base_url=fake.base_url, api_key="sk-test",
                             model="gpt-test", timeout_read_s=3.0)
        # The phone hears the caller through the fake's transcriptions: the words are
        # exactly the typed ones. Fillers would be extra lines: none in this test.
        stt = ProviderConfig(role="stt", base_url=fake.base_url, api_key="sk-test",
                             model="whisper-test")
        settings = make_settings(tmp_path / "phone", recognizer_workers=1, llm=llm, stt=stt,
                                 filler_after_ms=60_000)
        (tmp_path / "phone").mkdir()
        await seed(settings.db)
        fake.chat_replies.extend(_script(day))
        fake.transcripts.extend(said)
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        try:
            with capture_logs() as logs:
                t = await run_call(f"ws://127.0.0.1:{server.port}/media",
                                   [Say(s) for s in said], flow="concierge",
                                   from_number=CALLER, transcribe=False)
        finally:
            await server.close()
        phone_sent = list(fake.bodies["chat"])

        fake.chat_replies.extend(_script(day))
        db = tmp_path / "chat.db"
        await seed(db)
        library = FlowLibrary(ROOT / "flows", default="main_menu")
        library.load()
        async with aiohttp.ClientSession() as http:
            model = per_flow_model(ChatClient(ProviderClient(llm, http), llm.model))
            chat = TextConversation(library.flows, "concierge", default_registry(db),
                                    db_path=db, caller=CALLER, model=model)
            exchanges = [await chat.start()]
            for words in said:
                exchanges.append(await chat.turn(words))
        chat_sent = fake.bodies["chat"][len(phone_sent):]

    assert t.server is not None, t.errors
    turns = t.server["turns"]
    assert t.server["outcome"] == "completed" and chat.done
    # Bot lines, turn by turn, and the caller's lines.
    assert [turn["prompt"] for turn in turns] == [" ".join(ex.bot) for ex in exchanges]
    assert "You're booked" in turns[-1]["prompt"]
    assert [turn["input_text"] for turn in turns if turn["input_kind"]] == said
    assert [ex.caller for ex in exchanges[1:]] == said
    # Tool calls: the same tools, in the same order, with the same results.
    phone_tools = [(e["tool"], e["ok"]) for e in logs if e["event"] == "agent_tool"]
    assert phone_tools == [(name, ok) for ex in exchanges for name, _args, ok in ex.tools]
    assert phone_tools == [("bookings.check_availability", True), ("bookings.book", True)]
    # The model saw the same conversation both times.
    assert [_without_ids(b["messages"]) for b in phone_sent] == [
        _without_ids(b["messages"]) for b in chat_sent]
    assert await _booked(settings.db) == await _booked(db) == [("cleaning", day, "15:00", "Pat")]


async def test_ivr_chat_runs_the_llm_step_when_an_llm_is_configured(tmp_path: Path) -> None:
    """`ivr chat concierge` with `IVR_LLM_*` set (as `ivr serve` reads them) talks to the
    model instead of taking the step's fallback, and books."""
    day = _weekday_after_tomorrow()
    db = tmp_path / "ivr.db"
    async with start_fake_openai() as fake:
        fake.chat_replies.extend(_script(day))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "IVR_LLM_BASE_URL": fake.base_url,
               "IVR_LLM_API_KEY": "sk-test", "IVR_LLM_MODEL": "gpt-test"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ivr", "chat", "concierge", "--flows", str(ROOT / "flows"),
            "--db", str(db), "--caller", CALLER, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(
            proc.communicate(b"book a cleaning\nthe day after tomorrow\n"), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "bot> Sure." in text and "bot> Which day would you like?" in text
    assert "bookings.book" in text and "You're booked" in text
    assert fake.bodies["chat"][0]["model"] == "gpt-test"
    assert await _booked(db) == [("cleaning", day, "15:00", "Pat")]
