"""The provider client under its adaptive limits, against `tests.fake_openai`: 429s halve
the limit and wait Retry-After, RPM counts retries, a refusal is not a provider failure
and is served by the embedded engine; and the 429 storm of issue 13's acceptance."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from ivr.config import ProviderConfig
from ivr.llm.client import ChatClient
from ivr.providers import ProviderBusy, ProviderClient
from ivr.providers.limiter import INCREASE_AFTER, WINDOW_S, estimate_tokens
from ivr.speech.base import Recognition
from ivr.speech.fallback import FallbackRecognizer, FallbackSynthesizer
from ivr.speech.openai_stt import OpenAIRecognizer
from ivr.speech.openai_tts import OpenAISynthesizer
from tests.component.test_providers import (
    Clock,
    FakeEmbeddedRecognizer,
    FakeEmbeddedSynthesizer,
)
from tests.fake_openai import FakeOpenAI, Fault, start_fake_openai, tone_pcm

SPEECH_16K = tone_pcm(0.25, rate=16000)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with start_fake_openai() as f:
        f.speech_pcm = tone_pcm(0.02)
        yield f


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def config(fake: FakeOpenAI, role: str, **overrides: Any) -> ProviderConfig:
    base = ProviderConfig(
        role=role,  # type: ignore[arg-type]
        base_url=fake.base_url, api_key="sk-test",
        model={"stt": "whisper-1", "tts": "tts-1"}.get(role, "gpt-test"),
        voice="alloy" if role == "tts" else None, timeout_read_s=2.0,
    )
    return replace(base, **overrides)


def fake_time(
    fake: FakeOpenAI, session: aiohttp.ClientSession, role: str, **overrides: Any
) -> tuple[ProviderClient, Clock]:
    """A client on a fake clock whose sleeps are recorded and pass at once."""
    clock = Clock()
    client = ProviderClient(config(fake, role, **overrides), session, clock=clock,
                            sleep=clock.sleep)
    return client, clock


async def test_a_429_halves_the_limit_and_the_retry_waits_retry_after(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    client, clock = fake_time(fake, session, "llm", max_concurrency=8)
    fake.fail("chat", Fault("status", status=429, retry_after="0.2"))
    await client.request_json("POST", "/chat/completions", json={})
    assert clock.sleeps == [0.2] and fake.requests["chat"] == 2
    assert client.limiter.limit == 4 and client.breaker.failures == 0


async def test_rpm_counts_retries_and_a_full_window_is_busy_not_a_failure(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """RPM 2: one request retried once fills the window; the next is refused before it
    is sent, and neither the breaker nor the failure count hears of it."""
    client, _ = fake_time(fake, session, "llm", rpm=2, breaker_threshold=1)
    fake.fail("chat", Fault("status", status=500))
    await client.request_json("POST", "/chat/completions", json={})
    with pytest.raises(ProviderBusy, match="rate window"):
        await client.request_json("POST", "/chat/completions", json={})
    assert fake.requests["chat"] == 2
    assert client.stats["busy"] == 1 and client.stats["failures"] == 0
    assert client.breaker.state == "closed" and client.limiter.rejected == 1


async def test_chat_requests_spend_their_estimated_tokens(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """The chat client passes its prompt's estimate: TPM of one prompt and a bit admits
    the first, refuses the second within the same minute."""
    messages = [{"role": "user", "content": "x" * 400}]
    prompt = {"model": "gpt-test", "messages": messages, "stream": True,
              "stream_options": {"include_usage": True}}
    client, _ = fake_time(fake, session, "llm", tpm=estimate_tokens(prompt) + 10)
    chat = ChatClient(client, "gpt-test")
    assert [d async for d in chat.stream(messages)]
    with pytest.raises(ProviderBusy):
        assert [d async for d in chat.stream(messages)]
    assert fake.requests["chat"] == 1


async def test_a_busy_synthesis_is_spoken_by_the_embedded_engine(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """Concurrency 1 with a prompt streaming: the next one cannot start within the queue
    time (a fake clock: at once), so the embedded voice speaks it; the stream in flight
    plays to its end."""
    client, _ = fake_time(fake, session, "tts", max_concurrency=1)
    synth = FallbackSynthesizer(OpenAISynthesizer(client), FakeEmbeddedSynthesizer())
    fake.speech_pcm, fake.speech_hold = tone_pcm(0.5), asyncio.Event()  # several chunks
    first = synth.synthesize("first")
    head = await anext(first)
    assert client.in_flight == 1 and head[1] == 24000
    second = [c async for c in synth.synthesize("second")]
    assert second == [(b"\x01\x00" * 10, 22050)] and synth.stats["fallbacks"] == 1
    fake.speech_hold.set()
    rest = [c async for c in first]
    assert rest and client.in_flight == 0
    assert client.breaker.failures == 0 and fake.requests["speech"] == 1


# --- the acceptance: a 429 storm ------------------------------------------------------

CEILING = 4
# Room in one minute for the storm's attempts (8 calls, 3 tries at most), the
# (CEILING - 1) * INCREASE_AFTER successes of the recovery and as many again at the
# ceiling (where a limit growing past it would show), before the window fills.
RPM = 130


def most_in_a_window(arrivals: list[float]) -> int:
    return max((sum(1 for t in arrivals if s <= t < s + WINDOW_S) for s in arrivals), default=0)


async def test_429_storm_halves_recovers_keeps_rpm_and_every_call_is_answered(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    """Issue 13's acceptance. Both speech providers answer 429 (Retry-After 0.2 s) while
    calls keep coming: their limits halve, and every call still gets its recognition and
    its prompt (from the fallback). After the storm the limits climb back to
    IVR_{ROLE}_CONCURRENCY and no further; the RPM limit is never exceeded in any 60 s
    window though the calls ask for more, the excess served by the fallback too. Real
    time: about two seconds."""
    limits = {"max_concurrency": CEILING, "rpm": RPM, "queue_ms": 300, "max_retries": 2,
              "backoff_base_s": 0.05, "breaker_threshold": 10_000}
    stt = ProviderClient(config(fake, "stt", **limits), session)
    tts = ProviderClient(config(fake, "tts", **limits), session)
    recognizer = FallbackRecognizer(OpenAIRecognizer(stt), FakeEmbeddedRecognizer())
    synthesizer = FallbackSynthesizer(OpenAISynthesizer(tts), FakeEmbeddedSynthesizer())
    seen: list[int] = []

    async def call() -> tuple[Recognition, list[tuple[bytes, int]]]:
        """One caller's turn: the answer recognized, the reply spoken."""
        utterance = await recognizer.start(None)
        utterance.feed(SPEECH_16K)
        heard = await utterance.finish()
        spoken = [chunk async for chunk in synthesizer.synthesize(f"You said {heard.text}")]
        seen.extend((stt.limiter.limit, tts.limiter.limit))
        return heard, spoken

    async def wave(n: int = 8) -> list[tuple[Recognition, list[tuple[bytes, int]]]]:
        return await asyncio.gather(*(call() for _ in range(n)))

    storm = Fault("status", status=429, retry_after="0.2")
    fake.outage.update(transcriptions=storm, speech=storm)
    answered = await wave()
    assert {heard.engine for heard, _ in answered} == {"embedded"}
    assert stt.limiter.limit <= CEILING // 2 and tts.limiter.limit <= CEILING // 2
    stormed = dict(fake.requests)

    fake.outage.clear()
    for _ in range(2 * (CEILING - 1) * INCREASE_AFTER // 8):
        answered += await wave()
        if stt.limiter.limit == tts.limiter.limit == CEILING:
            break
    assert stt.limiter.limit == tts.limiter.limit == CEILING
    assert any(heard.engine == "openai:whisper-1" for heard, _ in answered)
    while min(fake.requests["transcriptions"], fake.requests["speech"]) < RPM:
        answered += await wave()
        assert len(answered) < 40 * 8
    full = await wave()  # past RPM: refused at once, before sending; the fallback answers
    assert {heard.engine for heard, _ in full} == {"embedded"}
    answered += full

    assert max(seen) == CEILING
    for route in ("transcriptions", "speech"):
        assert stormed[route] > 8  # the storm was retried, not just failed once
        assert most_in_a_window(fake.arrivals[route]) <= RPM
    assert fake.requests["transcriptions"] == RPM and fake.requests["speech"] == RPM
    for heard, spoken in answered:  # every call: an answer heard and a reply spoken
        assert heard.text in ("hello world", "embedded result") and spoken
    assert stt.breaker.state == tts.breaker.state == "closed"
