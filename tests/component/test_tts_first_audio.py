"""A remote voice gets `first_audio_s` to start speaking; past it the embedded one speaks.

Against the local fake provider: a hung `/audio/speech`, a slow first byte, a quick one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from ivr.config import ProviderConfig
from ivr.providers.http import ProviderClient
from ivr.speech.cache import CachedSynthesis, SynthesisCache
from ivr.speech.fallback import FallbackSynthesizer
from ivr.speech.openai_tts import OpenAISynthesizer
from tests.fake_openai import FakeOpenAI, Fault, start_fake_openai

EMBEDDED_AUDIO = (b"\x01\x00" * 10, 22050)


class Embedded:
    name = "embedded"

    async def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncIterator[tuple[bytes, int]]:
        yield EMBEDDED_AUDIO


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with start_fake_openai() as f:
        yield f


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[ProviderClient]:
    # The read timeout and retries of a real configuration: a minute of silence without
    # the first-audio deadline.
    config = ProviderConfig(role="tts", base_url=fake.base_url, api_key="sk-test",
                            model="tts-1", voice="alloy", timeout_read_s=15.0, max_retries=3,
                            breaker_threshold=2)
    async with aiohttp.ClientSession() as session:
        yield ProviderClient(config, session)


def _synth(client: ProviderClient, first_audio_s: float) -> FallbackSynthesizer:
    return FallbackSynthesizer(OpenAISynthesizer(client), Embedded(),
                               first_audio_s=first_audio_s, on_abandon=client.breaker.failure)


async def _speak(synth: FallbackSynthesizer) -> list[tuple[bytes, int]]:
    return [chunk async for chunk in synth.synthesize("Thanks for calling.")]


async def test_a_hung_provider_is_abandoned_for_the_embedded_voice(
    fake: FakeOpenAI, client: ProviderClient
) -> None:
    """No audio within the deadline: the prompt is the embedded voice's, the request is
    dropped (its concurrency slot back) and the breaker counts a failure."""
    fake.outage["speech"] = Fault("hang")
    synth = _synth(client, 0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await _speak(synth) == [EMBEDDED_AUDIO]
    assert loop.time() - started < 1.0
    assert synth.stats["first_audio_timeouts"] == 1 and synth.stats["fallbacks"] == 1
    assert fake.requests["speech"] == 1  # abandoned, not retried
    assert client.breaker.failures == 1


async def test_the_breaker_opens_and_later_prompts_skip_the_provider(
    fake: FakeOpenAI, client: ProviderClient
) -> None:
    """Once the breaker has counted enough abandoned prompts the provider is not asked."""
    fake.outage["speech"] = Fault("hang")
    synth = _synth(client, 0.1)
    for _ in range(2):
        assert await _speak(synth) == [EMBEDDED_AUDIO]
    assert client.breaker.state == "open"
    assert await _speak(synth) == [EMBEDDED_AUDIO]
    assert fake.requests["speech"] == 2
    assert synth.stats["first_audio_timeouts"] == 2 and synth.stats["fallbacks"] == 3


async def test_a_first_byte_after_the_deadline_is_not_waited_for(
    fake: FakeOpenAI, client: ProviderClient
) -> None:
    fake.fail("speech", Fault("slow_first_byte", delay=2.0))
    synth = _synth(client, 0.2)
    assert await _speak(synth) == [EMBEDDED_AUDIO]
    assert synth.stats["first_audio_timeouts"] == 1


async def test_a_first_byte_within_the_deadline_keeps_the_remote_voice(
    fake: FakeOpenAI, client: ProviderClient
) -> None:
    """The deadline is on the first chunk only: the rest of the prompt may take longer."""
    fake.fail("speech", Fault("slow_first_byte", delay=0.05))
    synth = _synth(client, 2.0)
    chunks = await _speak(synth)
    assert chunks and all(rate == 24000 for _, rate in chunks)
    assert synth.stats["fallbacks"] == 0 and client.breaker.failures == 0


async def test_a_stand_in_voice_is_never_cached_as_the_remote_one(
    fake: FakeOpenAI, client: ProviderClient
) -> None:
    """While the remote voice hangs the embedded one speaks, and its audio is not stored
    under the remote voice's key: once the provider answers, callers hear it again."""
    cached = CachedSynthesis(_synth(client, first_audio_s=0.2), SynthesisCache(None))
    fake.fail("speech", Fault("hang"))
    stand_in = await cached.ulaw("Thanks for calling.", "alloy", 170)
    assert stand_in and cached.stood_in == 1 and cached.synthesized == 0
    assert cached.cache.peek(cached.key("Thanks for calling.", "alloy", 170)) is None
    remote = await cached.ulaw("Thanks for calling.", "alloy", 170)  # the provider is back
    assert remote != stand_in and cached.synthesized == 1
    assert cached.cache.peek(cached.key("Thanks for calling.", "alloy", 170)) == remote
