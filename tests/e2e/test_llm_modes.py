"""`llm` steps in speech-to-speech modes over the phone: GPT-4o audio in and out through
/chat/completions (`llm_mode: audio`), against the local fake provider."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp.test_utils import TestServer

from ivr.config import ProviderConfig
from ivr.server.app import create_app
from ivr.sim.run import run_call
from ivr.sim.script import Say
from ivr.tools.seed import seed
from tests.conftest import db_rows, fresh_database, make_settings
from tests.e2e.test_concierge import CALLER, _weekday_after_tomorrow
from tests.fake_openai import ChatReply, ToolCall, start_fake_openai, tone_pcm


async def test_audio_mode_concierge_books_by_voice_and_speaks_as_it_streams(
    tmp_path: Path,
) -> None:
    """The model hears the caller's audio, books through function calling and speaks its
    replies: its first audio reaches the caller while the provider is still holding the
    rest of the response; the turn keeps both sides' words; the cost has audio tokens."""
    day = _weekday_after_tomorrow()
    hold = asyncio.Event()
    async with start_fake_openai() as fake:
        fake.chat_replies.extend([
            ChatReply(audio=tone_pcm(0.6), audio_transcript="Sure. What can I book?",
                      audio_hold=hold, audio_hold_after=1, audio_tokens_out=60,
                      prompt_tokens=400, completion_tokens=70),
            ChatReply(tool_calls=[ToolCall("bookings__check_availability",
                                           json.dumps({"day": day}))],
                      audio_tokens_in=90, prompt_tokens=600, completion_tokens=20),
            ChatReply(tool_calls=[ToolCall("bookings__book", json.dumps(
                {"service": "cleaning", "day": day, "start": "15:00", "name": "Pat"}))],
                      prompt_tokens=700, completion_tokens=30),
        ])
        llm = ProviderConfig(role="llm", base_url=fake.base_url, api_key="sk-test",
                             model="gpt-4o-audio-preview", timeout_read_s=3.0, max_retries=0)
        db = fresh_database(tmp_path)
        settings = make_settings(tmp_path, recognizer_workers=1, llm=llm, db=db,
                                 llm_mode="audio", llm_voice="verse")
        await seed(settings.db)
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        # The provider holds the rest of its first reply for a second after the first
        # audio piece: the caller must hear that piece before the reply is finished.

        async def release() -> None:
            await fake.wait_requests("chat", 1)
            await asyncio.sleep(1.0)
            hold.set()

        releaser = asyncio.create_task(release())
        try:
            t = await run_call(f"ws://127.0.0.1:{server.port}/media", [Say("book a cleaning")],
                               flow="concierge", from_number=CALLER, transcribe=False,
                               hangup_timeout=20)
        finally:
            releaser.cancel()
            await server.close()
        sent = fake.bodies["chat"]
        started, done = fake.chat_stream_started[0], fake.chat_stream_done[0]
    assert t.server is not None, t.errors
    record = t.server
    assert record["outcome"] == "completed"
    assert await db_rows(db, "SELECT service, day, start FROM bookings WHERE phone = ?",
                         (CALLER,)) == [("cleaning", day, "15:00")]
    # Spoken as it streamed: model audio reached the caller inside the held response.
    assert any(started < at < done for at, _ in t.frames), (started, done)
    # The request asked for speech, in the configured voice; the caller's answer went
    # to the model as audio (a WAV of the utterance), not as the recognizer's words.
    assert sent[0]["modalities"] == ["text", "audio"]
    assert sent[0]["audio"] == {"voice": "verse", "format": "pcm16"}
    user = [m for m in sent[1]["messages"] if m["role"] == "user"][-1]
    part = user["content"][0]
    assert part["type"] == "input_audio" and part["input_audio"]["format"] == "wav"
    assert len(part["input_audio"]["data"]) > 10_000  # ~1 s of 16 kHz audio, base64
    # Both sides' words in the record: the model's transcript as the prompt, the
    # caller's words (the embedded recognizer's) as the answer.
    turns = record["turns"]
    answered = [tr for tr in turns if tr["input_kind"] == "speech"]
    assert answered and answered[0]["input_text"]
    assert "Sure. What can I book?" in answered[0]["prompt"]
    # The cost holds the audio tokens the provider reported.
    usage = {(u["role"], u["engine"]): u["units"] for u in record["stats"]["usage"]}
    units = usage[("llm", "gpt-4o-audio-preview")]
    assert units["audio_out"] == 60 and units["audio_in"] == 90
    assert record["stats"]["cost"]["llm:gpt-4o-audio-preview"] > 0
