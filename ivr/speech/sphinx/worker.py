"""pocketsphinx recognition worker: `python -m ivr.speech.sphinx.worker [--sched-idle]`.

pocketsphinx holds the GIL while it decodes, so it runs in its own process, spoken to over
stdin/stdout in the frames `ivr.speech.sphinx.wire` describes.

A worker holds several utterances at once, each on its own decoder (`ivr.speech.sphinx.
decoding`), and decodes their audio as it arrives, one ~100 ms block at a time in turn
(round-robin), so overlapping callers are served together instead of one after another.
Decoding lags behind reading: the worker reads all input that is available before decoding
each block, so a CANCEL that arrives while a long backlog is being decoded takes effect at
once rather than after the backlog.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from ivr.speech.sphinx.decoding import (
    Job,
    Slot,
    band_fill,
    make_full_decoder,
    make_lean_decoder,
)
from ivr.speech.sphinx.wire import (
    AUDIO,
    BEGIN,
    BLOCK_BYTES,
    CANCEL,
    DROPPED,
    END,
    PARTIAL,
    READY,
    RESULT,
    SAMPLE_RATE,
    UTTERANCE_ID,
    FrameParser,
    WireError,
    encode_frame,
)

if TYPE_CHECKING:
    from pocketsphinx import Decoder

_READ_SIZE = 256 * 1024
_ID = UTTERANCE_ID.size


class Worker:
    """The utterances one worker holds and the decoders serving them.

    Language-model utterances need the full decoder (one per worker; the pool sends at
    most one such utterance at a time, and another waits here for it); grammar utterances
    each get a lean decoder, created on first need and kept for the next utterance.
    """

    def __init__(
        self, decoder: Decoder, out_fd: int, make_lean: Callable[[], Decoder] = make_lean_decoder
    ) -> None:
        self._full = Slot(decoder)
        self._lean: list[Slot] = []
        self._make_lean = make_lean
        self._out_fd = out_fd
        self._jobs: dict[int, Job] = {}
        self._turns: deque[Job] = deque()  # jobs with a decoder, in round-robin order
        self._waiting: deque[Job] = deque()  # language-model jobs waiting for the full decoder

    @property
    def decoders(self) -> int:
        return 1 + len(self._lean)

    # -- input -------------------------------------------------------------------------

    def handle(self, kind: bytes, payload: bytes) -> None:
        try:
            self._handle(kind, payload)
        except struct.error as exc:
            raise WireError(f"malformed {kind!r} frame: {exc}") from exc

    def _handle(self, kind: bytes, payload: bytes) -> None:
        if kind == AUDIO:
            (uid,) = UTTERANCE_ID.unpack_from(payload)
            job = self._jobs.get(uid)
            if job is not None and not job.ended:
                job.pending += memoryview(payload)[_ID:]
                job.audio_bytes += len(payload) - _ID
        elif kind == BEGIN:
            (uid,) = UTTERANCE_ID.unpack_from(payload)
            jsgf = payload[_ID:].decode("utf-8", errors="replace")
            job = Job(uid, jsgf)
            self._jobs[uid] = job
            self._assign(job)
        elif kind == END:
            job_or_none = self._find(payload)
            if job_or_none is not None:
                job_or_none.ended = True
        elif kind == CANCEL:
            job_or_none = self._find(payload)
            if job_or_none is not None:
                self._drop(job_or_none)
            self.send(DROPPED, payload[:_ID])
        else:
            raise WireError(f"unknown frame type {kind!r}")

    def _find(self, payload: bytes) -> Job | None:
        (uid,) = UTTERANCE_ID.unpack_from(payload)
        return self._jobs.get(uid)

    def _assign(self, job: Job) -> None:
        if job.wants_lm:
            if self._full.job is not None:
                self._waiting.append(job)
                return
            slot = self._full
        else:
            slot = next((s for s in self._lean if s.job is None), None) or self._new_lean()
        slot.job, job.slot = job, slot
        self._turns.append(job)

    def _new_lean(self) -> Slot:
        slot = Slot(self._make_lean(), lexicon=self._full.decoder)
        self._lean.append(slot)
        return slot

    def _release(self, job: Job) -> None:
        """`job` is done or dropped: free its decoder for the next one."""
        del self._jobs[job.id]
        slot = job.slot
        if slot is None:
            self._waiting.remove(job)
            return
        self._turns.remove(job)
        slot.job, job.slot = None, None
        if slot is self._full and self._waiting:
            self._assign(self._waiting.popleft())

    def _drop(self, job: Job) -> None:
        if job.slot is not None and job.started and job.error is None:
            job.slot.abandon()
        self._release(job)

    # -- decoding ----------------------------------------------------------------------

    def finish_ended(self) -> None:
        """At EOF: finish what was ended, drop the rest (nobody will end it)."""
        for job in [j for j in self._jobs.values() if not j.ended]:
            self._drop(job)
        while self.has_work():
            self.step()

    @staticmethod
    def _ready(job: Job) -> bool:
        return not job.started or job.ended or len(job.pending) >= BLOCK_BYTES

    def has_work(self) -> bool:
        """True when a decode step can make progress without more input."""
        return any(self._ready(job) for job in self._turns)

    def step(self) -> None:
        """Decode one block of the next utterance in turn that has one, or finish it."""
        for _ in range(len(self._turns)):
            job = self._turns[0]
            self._turns.rotate(-1)
            if self._ready(job):
                self._step(job)
                return

    def _step(self, job: Job) -> None:
        slot = job.slot
        assert slot is not None
        start = time.process_time()
        if not job.started:
            job.started = True
            slot.begin(job)
            job.cpu_seconds += time.process_time() - start
            return
        if job.error is not None:
            job.pending.clear()
            if job.ended:
                self._reply(job, None)
            return
        decoder = slot.decoder
        try:
            if len(job.pending) >= BLOCK_BYTES or (job.ended and len(job.pending) > 1):
                take = min(BLOCK_BYTES, len(job.pending)) & ~1
                block = band_fill(bytes(job.pending[:take]), job.rng)
                decoder.process_raw(block, False, False)
                del job.pending[:take]
                if not job.ended:
                    self._send_partial(job, decoder)
            elif job.ended:
                decoder.end_utt()
                job.cpu_seconds += time.process_time() - start
                self._reply(job, decoder.hyp())
                return
        except RuntimeError as exc:
            job.error = f"decoding failed: {exc}"
            job.pending.clear()
            slot.abandon()
        job.cpu_seconds += time.process_time() - start

    def _send_partial(self, job: Job, decoder: Decoder) -> None:
        # Only while the caller may still be talking: after END the result follows.
        hyp = decoder.hyp()
        text = (hyp.hypstr or "") if hyp is not None else ""
        if text != job.partial:
            job.partial = text
            self.send(PARTIAL, json.dumps({"id": job.id, "text": text}).encode())

    def _reply(self, job: Job, hyp: Any) -> None:
        slot = job.slot
        message: dict[str, object] = {
            "id": job.id,
            "text": "",
            "confidence": 0.0,
            "score": 0.0,
            "audio_seconds": job.audio_bytes / (SAMPLE_RATE * 2),
            "cpu_seconds": job.cpu_seconds,
            "search": job.search,
            "error": job.error,
        }
        if hyp is not None and job.error is None:
            message["text"] = hyp.hypstr or ""
            message["confidence"] = float(hyp.prob)
            message["score"] = float(hyp.score)
            if job.search != "lm" and slot is not None:
                message["nbest"] = _nbest(slot.decoder)
        self._release(job)
        self.send(RESULT, json.dumps(message).encode())

    def send(self, kind: bytes, payload: bytes) -> None:
        view = memoryview(encode_frame(kind, payload))
        while view:
            written = os.write(self._out_fd, view)
            view = view[written:]


# Enough lattice paths to find the best hypothesis of a different answer: pocketsphinx lists
# near-duplicates (the same words, other segmentations) first.
NBEST: Final = 10


def _nbest(decoder: Decoder) -> list[tuple[str, float]]:
    """The lattice's best paths as (words, score), best first; empty when it has none."""
    out: list[tuple[str, float]] = []
    try:
        for entry in itertools.islice(decoder.nbest(), NBEST):
            if entry is None:
                break
            out.append((entry.hypstr or "", float(entry.score)))
    except (RuntimeError, ValueError):
        return []  # no lattice for this utterance: the margin stays unknown
    return out


