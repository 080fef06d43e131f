"""`llm` steps in speech-to-speech modes over the phone: GPT-4o audio in and out through
/chat/completions (`llm_mode: audio`), against the local fake provider."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp.test_utils import TestServer

from ivr.config import ProviderConfig
from ivr.server.app import create_app
from ivr.server.services import SERVICES
from ivr.sim.run import run_call
from ivr.sim.script import Barge, PutDown, Say, Silence
from ivr.tools.seed import seed
from tests.conftest import db_rows, fresh_database, make_settings
from tests.e2e.test_concierge import CALLER, _weekday_after_tomorrow
from tests.fake_openai import ChatReply, ToolCall, start_fake_openai, tone_pcm
from tests.fake_realtime import FakeRealtime, RealtimeReply, start_fake_realtime


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


# ------------------------------------------------------------------ realtime

# µ-law the fake model "speaks": a ramp of every code, whole 20 ms frames; no codec in
# between could keep it byte for byte except a passthrough.
MODEL_ULAW = bytes(range(256)) * 25  # 6,400 bytes: 0.8 s


def _voiced(frame: bytes | bytearray) -> bool:
    """A µ-law frame with sound in it (silence is 0xFF/0x7F and their neighbours)."""
    return sum(1 for b in frame if (b & 0x7F) < 0x70) > len(frame) // 4


async def _until(rt: FakeRealtime, check: Callable[[FakeRealtime], bool]) -> None:
    """`rt.wait_until` past its 2 s cap: re-checked on every event the fake receives."""
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(TimeoutError):
                await rt.wait_until(check)
                return


async def _realtime_server(tmp_path: Path, realtime_url: str, openai_url: str) -> TestServer:
    """A server in realtime mode; its database is `fresh_database(tmp_path)`'s, kept in
    `server.app` settings (with IVR_DB a PostgreSQL URL each call makes a new schema)."""
    llm = ProviderConfig(role="llm", base_url=openai_url, api_key="sk-test",
                         model="gpt-4o-mini", timeout_read_s=3.0, max_retries=0)
    settings = make_settings(tmp_path, recognizer_workers=1, llm=llm,
                             db=fresh_database(tmp_path), llm_mode="realtime",
                             realtime_url=realtime_url, realtime_model="gpt-realtime")
    await seed(settings.db)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    return server


async def test_realtime_concierge_books_with_mulaw_passed_through(tmp_path: Path) -> None:
    """One Realtime session for the `llm` step: µ-law both ways untouched, the step's
    instructions and tools in the session, function calls run through the registry and
    answered, the booking made; the caller's and the model's words in the record, the
    session's usage in the cost."""
    day = _weekday_after_tomorrow()
    async with start_fake_realtime() as rt, start_fake_openai() as fake:
        rt.replies.extend([
            RealtimeReply(audio=MODEL_ULAW, transcript="Sure. What can I book?"),
            RealtimeReply(function_call=("bookings__check_availability",
                                         json.dumps({"day": day}))),
            RealtimeReply(function_call=("bookings__book", json.dumps(
                {"service": "cleaning", "day": day, "start": "15:00", "name": "Pat"}))),
        ])
        server = await _realtime_server(tmp_path, rt.url, fake.base_url)
        port = server.port
        db = server.app[SERVICES].settings.db

        async def server_vad() -> None:
            # The provider's VAD: once the caller has spoken after the model's greeting,
            # the turn ends with its transcription and the next response.
            def caller_talking(f: FakeRealtime) -> bool:
                recent = range(max(0, len(f.audio) - 8000), len(f.audio), 160)
                return bool(f.responses_done) and any(_voiced(f.audio[i:i + 160])
                                                      for i in recent)

            await _until(rt, caller_talking)
            await rt.caller_spoke("I'd like a cleaning on " + day)

        vad = asyncio.create_task(server_vad())
        try:
            t = await run_call(f"ws://127.0.0.1:{port}/media", [Say("book a cleaning")],
                               flow="concierge", from_number=CALLER, transcribe=False,
                               hangup_timeout=20)
        finally:
            vad.cancel()
            await server.close()
        update = rt.session_updates[0].get("session", rt.session_updates[0])
        outputs = list(rt.function_outputs)
        appended = bytes(rt.audio)
    assert t.server is not None, t.errors
    record = t.server
    assert record["outcome"] == "completed", record
    rows = await db_rows(db, "SELECT service, day, start FROM bookings WHERE phone = ?",
                         (CALLER,))
    assert rows == [("cleaning", day, "15:00")]
    # µ-law both ways, the step's instructions and its tools.
    assert update["audio"]["input"]["format"]["type"] == "audio/pcmu"
    assert update["audio"]["output"]["format"]["type"] == "audio/pcmu"
    assert "phone concierge" in update["instructions"]
    assert "bookings__book" in {tool["name"] for tool in update["tools"]}
    # The model's bytes reached the caller unchanged, and the caller's reached the model.
    heard = b"".join(h.audio for h in t.heard)
    assert MODEL_ULAW in heard
    # The caller's line from the step's start, frame after frame as Twilio sent it.
    assert len(appended) >= 8000 and len(appended) % 160 == 0
    assert any(_voiced(appended[i:i + 160]) for i in range(0, len(appended), 160))
    # The availability check ran and its result went back; the booking ended the step.
    assert len(outputs) == 1 and json.loads(outputs[0][1])["ok"] is True
    said = " ".join(turn["prompt"] for turn in record["turns"])
    assert "Sure. What can I book?" in said
    assert any(turn["input_text"] == "I'd like a cleaning on " + day for turn in record["turns"])
    usage = {(u["role"], u["engine"]): u["units"] for u in record["stats"]["usage"]}
    assert usage[("llm", "gpt-realtime")]["audio_out"] > 0
    # Each response the model gave is an llm span: asked, first audio, done.
    llm = [sp for turn in record["turns"] for sp in turn["spans"] if sp["stage"] == "llm"]
    assert llm and all(sp["provider"] == "gpt-realtime" and sp["start"] <= sp["end"]
                       for sp in llm)
    assert any("first" in sp for sp in llm)


