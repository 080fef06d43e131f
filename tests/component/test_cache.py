"""Synthesis cache: byte-bounded LRU, disk persistence, single-flight synthesis, prewarm."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from ivr.audio.codec import ToUlaw8k
from ivr.flows.library import FlowLibrary
from ivr.flows.model import Flow
from ivr.flows.prompts import static_prompts
from ivr.server.prewarm import prewarm
from ivr.speech.cache import CachedSynthesis, CacheKey, SynthesisCache
from tests.conftest import ROOT

RATE = 22050
CHUNK_SAMPLES = 2205  # 100 ms, like espeak's callback granularity


def sine(seconds: float = 0.3, hz: float = 440.0) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * math.pi * hz * t) * 8000).astype(np.int16).tobytes()


class FakeSynth:
    """Counts calls; yields a short sine at 22050 Hz in 100 ms chunks.

    `gate`, when set, is awaited before every chunk so a test can hold synthesis open.
    """

    name = "fake"

    def __init__(self, seconds: float = 0.3) -> None:
        self.calls: list[str] = []
        self.pcm = sine(seconds)
        self.gate: asyncio.Event | None = None

    async def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncIterator[tuple[bytes, int]]:
        self.calls.append(text)
        step = CHUNK_SAMPLES * 2
        for i in range(0, len(self.pcm), step):
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
            yield self.pcm[i : i + step], RATE


class FailingSynth:
    name = "fake"  # same engine name: same keys as FakeSynth

    async def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncIterator[tuple[bytes, int]]:
        raise AssertionError(f"synthesizer called for {text!r}")
        yield b"", RATE  # pragma: no cover - makes this an async generator


def converted(pcm: bytes) -> bytes:
    """What the call path makes of `pcm` fed in the fake's chunks (soxr's streaming output
    differs from a one-shot conversion in the last bit here and there)."""
    conv = ToUlaw8k(RATE)
    step = CHUNK_SAMPLES * 2
    return b"".join(conv.push(pcm[i : i + step]) for i in range(0, len(pcm), step)) + conv.flush()


def key(text: str) -> CacheKey:
    return CacheKey("fake", "en-us", 165, text)


@pytest.fixture(scope="module")
def flows() -> dict[str, Flow]:
    library = FlowLibrary(ROOT / "flows", default="main_menu")
    library.load()
    return library.flows


# ------------------------------------------------------------------- cache


async def test_lru_is_bounded_in_bytes_and_evicts_least_recently_used() -> None:
    cache = SynthesisCache(None, max_bytes=1000)
    await cache.put(key("a"), b"a" * 400)
    await cache.put(key("b"), b"b" * 400)
    assert await cache.get(key("a")) == b"a" * 400  # a is now the most recent
    await cache.put(key("c"), b"c" * 400)  # 1200 > 1000: the oldest (b) goes
    assert cache.stats.bytes == 800 and cache.stats.evictions == 1
    assert await cache.get(key("b")) is None
    assert await cache.get(key("a")) is not None and await cache.get(key("c")) is not None
    await cache.put(key("d"), b"d" * 900)  # evicts until under the bound: a and c both
    assert cache.stats.bytes == 900 and cache.stats.evictions == 3 and len(cache) == 1
    await cache.put(key("huge"), b"h" * 1001)  # larger than the budget: not kept in memory
    assert await cache.get(key("huge")) is None and await cache.get(key("d")) is not None
    assert cache.stats.hits == 4 and cache.stats.misses == 2
    assert cache.hit_rate == pytest.approx(4 / 6)


def test_key_covers_engine_voice_rate_and_text() -> None:
    base = CacheKey("espeak-ng", "en-us", 165, "Hello.")
    variants = [
        CacheKey("other", "en-us", 165, "Hello."), CacheKey("espeak-ng", "en-gb", 165, "Hello."),
        CacheKey("espeak-ng", "en-us", 170, "Hello."), CacheKey("espeak-ng", "en-us", 165, "Hi."),
    ]
    assert len({base.digest, *(v.digest for v in variants)}) == 5
    assert base.digest == CacheKey("espeak-ng", "en-us", 165, "Hello.").digest
    assert len(base.digest) == 64


async def test_disk_entries_survive_a_restart(tmp_path: Path) -> None:
    first = CachedSynthesis(FakeSynth(), SynthesisCache(tmp_path / "cache"))
    audio = await first.ulaw("Thanks for calling.", "en-us", 165)
    assert audio and first.synthesized == 1
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".ulaw"  # no temp file left behind

    restarted = CachedSynthesis(FailingSynth(), SynthesisCache(tmp_path / "cache"))
    assert await restarted.ulaw("Thanks for calling.", "en-us", 165) == audio
    assert restarted.cache.stats.disk_hits == 1
    # Now in memory too: the next hit does not read the disk.
    assert await restarted.ulaw("Thanks for calling.", "en-us", 165) == audio
    assert restarted.cache.stats.disk_hits == 1 and restarted.cache.stats.hits == 2


async def test_memory_eviction_falls_back_to_disk(tmp_path: Path) -> None:
    cache = SynthesisCache(tmp_path, max_bytes=500)
    await cache.put(key("a"), b"a" * 400)
    await cache.put(key("b"), b"b" * 400)  # evicts a from memory only
    assert await cache.get(key("a")) == b"a" * 400
    assert cache.stats.disk_hits == 1


# --------------------------------------------------------------- synthesis


async def test_cached_audio_equals_one_shot_conversion() -> None:
    synth = FakeSynth()
    cached = CachedSynthesis(synth, SynthesisCache(None))
    assert await cached.ulaw("x", "en-us", 165) == converted(synth.pcm)


async def test_concurrent_requests_for_one_key_synthesize_once() -> None:
    synth = FakeSynth()
    cached = CachedSynthesis(synth, SynthesisCache(None))

    async def streamed() -> bytes:
        return b"".join([c async for c in cached.stream("Hello.", "en-us", 165)])

    results = await asyncio.gather(
        *(cached.ulaw("Hello.", "en-us", 165) for _ in range(5)), streamed(), streamed()
    )
    assert synth.calls == ["Hello."]
    assert len(set(results)) == 1 and results[0]
    assert cached.synthesized == 1 and cached.shared == 6


async def test_stream_yields_chunks_as_synthesized_then_stores() -> None:
    synth = FakeSynth(seconds=1.0)
    synth.gate = asyncio.Event()
    cache = SynthesisCache(None)
    cached = CachedSynthesis(synth, cache)
    stream = cached.stream("Long prompt.", "en-us", 165)
    synth.gate.set()
    first = await anext(stream)
    assert 0 < len(first) < 8000  # a part of the second of audio, not all of it
    assert cache.peek(key("Long prompt.")) is None  # not stored before the end
    rest = [c async for c in stream]
    assert len(rest) >= 2
    whole = first + b"".join(rest)
    assert cache.peek(key("Long prompt.")) == whole
    # A hit comes as one chunk, without the synthesizer.
    assert [c async for c in cached.stream("Long prompt.", "en-us", 165)] == [whole]
    assert synth.calls == ["Long prompt."]


async def test_cancelled_stream_stores_nothing_and_a_waiter_takes_over() -> None:
    synth = FakeSynth(seconds=1.0)
    synth.gate = asyncio.Event()
    synth.gate.set()
    cache = SynthesisCache(None)
    cached = CachedSynthesis(synth, cache)
    got_first = asyncio.Event()

    async def play() -> None:
        async for _ in cached.stream("Menu.", "en-us", 165):
            got_first.set()
            assert synth.gate is not None
            synth.gate.clear()  # hold synthesis open mid-prompt

    player = asyncio.create_task(play())
    await got_first.wait()
    waiter = asyncio.create_task(cached.ulaw("Menu.", "en-us", 165))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # waiting on the in-flight synthesis, not starting its own
    player.cancel()  # barge-in / hang-up mid-prompt
    with pytest.raises(asyncio.CancelledError):
        await player
    assert cache.peek(key("Menu.")) is None
    synth.gate.set()
    audio = await waiter  # the waiter synthesized it itself, completely
    assert audio == converted(synth.pcm)
    assert synth.calls == ["Menu.", "Menu."]
    assert cache.peek(key("Menu.")) == audio


async def test_cancelled_stream_alone_stores_nothing() -> None:
    synth = FakeSynth(seconds=1.0)
    cache = SynthesisCache(None)
    cached = CachedSynthesis(synth, cache)
    stream = cached.stream("Bye.", "en-us", 165)
    await anext(stream)
    await stream.aclose()
    assert cache.peek(key("Bye.")) is None and cached.synthesized == 0
    assert not cached._inflight


async def test_synthesis_failure_reaches_every_waiter_and_is_not_cached() -> None:
    cached = CachedSynthesis(FailingSynth(), SynthesisCache(None))
    results = await asyncio.gather(
        cached.ulaw("x", None, None), cached.ulaw("x", None, None), return_exceptions=True
    )
    assert all(isinstance(r, AssertionError) for r in results)
    assert cached.cache.stats.entries == 0 and not cached._inflight


# ----------------------------------------------------------------- prompts


def test_static_prompts_of_the_shipped_flows(flows: dict[str, Flow]) -> None:
    main = static_prompts(flows["main_menu"])
    assert main[0] == "Thanks for calling Acme."  # the greeting
    assert "Sorry, I didn't hear you. Say appointments, orders, or agent." in main  # no_input
    assert "Let me put you through to a person." in main  # transfer say
    assert "+15550100000" not in main  # the transfer number is not spoken
    dental = static_prompts(flows["dental_booking"])
    assert "Thank you for calling. Goodbye." in dental  # hangup words
    every = [t for f in flows.values() for t in static_prompts(f)]
    assert not any("{{" in t or "{%" in t for t in every)
    assert not any("spoken_date" in t for t in every)
    assert all(t == t.strip() and t for t in every)
    assert len(main) == len(set(main))


def VOICE(flow: Flow) -> tuple[str, int]:
    """Each flow's own voice, else en-us at 175 words a minute (as a call resolves it)."""
    v = flow.voice
    return (v.name if v and v.name else "en-us"), (v.rate if v and v.rate else 175)