def run(in_fd: int, out_fd: int) -> int:
    loaded = time.perf_counter()
    worker = Worker(make_full_decoder(), out_fd)
    worker.send(
        READY,
        json.dumps({"pid": os.getpid(), "load_seconds": time.perf_counter() - loaded}).encode(),
    )
    parser = FrameParser()
    while True:
        # Block only when there is nothing to decode; otherwise just peek at the input.
        timeout = 0.0 if worker.has_work() else None
        readable, _, _ = select.select([in_fd], [], [], timeout)
        if readable:
            data = os.read(in_fd, _READ_SIZE)
            if not data:
                # The parent closed stdin (or died). Utterances it already ended still get
                # their results, so a piped batch works; nobody will end the others.
                worker.finish_ended()
                return 0
            for kind, payload in parser.feed(data):
                worker.handle(kind, payload)
        elif worker.has_work():
            worker.step()


def lower_priority(sched_idle: bool) -> None:
    """Let the server's event loop, which paces outbound audio, win the CPU."""
    with contextlib.suppress(OSError):
        os.nice(10)
    if sched_idle and hasattr(os, "SCHED_IDLE"):
        # nice alone is not enough on Linux >= 6.6 (EEVDF): a worker that has just woken up
        # gets a protected slice (~3 ms) that a waking event loop must wait out whatever the
        # nice level. SCHED_IDLE tasks are preempted at once. Measured with 4 calls fed in
        # real time on 2 cores: loop-lag p99 0.6-1.1 ms vs 0.8-4.1 ms with nice 10 alone.
        # The price: under sustained CPU saturation by normal processes the workers starve
        # (the pool's timeout bounds the wait).
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # The protocol owns the real stdout; anything a C library prints goes to stderr instead
    # of corrupting the frame stream.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    # The parent decides when workers stop (closing stdin); a terminal's Ctrl-C is its
    # business, not ours.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lower_priority(sched_idle="--sched-idle" in args)
    try:
        return run(0, out_fd)
    except (BrokenPipeError, WireError) as exc:
        print(f"sphinx worker: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
