"""A call's cost with remote engines, priced from what served it: a concierge call with
remote recognition, synthesis and model against the local fake provider, its costs
worked out by hand from a pricing fixture and the usage the fake reports; the same with
the recognizer failing over to pocketsphinx mid-call."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from ivr.config import ProviderConfig
from ivr.server.app import create_app
from ivr.server.services import SERVICES
from ivr.sim.run import run_call
from ivr.sim.script import Say
from ivr.tools.seed import seed
from tests.conftest import fresh_database, make_settings
from tests.e2e.test_concierge import CALLER, _weekday_after_tomorrow
from tests.fake_openai import ChatReply, FakeOpenAI, Fault, ToolCall, start_fake_openai

# Rates chosen so each amount below is easy to check by hand.
PRICES = """
telephony:
  round_up_minutes: true
  per_minute: {twilio_inbound_voice: 0.01, twilio_media_streams: 0.0}
stt:
  whisper-1: {per_minute: 0.06}
  pocketsphinx: {per_minute: 0.0}
tts:
  tts-1: {per_1m_chars: 20.0}
llm:
  gpt-test: {prompt: 1.0, cached: 0.5, completion: 4.0}
"""


def _replies(day: str) -> list[ChatReply]:
    # Each round: 1,000 prompt tokens of which 400 cached, 50 completion tokens:
    # (600 * 1.0 + 400 * 0.5 + 50 * 4.0) / 1e6 = $0.001.
    def reply(content: str = "", tool: ToolCall | None = None) -> ChatReply:
        return ChatReply(content=content, tool_calls=[tool] if tool else [],
                         prompt_tokens=1000, cached_tokens=400, completion_tokens=50)

    return [
        reply("Sure. What can I book?"),
        reply(tool=ToolCall("bookings__check_availability", json.dumps({"day": day}))),
        reply(tool=ToolCall("bookings__book", json.dumps(
            {"service": "cleaning", "day": day, "start": "15:00", "name": "Pat"}))),
    ]


async def _remote_call(
    tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The concierge call; returns the server's record and the speech requests the
    fake received during the call (not the start-up prewarm of static prompts)."""
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    monkeypatch.setenv("IVR_PRICING", str(prices))
    fast = {"timeout_read_s": 3.0, "max_retries": 0, "backoff_base_s": 0.05}
    providers = {
        role: ProviderConfig(role=role, base_url=fake.base_url, api_key="sk-test",  # type: ignore[arg-type]
                             model=model, voice="alloy" if role == "tts" else None, **fast)  # type: ignore[arg-type]
        for role, model in (("stt", "whisper-1"), ("tts", "tts-1"), ("llm", "gpt-test"))
    }
    settings = make_settings(tmp_path, recognizer_workers=1, db=fresh_database(tmp_path),
                             **providers)
    await seed(settings.db)
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        services = app[SERVICES]
        while not services.ready:  # noqa: ASYNC110 - a flag the app sets, no event to await
            await asyncio.sleep(0.05)
        if services.prewarming is not None:
            await services.prewarming
        before = len(fake.bodies["speech"])
        with capture_logs() as logs:
            t = await run_call(f"ws://127.0.0.1:{server.port}/media", [Say("book a cleaning")],
                               flow="concierge", from_number=CALLER, transcribe=False,
                               hangup_timeout=20)
    finally:
        await server.close()
    assert t.server is not None, t.errors
    ended = [e for e in logs if e["event"] == "call_ended"]
    assert len(ended) == 1
    # The log line carries what the record does: the call's cost and voice-to-voice p50.
    assert ended[0]["cost_usd"] == t.server["stats"]["cost"]["total"]
    responses = sorted(turn["timings"]["response_ms"] for turn in t.server["turns"]
                       if "response_ms" in turn["timings"])
    assert responses and ended[0]["response_p50_ms"] == responses[(len(responses) - 1) // 2]
    return t.server, fake.bodies["speech"][before:]


async def test_remote_engines_are_priced_from_the_usage_they_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with start_fake_openai() as fake:
        fake.transcription_seconds = 2.5  # what Whisper bills for the answer
        fake.chat_replies.extend(_replies(_weekday_after_tomorrow()))
        record, speech = await _remote_call(tmp_path, fake, monkeypatch)
        assert fake.requests["transcriptions"] == 1 and fake.requests["chat"] == 3
    assert record["outcome"] == "completed"
    cost = record["stats"]["cost"]
    # 2.5 s at $0.06 a minute.
    assert cost["stt:openai:whisper-1"] == 0.0025
    # Three rounds at $0.001.
    assert cost["llm:gpt-test"] == 0.003
    # Every character the fake was asked to speak during the call, at $20 per million;
    # the call's own prompts are the model's sentence and the booking confirmation.
    chars = sum(len(body["input"]) for body in speech)
    assert chars > 40
    assert any("What can I book?" in body["input"] for body in speech)
    assert cost["tts:openai:tts-1"] == round(chars * 20.0 / 1e6, 6)
    assert cost["tts:openai:tts-1"] > 0
    duration_ms = record["stats"]["duration_ms"]
    minutes = -(-duration_ms // 60_000)
    assert cost["telephony"] == round(minutes * 0.01, 6)
    assert cost["total"] == round(0.0025 + 0.003 + chars * 20.0 / 1e6 + minutes * 0.01, 6)
    assert not [k for k in cost if k.startswith("unpriced:")]
    usage = {(u["role"], u["engine"]): u["units"] for u in record["stats"]["usage"]}
    assert usage[("stt", "openai:whisper-1")] == {"audio_s": 2.5, "requests": 1}
    assert usage[("llm", "gpt-test")] == {"text_in": 1800, "cached_in": 1200,
                                           "text_out": 150, "requests": 3}
    assert usage[("tts", "openai:tts-1")]["chars"] == chars
    # Provider spans: the model's first token and the synthesis's first byte, per turn.
    spans = [s for turn in record["turns"] for s in turn["spans"]]
    llm = [s for s in spans if s["stage"] == "llm"]
    tts = [s for s in spans if s["stage"] == "tts"]
    assert len(llm) == 3 and all(s["provider"] == "gpt-test" for s in llm)
    assert all(s["start"] <= s["first"] <= s["end"] for s in llm)
    assert tts and all(s["provider"] == "openai:tts-1" and "first" in s for s in tts)
    tools = [s["provider"] for s in spans if s["stage"] == "tool"]
    assert tools == ["bookings.check_availability", "bookings.book"]
    answered = [t for t in record["turns"] if t["input_kind"] == "speech"]
    assert answered and answered[0]["timings"]["llm_first_token_ms"] >= 0
    assert answered[0]["timings"]["tts_first_byte_ms"] >= 0
    assert [s["provider"] for s in answered[0]["spans"] if s["stage"] == "stt"] == [
        "openai:whisper-1"]


async def test_a_failed_over_recognition_is_billed_to_pocketsphinx_not_the_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The transcription request fails (500): the answer is recognized by pocketsphinx,
    which is listed with its seconds at its own rate ($0), and the provider is not."""
    async with start_fake_openai() as fake:
        fake.outage["transcriptions"] = Fault("status", status=500)
        fake.transcription_seconds = 2.5
        fake.chat_replies.extend(_replies(_weekday_after_tomorrow()))
        record, _ = await _remote_call(tmp_path, fake, monkeypatch)
        assert fake.requests["transcriptions"] >= 1
    cost = record["stats"]["cost"]
    usage = {(u["role"], u["engine"]): u["units"] for u in record["stats"]["usage"]}
    assert "stt:openai:whisper-1" not in cost
    assert ("stt", "openai:whisper-1") not in usage
    assert cost["stt:pocketsphinx"] == 0.0
    assert usage[("stt", "pocketsphinx")]["audio_s"] > 0.3
    assert cost["llm:gpt-test"] == 0.003  # the rest of the call is billed as before
