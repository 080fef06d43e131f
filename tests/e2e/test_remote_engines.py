"""Calls through remote OpenAI-compatible engines (a local fake), and through their outages."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestServer

from ivr.config import ProviderConfig
from ivr.server.app import create_app
from ivr.sim.run import run_call
from ivr.sim.script import Say
from tests.conftest import make_settings
from tests.fake_openai import ChatReply, Fault, start_fake_openai
from tests.fake_realtime import (
    TRANSCRIPTION_USAGE,
    FakeRealtime,
    TranscriptReply,
    start_fake_realtime,
)


def _providers(base_url: str) -> dict[str, ProviderConfig]:
    fast = {"timeout_read_s": 2.0, "max_retries": 1, "backoff_base_s": 0.05}
    return {
        "stt": ProviderConfig(role="stt", base_url=base_url, api_key="sk-test", model="whisper-1",
                              **fast),  # type: ignore[arg-type]
        "tts": ProviderConfig(role="tts", base_url=base_url, api_key="sk-test", model="tts-1",
                              voice="alloy", **fast),  # type: ignore[arg-type]
    }


async def _call(tmp_path: Path, base_url: str, answer: str) -> dict[str, object]:
    settings = make_settings(tmp_path, recognizer_workers=1, **_providers(base_url))
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        t = await run_call(f"ws://127.0.0.1:{server.port}/media", [Say(answer)], flow="demo",
                           transcribe=False)
    finally:
        await server.close()
    assert t.server is not None
    return t.server


async def test_remote_recognizer_and_synthesizer_answer_a_call(tmp_path: Path) -> None:
    """Prompts come from /audio/speech, the answer from /audio/transcriptions."""
    async with start_fake_openai() as fake:
        fake.transcript = "Hours, please."
        record = await _call(tmp_path, fake.base_url, "hours")
        assert fake.requests["speech"] >= 1
        assert fake.requests["transcriptions"] == 1
        assert "Bearer sk-test" in fake.headers["transcriptions"][0].get("Authorization", "")
    first = record["turns"][0]  # type: ignore[index]
    assert first["understood"] == "hours"
    assert record["outcome"] == "completed"


async def test_provider_outage_falls_back_to_embedded_engines(tmp_path: Path) -> None:
    """With both providers returning 500s the call is served by pocketsphinx and espeak."""
    async with start_fake_openai() as fake:
        fake.outage["speech"] = Fault("status", status=500)
        fake.outage["transcriptions"] = Fault("status", status=500)
        record = await _call(tmp_path, fake.base_url, "hours")
        assert fake.requests["transcriptions"] >= 1
    first = record["turns"][0]  # type: ignore[index]
    assert first["understood"] == "hours"
    assert record["outcome"] == "completed"


async def test_gpt4o_audio_chat_recognizer_understands_against_the_step(tmp_path: Path) -> None:
    """IVR_STT_API=chat: the answer goes to /chat/completions as input_audio, with the
    step's expected answers in the instructions; the reply is what the flow matches."""
    async with start_fake_openai() as fake:
        fake.chat_replies.append(ChatReply(content="support"))
        stt = ProviderConfig(role="stt", base_url=fake.base_url, api_key="sk-test",
                             model="gpt-4o-audio-preview", timeout_read_s=2.0, max_retries=1)
        settings = make_settings(tmp_path, recognizer_workers=1, stt=stt, stt_api="chat")
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        try:
            t = await run_call(f"ws://127.0.0.1:{server.port}/media", [Say("support")],
                               flow="demo", transcribe=False)
        finally:
            await server.close()
        body = fake.bodies["chat"][0]
    part = body["messages"][1]["content"][0]
    assert part["type"] == "input_audio" and part["input_audio"]["format"] == "wav"
    assert len(part["input_audio"]["data"]) > 1000  # base64 of the caller's utterance
    assert "support" in body["messages"][0]["content"]  # the step's expected answers
    assert t.server is not None
    assert t.server["turns"][0]["understood"] == "support"


async def _realtime_stt_call(tmp_path: Path, fake: FakeRealtime, answer: str
                             ) -> dict[str, object]:
    stt = ProviderConfig(role="stt", base_url="http://127.0.0.1:9/v1", api_key="sk-test",
                         model="gpt-4o-transcribe", timeout_read_s=2.0, max_retries=1)
    settings = make_settings(tmp_path, recognizer_workers=1, stt=stt, stt_api="realtime",
                             realtime_url=fake.url)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        t = await run_call(f"ws://127.0.0.1:{server.port}/media", [Say(answer)],
                           flow="demo", transcribe=False)
    finally:
        await server.close()
    assert t.server is not None
    return t.server


async def test_realtime_transcriber_understands_a_call(tmp_path: Path) -> None:
    """IVR_STT_API=realtime: the caller's answer streams to a transcription session
    (24 kHz PCM, the step's answers in the prompt) and its transcript is what the flow
    matches, billed to the Realtime transcriber."""
    async with start_fake_realtime() as fake:
        fake.transcripts.append(TranscriptReply("Support, please.", usage=TRANSCRIPTION_USAGE))
        record = await _realtime_stt_call(tmp_path, fake, "support")
        assert fake.query[0] == {"intent": "transcription"}
        prompt = fake.session_updates[0]["audio"]["input"]["transcription"]["prompt"]
        assert "support" in prompt
        assert len(fake.committed) == 1 and len(fake.committed[0]) > 24000  # > 0.5 s
    turn = record["turns"][0]  # type: ignore[index]
    assert turn["understood"] == "support"
    assert record["outcome"] == "completed"
    usage = {(u["role"], u["engine"]): u["units"]
             for u in record["stats"]["usage"]}  # type: ignore[index]
    assert usage[("stt", "realtime:gpt-4o-transcribe")] == {
        "audio_in": 18, "text_in": 7, "text_out": 6, "requests": 1}


async def test_refused_realtime_transcriber_falls_back_to_pocketsphinx(
        tmp_path: Path) -> None:
    """The transcription session is refused (401): pocketsphinx hears the same audio and
    the call goes on as if nothing happened."""
    async with start_fake_realtime() as fake:
        fake.fail_connect = True
        record = await _realtime_stt_call(tmp_path, fake, "support")
        assert len(fake.query) == 1  # it was tried
    turn = record["turns"][0]  # type: ignore[index]
    assert turn["understood"] == "support"
    assert record["outcome"] == "completed"
    engines = {u["engine"] for u in record["stats"]["usage"]}  # type: ignore[index]
    assert "pocketsphinx" in engines and "realtime:gpt-4o-transcribe" not in engines
