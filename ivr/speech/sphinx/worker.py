"""pocketsphinx recognition worker: `python -m ivr.speech.sphinx.worker [--sched-idle]`.

pocketsphinx holds the GIL while it decodes, so it runs in its own process, spoken to over
stdin/stdout in the frames `ivr.speech.sphinx.wire` describes.

Frames are handled in order, but decoding lags behind reading: the worker reads all input
that is available before decoding each ~100 ms block, so a CANCEL that arrives while a long
utterance is still being decoded takes effect at once rather than after the backlog.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import struct
import sys
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ivr.speech.sphinx.model import model_paths
from ivr.speech.sphinx.wire import (
    AUDIO,
    BEGIN,
    BLOCK_BYTES,
    CANCEL,
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

# Telephone audio upsampled to 16 kHz has nothing at all above 4 kHz, and the bundled
# acoustic model was trained on full-band speech: its top mel filters then see log(0)
# and the decoder loses its way (a 6-phrase grammar found no complete path for 8 of 18
# synthesized answers). Faint noise in that band (about -50 dBFS) gives those filters
# the floor they saw in training. Measured with `ivr bench accuracy`: see the README.
BAND_FILL_LEVEL = 100.0
# The same reasoning for digital silence (µ-law 0xFF decodes to exact zeros, as a muted
# or very clean line sends): a faint white floor (about -55 dBFS) under everything.
WHITE_LEVEL = 60.0

# Cepstral mean of phone-path speech (espeak voices -> 8 kHz µ-law -> 16 kHz, band-filled),
# endpointed as a call does, read with `Decoder.get_cmn()` after 150 such utterances. Live
# CMN starts from the model's full-band prior and adapts during an utterance, so a worker's
# first short answers were decoded with the wrong mean ("support" heard as "hours") and
# results depended on what the worker had decoded before. Every utterance now starts from
# this phone prior.
PHONE_CMN = (
    "53.8512,-9.97024,-1.45364,6.29877,-9.66028,-9.31558,5.37292,-7.23894,-5.78264,"
    "-3.58242,-3.85585,-2.07563,-0.770549"
)
_GRAMMAR_CACHE_SIZE = 32
_READ_SIZE = 256 * 1024


@dataclass(slots=True)
class _Job:
    id: int
    jsgf: str
    pending: bytearray = field(default_factory=bytearray)
    ended: bool = False
    started: bool = False
    error: str | None = None
    search: str = "lm"
    audio_bytes: int = 0
    cpu_seconds: float = 0.0
    partial: str = ""  # the last partial hypothesis sent
    # Seeded per utterance so the same audio always decodes the same way.
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


def band_fill(pcm16: bytes, rng: np.random.Generator, level: float = BAND_FILL_LEVEL) -> bytes:
    """Add faint high-frequency-tilted noise (first difference of white noise)."""
    samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
    tilted = np.diff(rng.standard_normal(len(samples) + 1).astype(np.float32))
    white = rng.standard_normal(len(samples)).astype(np.float32)
    noisy = samples + level * tilted + WHITE_LEVEL * white
    return bytes(np.clip(noisy, -32768, 32767).astype(np.int16).tobytes())


class Worker:
    def __init__(self, decoder: Decoder, out_fd: int) -> None:
        self._decoder = decoder
        self._out_fd = out_fd
        self._jobs: deque[_Job] = deque()
        self._grammars: OrderedDict[str, str] = OrderedDict()  # JSGF digest -> search name

    # -- input -------------------------------------------------------------------------

    def handle(self, kind: bytes, payload: bytes) -> None:
        try:
            self._handle(kind, payload)
        except struct.error as exc:
            raise WireError(f"malformed {kind!r} frame: {exc}") from exc

    def _handle(self, kind: bytes, payload: bytes) -> None:
        if kind == BEGIN:
            (uid,) = UTTERANCE_ID.unpack_from(payload)
            jsgf = payload[UTTERANCE_ID.size :].decode("utf-8", errors="replace")
            self._jobs.append(_Job(uid, jsgf))
        elif kind == AUDIO:
            if self._jobs and not self._jobs[-1].ended:
                job = self._jobs[-1]
                job.pending += payload
                job.audio_bytes += len(payload)
        elif kind == END:
            job_or_none = self._find(payload)
            if job_or_none is not None:
                job_or_none.ended = True
        elif kind == CANCEL:
            job_or_none = self._find(payload)
            if job_or_none is not None:
                self._drop(job_or_none)
        else:
            raise WireError(f"unknown frame type {kind!r}")

    def _find(self, payload: bytes) -> _Job | None:
        (uid,) = UTTERANCE_ID.unpack_from(payload)
        for job in self._jobs:
            if job.id == uid:
                return job
        return None

    def _drop(self, job: _Job) -> None:
        if job is self._jobs[0] and job.started and job.error is None:
            try:
                self._decoder.end_utt()  # discard the partial search
            except RuntimeError:
                pass
        self._jobs.remove(job)

    # -- decoding ----------------------------------------------------------------------

    def finish_ended(self) -> None:
        while self._jobs and self._jobs[0].ended:
            self.step()
        self._jobs.clear()

    def has_work(self) -> bool:
        """True when a decode step can make progress without more input."""
        if not self._jobs:
            return False
        job = self._jobs[0]
        return not job.started or job.ended or len(job.pending) >= BLOCK_BYTES

    def step(self) -> None:
        """Decode at most one block of the oldest utterance, or finish it."""
        job = self._jobs[0]
        if not job.started:
            job.started = True
            self._start(job)
        if job.error is not None:
            job.pending.clear()
            if job.ended:
                self._reply(job, None)
            return
        start = time.process_time()
        try:
            if len(job.pending) >= BLOCK_BYTES or (job.ended and len(job.pending) > 1):
                take = min(BLOCK_BYTES, len(job.pending)) & ~1
                block = band_fill(bytes(job.pending[:take]), job.rng)
                self._decoder.process_raw(block, False, False)
                del job.pending[:take]
                if not job.ended:
                    self._send_partial(job)
            elif job.ended:
                self._decoder.end_utt()
                job.cpu_seconds += time.process_time() - start
                self._reply(job, self._decoder.hyp())
                return
        except RuntimeError as exc:
            job.error = f"decoding failed: {exc}"
            job.pending.clear()
            try:
                self._decoder.end_utt()
            except RuntimeError:
                pass
        job.cpu_seconds += time.process_time() - start

    def _send_partial(self, job: _Job) -> None:
        # Only while the caller may still be talking: after END the result follows.
        hyp = self._decoder.hyp()
        text = (hyp.hypstr or "") if hyp is not None else ""
        if text != job.partial:
            job.partial = text
            self.send(PARTIAL, json.dumps({"id": job.id, "text": text}).encode())

    def _start(self, job: _Job) -> None:
        start = time.process_time()
        try:
            if job.jsgf.strip():
                job.search = self._grammar_search(job.jsgf)
                self._decoder.activate_search(job.search)
            else:
                self._decoder.activate_search()  # the default search: the language model
            self._decoder.set_cmn(PHONE_CMN)
            self._decoder.start_utt()
        except (ValueError, RuntimeError, KeyError) as exc:
            job.error = f"{type(exc).__name__}: {exc}"
        job.cpu_seconds += time.process_time() - start

    def _grammar_search(self, jsgf: str) -> str:
        digest = hashlib.sha1(jsgf.encode()).hexdigest()[:16]
        name = self._grammars.get(digest)
        if name is not None:
            self._grammars.move_to_end(digest)
            return name
        name = "g_" + digest
        self._decoder.add_jsgf_string(name, jsgf)  # ValueError on a bad grammar
        self._grammars[digest] = name
        if len(self._grammars) > _GRAMMAR_CACHE_SIZE:
            _, old = self._grammars.popitem(last=False)
            try:
                self._decoder.remove_search(old)
            except KeyError:
                pass
        return name

    def _reply(self, job: _Job, hyp: Any) -> None:
        self._jobs.popleft()
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
        self.send(RESULT, json.dumps(message).encode())

    def send(self, kind: bytes, payload: bytes) -> None:
        view = memoryview(encode_frame(kind, payload))
        while view:
            written = os.write(self._out_fd, view)
            view = view[written:]


def _make_decoder() -> Decoder:
    from pocketsphinx import Decoder

    return Decoder(**model_paths(), samprate=SAMPLE_RATE, loglevel="FATAL")


def run(in_fd: int, out_fd: int) -> int:
    loaded = time.perf_counter()
    worker = Worker(_make_decoder(), out_fd)
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
