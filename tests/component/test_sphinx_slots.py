"""Several utterances in one recognition worker at once (issue 12): each decoded as its
audio arrives, a stuck one cancelled inside the worker while the others go on, and a
worker's death failing every utterance it held."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from ivr.speech.base import partial_text
from ivr.speech.sphinx.pool import RecognizerPool
from ivr.speech.sphinx.utterance import RecognitionError, SphinxUtterance
from tests.component.test_sphinx import MENU, PIECE, SENTENCES, feed_all, speech


def feed_interleaved(pairs: list[tuple[SphinxUtterance, bytes]]) -> None:
    """20 ms of each utterance in turn, as overlapping calls feed them."""
    longest = max(len(audio) for _, audio in pairs)
    for i in range(0, longest, PIECE):
        for utterance, audio in pairs:
            utterance.feed(audio[i : i + PIECE])


async def test_overlapping_utterances_in_one_worker_each_get_their_own_result() -> None:
    """Four grammar answers and one free-speech utterance overlap in a single worker: each
    is decoded on its own decoder and each result (and partial) is its own."""
    phrases = ["Sales", "Support", "Billing", "Operator"]
    async with RecognizerPool(1, slots=5, timeout=20) as pool:
        (pid,) = pool.worker_pids
        answers = [await pool.start(MENU) for _ in phrases]
        free = await pool.start(None)
        assert pool.busy_slots == 5 and pool.busy_workers == 1 and pool.queued == 0
        feed_interleaved([(u, speech(p.lower())) for u, p in zip(answers, phrases, strict=True)]
                         + [(free, speech(SENTENCES[1]))])
        deadline = time.monotonic() + 15
        while [partial_text(u) for u in answers] != phrases:  # heard before the end
            assert time.monotonic() < deadline, [partial_text(u) for u in answers]
            await asyncio.sleep(0.02)
        results = await asyncio.gather(*(u.finish() for u in [*answers, free]))
        assert [r.text for r in results[:4]] == phrases
        assert len(results[4].text.split()) >= 2  # the language model's words
        assert pool.worker_pids == [pid] and pool.busy_slots == 0


async def test_a_worker_takes_one_free_speech_utterance_at_a_time() -> None:
    """Free speech needs the worker's one language-model decoder: a second waits for it
    (a grammar answer still gets a slot at once)."""
    async with RecognizerPool(1, slots=4, timeout=20) as pool:
        first = await pool.start(None)
        second = await pool.start(None)
        menu = await pool.start(MENU)
        assert pool.busy_slots == 2 and pool.queued == 1
        feed_all(menu, speech("billing"))
        assert (await menu.finish()).text == "Billing"
        feed_all(first, speech(SENTENCES[0]))
        assert (await first.finish()).text
        assert pool.queued == 0 and pool.busy_slots == 1  # the second took the freed decoder
        feed_all(second, speech(SENTENCES[2]))
        assert (await second.finish()).text


async def test_a_stuck_utterance_is_cancelled_inside_its_worker() -> None:
    """An utterance never finished nor cancelled (a leak) loses its slot after `max_hold`;
    the worker is not killed, and the utterance beside it in that worker completes."""
    async with RecognizerPool(1, slots=2, max_hold=0.5) as pool:
        (pid,) = pool.worker_pids
        leaked = await pool.start(MENU)
        feed_all(leaked, speech("sales"))
        pool.max_hold = None  # only the leaked utterance is bounded
        beside = await pool.start(MENU)
        assert pool.busy_slots == 2
        outcome = await asyncio.wait_for(asyncio.shield(leaked.outcome), 5)
        assert isinstance(outcome, RecognitionError)
        with pytest.raises(RecognitionError, match="held worker"):
            await leaked.finish()
        assert pool.busy_slots == 1
        feed_all(beside, speech("support"))
        assert (await beside.finish()).text == "Support"
        assert pool.stats["hold_cancels"] == 1
        assert pool.stats["hold_kills"] == 0 and pool.stats["respawns"] == 0
        assert pool.worker_pids == [pid]
        # The worker acknowledged the cancel, so it takes new work.
        again = await pool.start(MENU)
        feed_all(again, speech("billing"))
        assert (await again.finish()).text == "Billing"
        assert pool.worker_pids == [pid]


async def test_killing_a_worker_fails_every_utterance_it_held_at_once() -> None:
    """Three callers on one worker, the worker killed: all three fail together (their
    turns no-match) without waiting for a timeout, and the other worker's caller and the
    next callers are served."""
    async with RecognizerPool(2, slots=3, timeout=20) as pool:
        held = [await pool.start(MENU) for _ in range(6)]  # least-loaded: 3 on each worker
        by_worker = {pid: [u for u in held if pool.pid_of(u) == pid] for pid in pool.worker_pids}
        assert sorted(len(us) for us in by_worker.values()) == [3, 3]
        victim, survivor = pool.worker_pids
        for utterance in held:
            feed_all(utterance, speech("sales")[: len(speech("sales")) // 2])
        os.kill(victim, signal.SIGKILL)
        start = time.monotonic()
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(asyncio.shield(u.outcome) for u in by_worker[victim])), 5)
        assert time.monotonic() - start < 2
        assert all(isinstance(o, RecognitionError) and f"worker {victim}" in str(o)
                   for o in outcomes)
        assert pool.stats["respawns"] == 1
        for utterance in by_worker[survivor]:
            feed_all(utterance, speech("sales")[len(speech("sales")) // 2 :])
        results = await asyncio.gather(*(u.finish() for u in by_worker[survivor]))
        assert [r.text for r in results] == ["Sales"] * 3
        after = await pool.start(MENU)
        feed_all(after, speech("operator"))
        assert (await after.finish()).text == "Operator"