async def test_realtime_barge_in_cancels_clears_truncates_and_a_drop_falls_back(
    tmp_path: Path,
) -> None:
    """The caller talks over the model: `clear` within 300 ms of the caller's first voiced
    frame (local VAD), the response cancelled, the item truncated to what was heard; then
    the Realtime socket drops: the flow's fallback (the scripted main menu) speaks at
    once and the call's record lands."""
    long_reply = bytes(range(256)) * 125  # 4 s
    async with start_fake_realtime() as rt, start_fake_openai() as fake:
        # The model waits (an empty first response) until the caller has heard the
        # greeting out, then starts a long reply the caller talks over 400 ms in.
        rt.replies.extend([RealtimeReply(), RealtimeReply(
            audio=long_reply, transcript="Let me tell you all about our services.",
            chunk=len(long_reply))])
        server = await _realtime_server(tmp_path, rt.url, fake.base_url)

        async def model_then_drop() -> float:
            start = len(rt.audio)
            await _until(rt, lambda f: bool(f.responses_done) and len(f.audio) - start > 12_000)
            rt.respond()
            await _until(rt, lambda f: f.cancels >= 1 and len(f.truncates) >= 1)
            dropped = time.monotonic()
            rt.drop()
            return dropped

        driver = asyncio.create_task(model_then_drop())
        try:
            t = await run_call(f"ws://127.0.0.1:{server.port}/media",
                               [Silence(200), Barge("stop please", after_ms=400), PutDown()],
                               flow="concierge", from_number=CALLER, transcribe=False,
                               hangup_timeout=20)
        finally:
            await server.close()
        dropped = await asyncio.wait_for(driver, 1)
        truncated = rt.truncates[0]
    assert t.server is not None, t.errors
    assert t.clears, "no clear after the caller talked over the model"
    onset = next(s for s in t.speech_onsets if s < t.clears[0])
    assert t.clears[0] - onset <= 0.300, t.clears[0] - onset
    assert truncated[1] == 0 and 0 < truncated[2] <= 1000  # heard: part of the first second
    # After the drop the scripted path speaks within the filler limit (1.5 s).
    after = [at for at, _ in t.frames if at > dropped]
    assert after and after[0] - dropped < 1.5
    record = t.server
    assert record["outcome"] in ("abandoned", "completed")
    assert record["stats"]["realtime_dropped"] == 1


async def test_realtime_provider_speech_started_also_interrupts(tmp_path: Path) -> None:
    """The provider's VAD hears the caller first (`input_audio_buffer.speech_started`)
    while the model speaks: the reply stops with a Twilio `clear`, the response is
    cancelled and the item truncated, without the local VAD having heard anything."""
    long_reply = bytes(range(256)) * 125  # 4 s
    async with start_fake_realtime() as rt, start_fake_openai() as fake:
        rt.replies.append(RealtimeReply(audio=long_reply, transcript="A long story.",
                                        chunk=len(long_reply)))
        server = await _realtime_server(tmp_path, rt.url, fake.base_url)

        async def provider_hears_caller() -> float:
            await _until(rt, lambda f: bool(f.responses_done))
            start = len(rt.audio)
            await _until(rt, lambda f: len(f.audio) - start >= 8 * 600)  # 600 ms into it
            sent = time.monotonic()
            await rt.speech_started()
            await _until(rt, lambda f: len(f.truncates) >= 1)
            return sent

        driver = asyncio.create_task(provider_hears_caller())
        try:
            t = await run_call(f"ws://127.0.0.1:{server.port}/media",
                               [Silence(200), PutDown(after_ms=2500)],
                               flow="concierge", from_number=CALLER, transcribe=False,
                               hangup_timeout=20)
        finally:
            await server.close()
        sent = await asyncio.wait_for(driver, 1)
        truncated = rt.truncates[0]
    assert t.clears and t.clears[0] > sent
    assert t.clears[0] - sent < 0.3
    assert not t.speech_onsets  # the caller's line carried no speech
    assert 300 < truncated[2] < 1500
