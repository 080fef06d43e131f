"""`ivr bench recognizer`: does decoding leave the event loop free, and how soon after
the end of speech is a result ready?

Loop lag: several free-speech utterances (language model, the heaviest search) decoded
at once by the worker pool while a probe measures how late a 5 ms sleep wakes up; the
audio is fed all at once, or in 20 ms pieces in real time as a call feeds it. The
target (p99 < 5 ms, measured here on an otherwise idle machine) is what keeps outbound
audio paced while callers speak; `--no-sched-idle` shows what SCHED_IDLE buys (see
`ivr.speech.sphinx.worker.lower_priority`).

Result latency: an answer streamed in real time, then `finish()`: the time from the end of
speech to the result, for a menu answer with the step's grammar and for free speech with
the language model.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import numpy as np
import soxr

from ivr.grammar import Grammar
from ivr.speech.base import Recognition
from ivr.speech.espeak import synthesize_blocking
from ivr.speech.sphinx.pool import RecognizerPool

__all__ = ["recognizer_main"]

SENTENCES: Final = (
    "i would like to speak to someone about my bill please",
    "the quick brown fox jumps over the lazy dog",
    "please tell me the balance of my checking account",
    "my order has not arrived and i would like a refund",
)
MENU: Final = Grammar(("Sales", "Support", "Billing", "Operator"))
PIECE: Final = 640  # 20 ms of 16 kHz PCM16, as the call session feeds it
PROBE_S: Final = 0.005


def speech(text: str, voice: str = "en-us") -> bytes:
    """espeak speech at 16 kHz, framed by 300 ms of faint noise as an endpointer leaves it."""
    pcm, rate = synthesize_blocking(text, voice)
    samples = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 16000)
    noise = np.random.default_rng(len(text)).normal(0, 30, 4800).astype(np.int16)
    return np.concatenate([noise, samples.astype(np.int16), noise]).tobytes()


async def recognize(
    pool: RecognizerPool, pcm: bytes, grammar: Grammar | None, realtime: bool
) -> Recognition:
    """One utterance: fed all at once, or in 20 ms pieces at the pace a caller speaks."""
    utterance = await pool.start(grammar)
    if realtime:
        t0 = time.perf_counter()
        for n, i in enumerate(range(0, len(pcm), PIECE)):
            utterance.feed(pcm[i : i + PIECE])
            await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 - time.perf_counter()))
    else:
        utterance.feed(pcm)
    return await utterance.finish()


async def _loop_lag(pool: RecognizerPool, audio: list[bytes], realtime: bool) -> str:
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            lags.append(time.perf_counter() - start - PROBE_S)

    prober = asyncio.create_task(probe())
    start = time.perf_counter()
    try:
        results = await asyncio.gather(*(recognize(pool, a, None, realtime) for a in audio))
    finally:
        done.set()
        await prober
    elapsed = time.perf_counter() - start
    ms = np.array(lags) * 1000
    return (
        f"loop lag ({'realtime 20 ms' if realtime else 'all at once'}): {len(lags)} samples "
        f"over {elapsed:.2f} s, median {np.median(ms):.2f} ms, "
        f"p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms; "
        f"decode cpu {[round(r.cpu_seconds, 2) for r in results]} s"
    )


async def _latency(pool: RecognizerPool, text: str, grammar: Grammar | None) -> str:
    pcm = speech(text)
    result = await recognize(pool, pcm, grammar, realtime=True)
    latency = result.extra.get("latency_seconds")
    ms = f"{latency * 1000:.0f} ms" if isinstance(latency, float) else "n/a"
    what = "menu grammar" if grammar is not None else "language model"
    return (f"result after end of speech ({what}, {len(pcm) / 32000:.1f} s streamed in real "
            f"time): {ms}, heard {result.text!r}")


async def recognizer_main(workers: int = 2, utterances: int = 4, sched_idle: bool = True) -> int:
    audio = [speech(SENTENCES[i % len(SENTENCES)]) for i in range(utterances)]
    async with RecognizerPool(workers, timeout=30, sched_idle=sched_idle) as pool:
        plural = "" if workers == 1 else "s"
        print(f"{utterances} language-model utterances on {workers} worker{plural} "
              f"({'SCHED_IDLE + nice 10' if sched_idle else 'nice 10 only'})")
        for realtime in (False, True):
            print("  " + await _loop_lag(pool, audio, realtime))
        print("  " + await _latency(pool, "billing", MENU))
        print("  " + await _latency(pool, SENTENCES[0], None))
    flags = f"--workers {workers} --utterances {utterances}"
    print(f"reproduce: ivr bench recognizer {flags}" + ("" if sched_idle else " --no-sched-idle"))
    return 0
