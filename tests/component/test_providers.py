"""Remote providers: the resilient client, OpenAI STT/TTS, and fallback to embedded engines.

Everything runs against `tests.fake_openai` on 127.0.0.1. Backoff sleeps are injected
(recorded, not slept) so retry timing is asserted exactly and the suite stays fast.
"""

from __future__ import annotations

import asyncio
import io
import json
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from ivr.config import ProviderConfig, provider_from_env
from ivr.errors import ConfigError
from ivr.grammar import Grammar
from ivr.providers import (
    ProviderBadResponse,
    ProviderClient,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnavailable,
    redact,
)
from ivr.providers.http import _retry_after
from ivr.speech.base import Recognition
from ivr.speech.fallback import FallbackRecognizer, FallbackSynthesizer
from ivr.speech.openai_stt import OpenAIRecognizer
from ivr.speech.openai_tts import OpenAISynthesizer, speed_for_rate
from tests.fake_openai import (
    ChatReply,
    FakeOpenAI,
    Fault,
    ToolCall,
    start_fake_openai,
    tone_pcm,
)

KEY = "sk-test-0123456789abcdef"


class Clock:
    """Injected monotonic clock and sleep: sleeps are recorded and advance the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with start_fake_openai() as f:
        yield f


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


MakeClient = Callable[..., ProviderClient]


@pytest.fixture
def make_client(fake: FakeOpenAI, session: aiohttp.ClientSession, clock: Clock) -> MakeClient:
    def make(role: str = "stt", **overrides: Any) -> ProviderClient:
        config = ProviderConfig(
            role=role,  # type: ignore[arg-type]
            base_url=fake.base_url, api_key=KEY,
            model={"stt": "whisper-1", "tts": "tts-1"}.get(role, "gpt"),
            voice="alloy" if role == "tts" else None,
            timeout_read_s=2.0,
        )
        return ProviderClient(replace(config, **overrides), session, clock=clock,
                              sleep=clock.sleep)
    return make


SPEECH_16K = tone_pcm(0.25, rate=16000)


def state(client: ProviderClient) -> str:
    # Through a function, so mypy does not narrow the state across awaits.
    return client.breaker.state


# --- config ---------------------------------------------------------------------------

def test_provider_from_env() -> None:
    assert provider_from_env("stt", {}) is None
    env = {"IVR_TTS_BASE_URL": "https://api.example.com/v1/", "IVR_TTS_API_KEY": KEY,
           "IVR_TTS_VOICE": "nova", "IVR_TTS_TIMEOUT_S": "4.5", "IVR_TTS_CONCURRENCY": "3"}
    cfg = provider_from_env("tts", env)
    assert cfg is not None
    assert (cfg.base_url, cfg.voice, cfg.timeout_read_s, cfg.max_concurrency, cfg.model) == (
        "https://api.example.com/v1", "nova", 4.5, 3, "tts-1")
    assert KEY not in repr(cfg) and cfg.name == "tts:api.example.com"
    with pytest.raises(ConfigError):
        provider_from_env("llm", {"IVR_LLM_BASE_URL": "http://x", "IVR_LLM_CONCURRENCY": "0"})


def test_redact_masks_keys() -> None:
    text = f"Authorization: Bearer {KEY} and again {KEY}, also sk-abcdefghijklmnop"
    out = redact(text, KEY)
    assert KEY not in out and "sk-abcdefghijklmnop" not in out and "Bearer ***" in out


def test_retry_after_parsing() -> None:
    def now() -> float:
        return 1_700_000_000.0

    assert _retry_after("3", 10, now) == 3.0
    assert _retry_after("999", 10, now) == 10.0  # capped
    assert _retry_after("Tue, 14 Nov 2023 22:13:25 GMT", 10, now) == pytest.approx(5.0)
    assert _retry_after("garbage", 10, now) is None


# --- client: retries ------------------------------------------------------------------

async def test_429_retry_after_honoured_then_success(
    fake: FakeOpenAI, make_client: MakeClient, clock: Clock
) -> None:
    fake.fail("chat", Fault("status", status=429, retry_after="2"))
    client = make_client("llm")
    body = await client.request_json("POST", "/chat/completions", json={"messages": []})
    assert body["object"] == "chat.completion"
    assert clock.sleeps == [2.0]
    assert fake.requests["chat"] == 2
    assert client.stats["retries"] == 1 and client.stats["http_429"] == 1
    assert fake.headers["chat"][0]["Authorization"] == f"Bearer {KEY}"


async def test_500s_back_off_with_jitter_then_success(
    fake: FakeOpenAI, make_client: MakeClient, clock: Clock
) -> None:
    fake.fail("chat", Fault("status", status=500), Fault("status", status=503))
    client = make_client("llm", backoff_base_s=0.5)
    await client.request_json("POST", "/chat/completions", json={"messages": []})
    assert fake.requests["chat"] == 3 and len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 0.5 and 0 <= clock.sleeps[1] <= 1.0  # full jitter ranges
    assert state(client) == "closed" and client.stats["failures"] == 0


async def test_connection_reset_is_retried(fake: FakeOpenAI, make_client: MakeClient) -> None:
    fake.fail("chat", Fault("reset"))
    client = make_client("llm")
    await client.request_json("POST", "/chat/completions", json={"messages": []})
    assert fake.requests["chat"] == 2 and client.stats["connection_errors"] == 1


async def test_retries_exhausted_raises_status_error(
    fake: FakeOpenAI, make_client: MakeClient, clock: Clock
) -> None:
    fake.outage["chat"] = Fault("status", status=502)
    client = make_client("llm", max_retries=2)
    with pytest.raises(ProviderHTTPError) as info:
        await client.request_json("POST", "/chat/completions", json={})
    assert info.value.status == 502 and fake.requests["chat"] == 3
    assert client.stats["failures"] == 1 and client.stats["retries"] == 2


async def test_400_fails_at_once(fake: FakeOpenAI, make_client: MakeClient, clock: Clock) -> None:
    fake.fail("chat", Fault("status", status=400))
    client = make_client("llm")
    with pytest.raises(ProviderHTTPError) as info:
        await client.request_json("POST", "/chat/completions", json={})
    assert info.value.status == 400 and fake.requests["chat"] == 1 and clock.sleeps == []
    assert KEY not in str(info.value)
    # A bad request says nothing about the provider's health.
    assert client.breaker.failures == 0


# --- client: breaker, limits, timeouts, bad responses --------------------------------

async def test_breaker_opens_rejects_then_half_opens(
    fake: FakeOpenAI, make_client: MakeClient, clock: Clock
) -> None:
    fake.outage["chat"] = Fault("status", status=500)
    client = make_client("llm", max_retries=0, breaker_threshold=3, breaker_cooldown_s=30)
    for _ in range(3):
        with pytest.raises(ProviderHTTPError):
            await client.request_json("POST", "/chat/completions", json={})
    assert state(client) == "open" and client.stats["breaker_opened"] == 1
    with pytest.raises(ProviderUnavailable):
        await client.request_json("POST", "/chat/completions", json={})
    assert fake.requests["chat"] == 3 and client.stats["rejected"] == 1  # no request sent

    clock.now += 31  # cool-down over: one probe; it fails, so the breaker re-opens
    with pytest.raises(ProviderHTTPError):
        await client.request_json("POST", "/chat/completions", json={})
    assert state(client) == "open" and fake.requests["chat"] == 4
    assert client.stats["breaker_opened"] == 2

    del fake.outage["chat"]
    clock.now += 31  # the next probe succeeds and closes the breaker
    await client.request_json("POST", "/chat/completions", json={})
    assert state(client) == "closed" and client.stats["breaker_closed"] == 1


async def test_half_open_allows_a_single_probe(
    fake: FakeOpenAI, make_client: MakeClient, clock: Clock
) -> None:
    client = make_client("llm", max_retries=0, breaker_threshold=1, breaker_cooldown_s=5)
    fake.fail("chat", Fault("status", status=500))
    with pytest.raises(ProviderHTTPError):
        await client.request_json("POST", "/chat/completions", json={})
    clock.now += 6
    fake.fail("chat", Fault("slow_first_byte", delay=0.2))
    probe = asyncio.create_task(client.request_json("POST", "/chat/completions", json={}))
    await fake.wait_requests("chat", 2)  # the half-open probe has reached the provider
    with pytest.raises(ProviderUnavailable):
        await client.request_json("POST", "/chat/completions", json={})
    await probe
    assert state(client) == "closed" and fake.requests["chat"] == 2


async def test_concurrency_limit_holds(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """Real time here: waiters queue behind real requests (a fake clock's instant sleep
    would end their queue time at once)."""
    config = ProviderConfig(role="llm", base_url=fake.base_url, api_key=KEY, model="gpt",
                            max_concurrency=2)
    client = ProviderClient(config, session)
    fake.fail("chat", *[Fault("slow_first_byte", delay=0.1)] * 6)
    await asyncio.gather(*(
        client.request_json("POST", "/chat/completions", json={}) for _ in range(6)
    ))
    assert fake.requests["chat"] == 6 and fake.max_active == 2 and client.in_flight == 0


async def test_hang_times_out(fake: FakeOpenAI, make_client: MakeClient) -> None:
    fake.outage["chat"] = Fault("hang")
    client = make_client("llm", timeout_read_s=0.2, max_retries=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeout):
        await client.request_json("POST", "/chat/completions", json={})
    assert loop.time() - started < 2
    assert fake.requests["chat"] == 2 and client.stats["timeouts"] == 2


@pytest.mark.parametrize("kind", ["malformed_json", "wrong_content_type"])
async def test_bad_response(fake: FakeOpenAI, make_client: MakeClient, kind: str) -> None:
    fake.fail("chat", Fault(kind))  # type: ignore[arg-type]
    client = make_client("llm")
    with pytest.raises(ProviderBadResponse):
        await client.request_json("POST", "/chat/completions", json={})
    assert fake.requests["chat"] == 1 and client.breaker.failures == 1
    assert client.stats["failed_bad_response"] == 1


# --- STT ------------------------------------------------------------------------------

async def test_stt_round_trip(fake: FakeOpenAI, make_client: MakeClient) -> None:
    fake.transcripts.append(" billing ")
    rec = OpenAIRecognizer(make_client("stt"))
    utt = await rec.start(Grammar(phrases=("billing", "sales")))
    utt.feed(SPEECH_16K[:4000])
    utt.feed(SPEECH_16K[4000:])
    result = await utt.finish()
    assert result.text == "billing" and result.engine == "openai:whisper-1"
    assert result.audio_seconds == pytest.approx(0.25)
    assert isinstance(result.extra["latency_ms"], float)
    form = fake.bodies["transcriptions"][0]
    assert (form["model"], form["language"], form["response_format"]) == (
        "whisper-1", "en", "json")
    assert "billing" in form["prompt"] and "sales" in form["prompt"]
    with wave.open(io.BytesIO(form["file"])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.readframes(w.getnframes()) == SPEECH_16K


async def test_stt_retry_resends_the_multipart_body(
    fake: FakeOpenAI, make_client: MakeClient
) -> None:
    fake.fail("transcriptions", Fault("status", status=500))
    rec = OpenAIRecognizer(make_client("stt"))
    utt = await rec.start(None)
    utt.feed(SPEECH_16K)
    assert (await utt.finish()).text == "hello world"
    assert fake.requests["transcriptions"] == 2
    assert "prompt" not in fake.bodies["transcriptions"][1]
    assert fake.bodies["transcriptions"][1]["file"] == fake.bodies["transcriptions"][0]["file"]


# --- TTS ------------------------------------------------------------------------------

def test_speed_mapping() -> None:
    assert speed_for_rate(None) == 1.0 and speed_for_rate(175) == 1.0
    assert speed_for_rate(350) == 2.0 and speed_for_rate(10) == 0.25
    assert speed_for_rate(10_000) == 4.0


async def test_tts_streams_before_response_completes(
    fake: FakeOpenAI, make_client: MakeClient
) -> None:
    pcm = tone_pcm(0.5)
    fake.speech_pcm = pcm
    fake.speech_hold = asyncio.Event()
    synth = OpenAISynthesizer(make_client("tts"))
    stream = synth.synthesize("Hello there", rate=350)
    first, rate = await asyncio.wait_for(anext(stream), 2)
    assert rate == 24000 and first and fake.speech_finished == 0  # server still sending
    fake.speech_hold.set()
    rest = [chunk async for chunk, _ in stream]
    assert first + b"".join(rest) == pcm and fake.speech_finished == 1
    body = fake.bodies["speech"][0]
    assert body == {"model": "tts-1", "voice": "alloy", "input": "Hello there", "speed": 2.0,
                    "response_format": "pcm"}


async def test_tts_carries_odd_bytes(fake: FakeOpenAI, make_client: MakeClient) -> None:
    pcm = tone_pcm(0.1)
    fake.speech_pcm = pcm
    fake.speech_chunk_sizes = [1001, 3, 777]
    fake.speech_chunk_delay = 0.002  # separate network chunks, so the split really happens
    synth = OpenAISynthesizer(make_client("tts"))
    chunks = [chunk async for chunk, _ in synth.synthesize("x")]
    assert all(len(c) % 2 == 0 for c in chunks) and b"".join(chunks) == pcm
    assert len(chunks) > 1


# --- fallback -------------------------------------------------------------------------

class FakeEmbeddedRecognizer:
    name = "embedded"

    def __init__(self) -> None:
        self.audio = b""

    async def start(self, grammar: Grammar | None) -> FakeEmbeddedRecognizer:
        return self

    def feed(self, pcm16_16k: bytes) -> None:
        self.audio += pcm16_16k

    async def finish(self) -> Recognition:
        return Recognition(text="embedded result", engine=self.name,
                           audio_seconds=len(self.audio) / 32000)

    async def cancel(self) -> None:
        pass


class FakeEmbeddedSynthesizer:
    name = "embedded"

    async def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncIterator[tuple[bytes, int]]:
        yield b"\x01\x00" * 10, 22050


class BreaksMidStream:
    name = "remote"

    async def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncIterator[tuple[bytes, int]]:
        yield b"\x00\x00" * 10, 24000
        raise ProviderTimeout("tts:test", "speech stream stalled")


async def test_fallback_recognizer_on_outage(fake: FakeOpenAI, make_client: MakeClient) -> None:
    fake.outage["transcriptions"] = Fault("status", status=503)
    embedded = FakeEmbeddedRecognizer()
    rec = FallbackRecognizer(OpenAIRecognizer(make_client("stt", max_retries=0)), embedded)
    utt = await rec.start(Grammar(phrases=("yes", "no")))
    utt.feed(SPEECH_16K)
    result = await utt.finish()
    assert result.text == "embedded result" and embedded.audio == SPEECH_16K
    assert result.extra["fallback_from"] == "openai:whisper-1"
    assert rec.stats["fallbacks"] == 1

    del fake.outage["transcriptions"]
    utt = await rec.start(None)
    utt.feed(SPEECH_16K)
    assert (await utt.finish()).engine == "openai:whisper-1"
    assert rec.stats["fallbacks"] == 1


async def test_fallback_recognizer_on_timeout(fake: FakeOpenAI, make_client: MakeClient) -> None:
    fake.outage["transcriptions"] = Fault("hang")
    rec = FallbackRecognizer(
        OpenAIRecognizer(make_client("stt")), FakeEmbeddedRecognizer(), timeout_s=0.2
    )
    utt = await rec.start(None)
    utt.feed(SPEECH_16K)
    assert (await asyncio.wait_for(utt.finish(), 2)).engine == "embedded"


async def test_fallback_synthesizer_on_outage(fake: FakeOpenAI, make_client: MakeClient) -> None:
    fake.outage["speech"] = Fault("reset")
    synth = FallbackSynthesizer(
        OpenAISynthesizer(make_client("tts", max_retries=1)), FakeEmbeddedSynthesizer()
    )
    chunks = [c async for c in synth.synthesize("hi", voice="alloy")]
    assert chunks == [(b"\x01\x00" * 10, 22050)] and synth.stats["fallbacks"] == 1
    assert fake.requests["speech"] == 2


async def test_fallback_synthesizer_mid_stream_failure_ends_prompt() -> None:
    synth = FallbackSynthesizer(BreaksMidStream(), FakeEmbeddedSynthesizer())
    chunks = [c async for c in synth.synthesize("hi")]
    assert chunks == [(b"\x00\x00" * 10, 24000)] and synth.stats["truncated"] == 1


# --- the fake's chat completions (for the LLM tests that build on it) -----------------

async def test_fake_chat_stream_splits_tool_calls(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    fake.chat_replies.append(ChatReply(content="One moment.",
                                       tool_calls=[ToolCall("lookup", '{"order": 1234}')]))
    async with session.post(f"{fake.base_url}/chat/completions",
                            json={"model": "m", "stream": True, "messages": []}) as resp:
        assert resp.content_type == "text/event-stream"
        lines = [line.decode().strip() async for line in resp.content]
    events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                      if c["choices"])
    args = [d["function"]["arguments"] for c in chunks if c["choices"]
            for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert content == "One moment." and "".join(args) == '{"order": 1234}'
    assert len([a for a in args if a]) > 1  # really split across chunks
    assert chunks[-1]["usage"]["total_tokens"] == 15 and chunks[-1]["choices"] == []
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"

    async with session.post(f"{fake.base_url}/chat/completions",
                            json={"messages": [{"role": "user", "content": "hi"}]}) as resp:
        body = await resp.json()
    assert body["choices"][0]["message"]["content"] == "echo: hi"
