"""espeak-ng synthesizer: real library, no mocks (synthesis runs at hundreds of times real time)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from ivr.speech.espeak import EspeakError, EspeakSynthesizer, synthesize_blocking

LONG_TEXT = " ".join(f"This is sentence number {i} of a long prompt." for i in range(200))


async def collect(synth: EspeakSynthesizer, text: str, **kwargs: object) -> tuple[bytes, int, int]:
    chunks: list[bytes] = []
    rates: set[int] = set()
    async for chunk, rate in synth.synthesize(text, **kwargs):  # type: ignore[arg-type]
        chunks.append(chunk)
        rates.add(rate)
    assert len(rates) == 1
    return b"".join(chunks), rates.pop(), len(chunks)


def seconds(pcm: bytes, rate: int) -> float:
    return len(pcm) / 2 / rate


async def test_hello_world_is_plausible_speech() -> None:
    synth = EspeakSynthesizer()
    assert synth.name == "espeak-ng"
    rate = await synth.warm_up()
    pcm, reported, _ = await collect(synth, "hello world")
    assert reported == rate == 22050
    assert len(pcm) % 2 == 0
    assert 0.5 <= seconds(pcm, rate) <= 3.0
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    assert np.sqrt(np.mean(samples**2)) > 300  # audible, not silence


async def test_first_chunk_arrives_early() -> None:
    synth = EspeakSynthesizer()
    await synth.warm_up()
    start = time.perf_counter()
    gen = synth.synthesize(LONG_TEXT)
    first, _ = await anext(gen)
    latency = time.perf_counter() - start
    rest = b"".join([chunk async for chunk, _ in gen])
    assert latency < 0.2
    assert 0 < len(first) < len(rest) / 10  # streamed as produced, not one blob at the end


async def test_voice_and_rate_change_the_output() -> None:
    synth = EspeakSynthesizer(voice="en-us", rate=175)
    text = "thank you for calling, how can I help you today"
    base, rate, _ = await collect(synth, text)
    fast, _, _ = await collect(synth, text, rate=320)
    slow, _, _ = await collect(synth, text, rate=100)
    assert seconds(fast, rate) < 0.75 * seconds(base, rate)
    assert seconds(slow, rate) > 1.3 * seconds(base, rate)

    def spectrum_centroid(pcm: bytes) -> float:
        x = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
        mag = np.abs(np.fft.rfft(x))
        freqs = np.fft.rfftfreq(len(x), 1 / rate)
        return float((mag * freqs).sum() / mag.sum())

    female, _, _ = await collect(synth, text, voice="en+f3")
    assert spectrum_centroid(female) > 1.1 * spectrum_centroid(base)
    # Language codes that are not espeak-ng voice names still resolve.
    british, _, _ = await collect(synth, text, voice="en-gb")
    assert british and british != base
    # Constructor defaults apply when no per-call arguments are given.
    quick = EspeakSynthesizer(rate=320)
    assert seconds((await collect(quick, text))[0], rate) < 0.75 * seconds(base, rate)


async def test_unknown_voice_raises() -> None:
    synth = EspeakSynthesizer()
    with pytest.raises(EspeakError, match="unknown espeak-ng voice"):
        await collect(synth, "hello", voice="no-such-voice")
    pcm, _, _ = await collect(synth, "hello")  # the engine is still usable
    assert pcm


async def test_aclose_stops_synthesis_early() -> None:
    synth = EspeakSynthesizer()
    await synth.warm_up()
    start = time.perf_counter()
    full, rate = synth.synthesize_blocking(LONG_TEXT)
    full_seconds = time.perf_counter() - start
    assert seconds(full, rate) > 300

    start = time.perf_counter()
    gen = synth.synthesize(LONG_TEXT)
    received = 0
    async for chunk, _ in gen:
        received += len(chunk)
        break
    await gen.aclose()
    # The engine is free again almost at once: the running synthesis was aborted rather
    # than finished in the background.
    pcm, _ = await asyncio.to_thread(synthesize_blocking, "hi")
    assert pcm
    assert time.perf_counter() - start < full_seconds / 3
    assert received < len(full)


async def test_cancelled_consumer_aborts_synthesis() -> None:
    synth = EspeakSynthesizer()
    await synth.warm_up()

    async def consume() -> None:
        async for _ in synth.synthesize(LONG_TEXT):
            await asyncio.sleep(1)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    start = time.perf_counter()
    pcm, _, _ = await collect(synth, "ok")
    assert pcm
    assert time.perf_counter() - start < 0.5


async def test_concurrent_calls_serialize_without_corruption() -> None:
    synth = EspeakSynthesizer()
    texts = ["yes", "please hold while I transfer your call to the billing department", "no"]
    voices = {"yes": "en-us", "no": "en+f3"}
    reference = {
        t: seconds((await collect(synth, t, voice=voices.get(t, "en-us")))[0], 22050) for t in texts
    }

    async def one(text: str) -> tuple[str, bytes]:
        pcm, _, _ = await collect(synth, text, voice=voices.get(text, "en-us"))
        return text, pcm

    results = await asyncio.gather(*(one(t) for t in texts * 4))
    for text, pcm in results:
        # espeak-ng output varies slightly between runs; interleaved chunks would not.
        assert seconds(pcm, 22050) == pytest.approx(reference[text], rel=0.05)


async def test_synthesis_does_not_block_the_loop() -> None:
    synth = EspeakSynthesizer()
    await synth.warm_up()
    lags: list[float] = []
    done = asyncio.Event()

    async def measure() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - start - 0.005)

    probe = asyncio.create_task(measure())
    await asyncio.sleep(0.02)
    pcm, _, _ = await collect(synth, LONG_TEXT)
    done.set()
    await probe
    assert seconds(pcm, 22050) > 300
    assert len(lags) > 5
    assert max(lags) < 0.05
