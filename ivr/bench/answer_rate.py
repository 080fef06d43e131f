"""`ivr bench recognizer --rate R --seconds S`: recognition throughput when callers answer
at once.

R callers per second start answering, for S seconds: each speaks a short grammar answer
(a menu word, espeak voices), fed in 20 ms pieces in real time as a call feeds it, and
asks for the result at the end of its speech, as the endpointer does. Printed: how many
answers were recognized (and right), utterances recognized per CPU-second of the
recognizer workers (their utime + stime from /proc, all of it: decoding, reading, idle
polling), end-of-speech → result p50/p95/p99, how many answers the partial hypothesis
already had at the end of speech (an utterance waiting for a slot has none), and the
workers' RSS. The pool runs with the
server's defaults (`IVR_RECOGNIZER_WAIT_MS`: an answer that waits longer for a slot is a
no-match); `--slots 1` is the one-utterance-per-worker pool that came before issue 12.

Measured (2 cores shared with other work, 20 callers/s for 10 s, 2 workers): with 8 slots
per worker, 200/200 right, 58-66 utterances per worker CPU-second, end of speech → result
p50 2-4 ms, p95 6-9 ms, p99 9-18 ms, every partial ready at end of speech, RSS 190 MB per
worker; with 1 slot, p95 64-76 ms, p99 66-82 ms, 66-71 per CPU-second (a queued answer is
decoded in one go after it ends: no partial hypotheses to compute), only 150/200 partials
ready, 135 MB. 4 slots: p95 6 ms, 159 MB; 16: p95 10 ms, 222 MB (a used slot costs a
~6 MB decoder plus its grammars). At 50 callers/s: p95 29 ms (8 slots) vs 191 ms (1).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Final

import numpy as np

from ivr.bench.recognizer import MENU, PIECE, speech
from ivr.config import Settings
from ivr.speech.sphinx.pool import RecognizerPool
from ivr.speech.sphinx.utterance import RecognitionError

__all__ = ["answer_rate_main"]

VOICES: Final = ("en-us", "en-us+m3", "en-gb")
_TICKS: Final = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class _Answer:
    expected: str
    heard: str | None = None  # None: failed (no slot in time, worker died, ...)
    latency: float = 0.0  # end of speech -> result
    heard_early: bool = False  # the partial hypothesis was the answer at end of speech
    error: str = ""


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def _caller(pool: RecognizerPool, start_at: float, phrase: str, pcm: bytes) -> _Answer:
    await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    answer = _Answer(phrase)
    utterance = await pool.start(MENU)
    t0 = time.perf_counter()
    for n, i in enumerate(range(0, len(pcm), PIECE)):
        utterance.feed(pcm[i : i + PIECE])
        await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 - time.perf_counter()))
    end_of_speech = time.perf_counter()
    answer.heard_early = utterance.partial() == phrase
    try:
        result = await utterance.finish()
    except RecognitionError as exc:
        answer.error = str(exc)
        return answer
    answer.latency = time.perf_counter() - end_of_speech
    answer.heard = result.text
    return answer


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.0f}" if values else "n/a"


async def answer_rate_main(
    rate: float, seconds: float, *, workers: int = 2, slots: int | None = None,
    sched_idle: bool = True,
) -> int:
    settings = Settings.from_env({})
    slots = settings.recognizer_slots if slots is None else slots
    clips = [(p, speech(p.lower(), v)) for v in VOICES for p in MENU.phrases]
    mean_audio = sum(len(pcm) for _, pcm in clips) / len(clips) / 32000
    callers = round(rate * seconds)
    async with RecognizerPool(
        workers, slots=slots, sched_idle=sched_idle, timeout=30,
        max_wait=settings.recognizer_wait_ms / 1000, max_hold=settings.recognizer_hold_ms / 1000,
    ) as pool:
        warm = await pool.start(MENU)  # each worker compiles the menu grammar once anyway
        warm.feed(clips[0][1])
        await warm.finish()
        pids = pool.worker_pids
        cpu0 = {pid: _cpu_seconds(pid) for pid in pids}
        wall0 = time.perf_counter()
        answers = await asyncio.gather(*(
            _caller(pool, wall0 + 0.5 + i / rate, *clips[i % len(clips)]) for i in range(callers)
        ))
        wall = time.perf_counter() - wall0
        cpu = sum(_cpu_seconds(pid) - cpu0.get(pid, 0.0) for pid in pool.worker_pids)
        respawns = pool.stats["respawns"]
        rss = [_rss_mb(pid) for pid in pool.worker_pids]
    recognized = [a for a in answers if a.heard is not None]
    right = sum(1 for a in recognized if a.heard == a.expected)
    failed = [a for a in answers if a.heard is None]
    latencies = [a.latency for a in recognized]
    print(f"{callers} callers, {rate:g}/s for {seconds:g} s, each a menu answer of "
          f"~{mean_audio:.1f} s fed in 20 ms pieces in real time; {workers} workers x "
          f"{slots} slot{'s' if slots != 1 else ''}")
    print(f"  recognized {len(recognized)}/{callers} ({right} right), failed {len(failed)}"
          + (f" (e.g. {failed[0].error})" if failed else ""))
    per_cpu = f"{len(recognized) / cpu:.1f}" if cpu > 0 else "n/a"
    print(f"  worker CPU {cpu:.2f} s over {wall:.1f} s: {per_cpu} utterances recognized "
          f"per CPU-second")
    print(f"  end of speech -> result: p50 {_pct(latencies, 50)} ms, p95 {_pct(latencies, 95)} "
          f"ms, p99 {_pct(latencies, 99)} ms, max {_pct(latencies, 100)} ms")
    early = sum(1 for a in answers if a.heard_early)
    print(f"  partial hypothesis already the answer at end of speech (what lets grammar-aware "
          f"endpointing end the turn early): {early}/{callers}")
    print(f"  worker RSS {', '.join(f'{r:.0f}' for r in rss)} MB; respawns {respawns}")
    flags = f"--rate {rate:g} --seconds {seconds:g} --workers {workers} --slots {slots}"
    print(f"reproduce: ivr bench recognizer {flags}" + ("" if sched_idle else " --no-sched-idle"))
    return 0
