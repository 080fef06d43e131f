"""One utterance on its way through the pool: audio buffered until a worker takes it,
streamed to that worker in decode-sized blocks, and one outcome (a `Recognition` or a
`RecognitionError`) when the worker replies, fails, or time runs out.

The utterance knows its owner and its worker only through the two small protocols below,
so the pool can import this module without this module importing the pool.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final, Protocol

from ivr.errors import SpeechError
from ivr.speech.base import Recognition
from ivr.speech.sphinx import wire
from ivr.speech.sphinx.grammar import CompiledGrammar, is_garbage

__all__ = ["ENGINE", "FrameSink", "RecognitionError", "SphinxUtterance", "UtteranceOwner"]

ENGINE: Final = "pocketsphinx"

_AUDIO_FRAME_BYTES: Final = 32000  # a backlog goes out in 1 s frames
# Live audio goes out in blocks of the size the worker decodes anyway: one write and one
# worker wake-up per 100 ms per call instead of one per 20 ms piece, at no cost in latency.
_FLUSH_BYTES: Final = wire.BLOCK_BYTES


class RecognitionError(SpeechError):
    """An utterance could not be recognized: its worker died, it timed out, was cancelled,
    or the pool is closed."""


class FrameSink(Protocol):
    """Where an utterance's frames go: the worker decoding it."""

    def send(self, kind: bytes, payload: bytes = b"") -> None: ...


class UtteranceOwner(Protocol):
    """What an utterance asks of the pool that created it."""

    timeout: float  # bound on finish(): queueing, decoding and the reply

    def utterance_timed_out(self, utterance: SphinxUtterance) -> None: ...

    def utterance_cancelled(self, utterance: SphinxUtterance) -> None: ...