async def test_prewarm_makes_the_greeting_a_hit_without_synthesis(
    flows: dict[str, Flow], tmp_path: Path
) -> None:
    synth = FakeSynth(seconds=0.05)
    cached = CachedSynthesis(synth, SynthesisCache(tmp_path))
    expected = len({(f.name, t) for f in flows.values() for t in static_prompts(f)})
    # Flows share prompts ("Thanks for calling Acme." in demo and main_menu) with the
    # same voice: those synthesize once.
    distinct = len({t for f in flows.values() for t in static_prompts(f)})
    count = await prewarm(flows.values(), cached, VOICE)
    assert count == distinct == len(synth.calls) and distinct <= expected
    assert await prewarm(flows.values(), cached, VOICE) == 0  # already cached
    assert cached.cache.stats.hits == cached.cache.stats.misses == 0  # prewarm is not traffic

    synth.calls.clear()
    voice = flows["main_menu"].voice
    assert voice is not None
    audio = await cached.ulaw("Thanks for calling Acme.", voice.name, voice.rate)
    assert audio and synth.calls == []
    assert cached.cache.stats.hits == 1 and cached.cache.hit_rate == 1.0

    # After a restart, prewarm reads the disk instead of synthesizing.
    again = CachedSynthesis(FailingSynth(), SynthesisCache(tmp_path))
    assert await prewarm(flows.values(), again, VOICE) == 0
    assert len(again.cache) == distinct