class SphinxUtterance:
    """One utterance; implements `ivr.speech.base.Utterance`."""

    def __init__(
        self, owner: UtteranceOwner, uid: int, compiled: CompiledGrammar | None, note: str | None
    ) -> None:
        self._owner = owner
        self.id = uid
        self.compiled = compiled
        self.note = note  # why the grammar fell back to the language model, if it did
        self.buffer: list[bytes] = []  # audio not yet written to a worker
        self.buffered = 0
        self.worker: FrameSink | None = None
        self.ended = False
        self.audio_bytes = 0
        self.created = time.monotonic()
        self.finished: float | None = None
        self.timer: asyncio.TimerHandle | None = None  # the pool's bound on the wait for a worker
        self.hold_timer: asyncio.TimerHandle | None = None  # its bound on holding a worker slot
        self._audio_prefix = wire.UTTERANCE_ID.pack(uid)
        self._partial: str | None = None
        self.outcome: asyncio.Future[Recognition | RecognitionError] = (
            asyncio.get_running_loop().create_future()
        )

    @property
    def settled(self) -> bool:
        return self.outcome.done()

    @property
    def wants_lm(self) -> bool:
        """Decoded with the language model (no grammar, or one that could not compile)."""
        return self.compiled is None

    def feed(self, pcm16_16k: bytes) -> None:
        # Audio after a failure or cancel has nowhere to go; the failure surfaces in finish().
        if self.settled or self.ended or not pcm16_16k:
            return
        self.audio_bytes += len(pcm16_16k)
        self.buffer.append(pcm16_16k)
        self.buffered += len(pcm16_16k)
        if self.worker is not None and self.buffered >= _FLUSH_BYTES:
            self._flush(self.worker)

    def _flush(self, worker: FrameSink) -> None:
        audio = b"".join(self.buffer)
        self.buffer.clear()
        self.buffered = 0
        for i in range(0, len(audio), _AUDIO_FRAME_BYTES):
            worker.send(wire.AUDIO, self._audio_prefix + audio[i : i + _AUDIO_FRAME_BYTES])

    async def finish(self) -> Recognition:
        if not self.ended and not self.settled:
            self.ended = True
            self.finished = time.monotonic()
            if self.worker is not None:
                self._flush(self.worker)
                self.worker.send(wire.END, wire.UTTERANCE_ID.pack(self.id))
        try:
            outcome = await asyncio.wait_for(asyncio.shield(self.outcome), self._owner.timeout)
        except TimeoutError:
            self._owner.utterance_timed_out(self)
            outcome = self.outcome.result()
        except asyncio.CancelledError:
            self._owner.utterance_cancelled(self)
            raise
        if isinstance(outcome, RecognitionError):
            raise outcome
        return outcome

    async def cancel(self) -> None:
        self._owner.utterance_cancelled(self)

    def partial(self) -> str | None:
        """The worker's latest partial hypothesis, as the grammar's phrase when it is one
        (`ivr.speech.base.PartialResults`)."""
        return self._partial

    # -- called by the pool --

    def on_partial(self, hypothesis: str) -> None:
        if self.settled or self.ended:
            return
        phrase = self.compiled.match(hypothesis) if self.compiled is not None else None
        if phrase is None and is_garbage(hypothesis):
            hypothesis = ""  # nothing the grammar knows, so far
        self._partial = phrase if phrase is not None else hypothesis

    def attach(self, worker: FrameSink) -> None:
        self.worker = worker
        jsgf = self.compiled.jsgf if self.compiled is not None else ""
        worker.send(wire.BEGIN, wire.UTTERANCE_ID.pack(self.id) + jsgf.encode())
        self._flush(worker)
        if self.ended:
            worker.send(wire.END, wire.UTTERANCE_ID.pack(self.id))

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def stop_hold_timer(self) -> None:
        if self.hold_timer is not None:
            self.hold_timer.cancel()
            self.hold_timer = None

    def settle(self, outcome: Recognition | RecognitionError) -> None:
        self.stop_timer()
        self.stop_hold_timer()
        self.worker = None
        self.buffer.clear()
        self.buffered = 0
        if not self.outcome.done():
            self.outcome.set_result(outcome)

    def recognition(self, message: dict[str, object]) -> Recognition | RecognitionError:
        error = message.get("error")
        if error:
            return RecognitionError(f"pocketsphinx rejected the utterance: {error}")
        now = time.monotonic()
        hypothesis = str(message.get("text") or "")
        confidence = _as_float(message.get("confidence"))
        extra: dict[str, object] = {
            "hypothesis": hypothesis,
            "score": _as_float(message.get("score")),
            "wall_seconds": now - self.created,
        }
        if self.finished is not None:
            extra["latency_seconds"] = now - self.finished  # end of speech -> result
        text = hypothesis
        margin: float | None = None
        if self.compiled is not None:
            phrase = self.compiled.match(hypothesis)
            margin = answer_margin(self.compiled, message.get("nbest"))
            if phrase is None:
                # The decoder never reached the grammar's end: a partial path is no answer.
                text, confidence, margin = "", 0.0, None
                extra["no_match"] = True
            else:
                text = phrase
            if self.compiled.skipped:
                extra["skipped_phrases"] = list(self.compiled.skipped)
        if self.note is not None:
            extra["grammar_fallback"] = self.note
        return Recognition(
            text=text,
            confidence=confidence,
            engine=ENGINE,
            audio_seconds=_as_float(message.get("audio_seconds")),
            cpu_seconds=_as_float(message.get("cpu_seconds")),
            extra=extra,
            margin=margin,
        )


def answer_margin(compiled: CompiledGrammar, nbest: object) -> float | None:
    """How far the best answer leads the best *other* one in the N-best list, in [0, 1].

    pocketsphinx 5 reports a path's score as exp(log score), so `1 - second / best` is
    `1 - exp(-(log best - log second))`: 0 when another answer (or the garbage path, which
    is "no answer") scored as well, towards 1 the more it trails; 1.0 when no other answer is
    among the paths at all. Paths that are the same answer ("yes" and "yes please", other
    segmentations of the same words) are not rivals. None without a list or a best answer.
    """
    if not isinstance(nbest, list) or not nbest:
        return None
    paths = [(str(p[0]), float(p[1])) for p in nbest if isinstance(p, list | tuple) and len(p) == 2]
    if not paths:
        return None
    best_text, best_score = paths[0]
    best = compiled.answer(best_text)
    if best is None or best_score <= 0:
        return None
    for text, score in paths[1:]:
        if compiled.answer(text) != best:
            return max(0.0, min(1.0, 1.0 - score / best_score))
    return 1.0


def _as_float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
