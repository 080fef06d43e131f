"""pocketsphinx recognition in a pool of worker processes.

pocketsphinx holds the GIL while decoding, so each worker is a separate process
(`python -m ivr.speech.sphinx_worker`, protocol described there) at a lower CPU priority.
Nothing here blocks the event loop: audio goes out through non-blocking pipe writes and
results come back through a reader task per worker.

A worker decodes one utterance at a time. An utterance started while every worker is busy
buffers its audio in memory and takes the next worker that frees up, in FIFO order, so
`start()` and `feed()` never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import re
import sys
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final

from ivr.errors import InvalidValue, SpeechError
from ivr.grammar import Grammar
from ivr.speech import sphinx_worker as wire
from ivr.speech.base import Recognition

__all__ = [
    "LEAD_FILLERS",
    "TRAIL_FILLERS",
    "CompiledGrammar",
    "RecognitionError",
    "RecognizerPool",
    "SphinxUtterance",
    "compile_grammar",
    "grammar_to_jsgf",
    "load_vocabulary",
    "normalize_phrase",
]

ENGINE: Final = "pocketsphinx"

# Fillers a caller may wrap around an answer. Measured with espeak voices: short optional
# fillers ("the", "um", "uh") get matched to a breath or to the first syllable of the answer
# and steal the utterance ("billing" -> "the"), while the acoustic model's own noise/filler
# models already absorb hesitations. Through the phone path (8 kHz µ-law) even carrier
# phrases cost accuracy: `ivr bench accuracy --voices en-us,en-gb,en-us+m3,en-us+f3` went
# from 18/24 with ("i'd like", "i would like") / ("please",) to 22/24 with none, because a
# decode that cannot finish a phrase ends inside a filler. So none by default; the grammar
# compiler still takes them for engines and callers where they pay off.
LEAD_FILLERS: Final[tuple[str, ...]] = ()
TRAIL_FILLERS: Final[tuple[str, ...]] = ()


class RecognitionError(SpeechError):
    """An utterance could not be recognized: its worker died, it timed out, was cancelled,
    or the pool is closed."""


# -- grammar compilation -----------------------------------------------------------------

_ONES: Final = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS: Final = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS: Final = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_SYMBOLS: Final = {"&": " and ", "%": " percent ", "@": " at ", "\u2019": "'"}
_TOKEN: Final = re.compile(r"[a-z0-9']+")
_THOUSANDS: Final = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # "1,000" is one number
_PIECE: Final = re.compile(r"\d+(?:(?:st|nd|rd|th)(?![a-z]))?|[a-z']+")


def _number_words(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        tens, rest = divmod(n, 10)
        return [_TENS[tens]] + ([_ONES[rest]] if rest else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return [_ONES[hundreds], "hundred"] + (_number_words(rest) if rest else [])
    thousands, rest = divmod(n, 1000)
    return [*_number_words(thousands), "thousand"] + (_number_words(rest) if rest else [])


def _spell_digits(digits: str, ordinal: bool) -> list[str]:
    # Codes ("007", account numbers) are read digit by digit; quantities as numbers.
    if len(digits) > 6 or (len(digits) > 1 and digits[0] == "0"):
        return [_ONES[int(d)] for d in digits]
    words = _number_words(int(digits))
    if ordinal:
        last = words[-1]
        if last in _ORDINALS:
            last = _ORDINALS[last]
        elif last.endswith("y"):
            last = last[:-1] + "ieth"
        else:
            last += "th"
        words[-1] = last
    return words


def normalize_phrase(text: str) -> list[str]:
    """Words as the dictionary spells them: lower case, no punctuation, digits as words."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = _THOUSANDS.sub("", text)
    words: list[str] = []
    for token in _TOKEN.findall(text):
        for piece in _PIECE.findall(token):
            if piece[0].isdigit():
                digits = piece.rstrip("stndrh")
                words.extend(_spell_digits(digits, ordinal=len(digits) < len(piece)))
            else:
                word = piece.strip("'")
                if word:
                    words.append(word)
    return words


@dataclass(frozen=True, slots=True)
class CompiledGrammar:
    """A `Grammar` as JSGF, plus what is needed to map a hypothesis back to a phrase."""

    jsgf: str
    phrases: dict[tuple[str, ...], str]  # normalized words -> the phrase as given
    skipped: tuple[str, ...]  # phrases with words the dictionary cannot pronounce
    lead: tuple[tuple[str, ...], ...]
    trail: tuple[tuple[str, ...], ...]
    raw: bool = False  # a caller-written JSGF grammar: the hypothesis is the answer

    def match(self, hypothesis: str) -> str | None:
        """The grammar phrase a hypothesis stands for, fillers removed; None if partial."""
        if self.raw:
            return hypothesis or None
        words = tuple(hypothesis.split())
        n = len(words)
        starts = [0] + [len(f) for f in self.lead if words[: len(f)] == f]
        ends = [n] + [n - len(f) for f in self.trail if len(f) <= n and words[n - len(f) :] == f]
        for start in starts:
            for end in ends:
                phrase = self.phrases.get(words[start:end])
                if phrase is not None:
                    return phrase
        return None


def _speakable(
    phrases: Iterable[str], vocabulary: Set[str]
) -> tuple[dict[tuple[str, ...], str], list[str]]:
    kept: dict[tuple[str, ...], str] = {}
    skipped: list[str] = []
    for phrase in phrases:
        words = tuple(normalize_phrase(phrase))
        # Dropping an unknown word could change the meaning ("not X"), so skip the phrase.
        if not words or any(w not in vocabulary for w in words):
            skipped.append(phrase)
        else:
            kept.setdefault(words, phrase)
    return kept, skipped


def compile_grammar(
    grammar: Grammar,
    vocabulary: Set[str],
    *,
    lead_fillers: Iterable[str] = LEAD_FILLERS,
    trail_fillers: Iterable[str] = TRAIL_FILLERS,
) -> CompiledGrammar:
    """Compile `grammar` to JSGF; raises ValueError if no phrase is speakable."""
    if grammar.jsgf is not None:
        return CompiledGrammar(grammar.jsgf, {}, (), (), (), raw=True)
    phrases, skipped = _speakable(grammar.phrases, vocabulary)
    if not phrases:
        raise InvalidValue(f"no speakable phrase in grammar {list(grammar.phrases)!r}")
    lead = tuple(_speakable(lead_fillers, vocabulary)[0])
    trail = tuple(_speakable(trail_fillers, vocabulary)[0])
    lines = ["#JSGF V1.0;", "grammar ivr;"]
    body = "( " + " | ".join(" ".join(words) for words in phrases) + " )"
    if lead:
        lines.append("<lead> = " + " | ".join(" ".join(f) for f in lead) + ";")
        body = "[ <lead> ] " + body
    if trail:
        lines.append("<trail> = " + " | ".join(" ".join(f) for f in trail) + ";")
        body += " [ <trail> ]"
    lines.append(f"public <answer> = {body};")
    return CompiledGrammar("\n".join(lines) + "\n", phrases, tuple(skipped), lead, trail)


def grammar_to_jsgf(
    grammar: Grammar,
    vocabulary: Set[str],
    *,
    lead_fillers: Iterable[str] = LEAD_FILLERS,
    trail_fillers: Iterable[str] = TRAIL_FILLERS,
) -> str:
    """JSGF for `grammar`: `[<lead>] ( phrase | ... ) [<trail>]`; ValueError if none is
    speakable (every phrase has a word outside `vocabulary`)."""
    return compile_grammar(
        grammar, vocabulary, lead_fillers=lead_fillers, trail_fillers=trail_fillers
    ).jsgf


@functools.lru_cache(maxsize=4)
def load_vocabulary(path: str | None = None) -> frozenset[str]:
    """Words of a pocketsphinx dictionary (default: the bundled cmudict-en-us)."""
    words: set[str] = set()
    with open(path or wire.model_paths()["dict"], encoding="utf-8") as f:
        for line in f:
            word = line.split(" ", 1)[0].strip()
            alternate = word.find("(")  # "read(2)" is a second pronunciation of "read"
            words.add(word[:alternate] if alternate > 0 else word)
    words.discard("")
    return frozenset(words)


# -- the pool ------------------------------------------------------------------------------

_AUDIO_FRAME_BYTES: Final = 32000  # a backlog goes out in 1 s frames
# Live audio goes out in blocks of the size the worker decodes anyway: one write and one
# worker wake-up per 100 ms per call instead of one per 20 ms piece, at no cost in latency.
_FLUSH_BYTES: Final = wire.BLOCK_BYTES
_DRAIN_THRESHOLD: Final = 1024 * 1024  # ~30 s of audio the worker has not read yet
_GRAMMAR_CACHE: Final = 128


class SphinxUtterance:
    """One utterance; implements `ivr.speech.base.Utterance`."""

    def __init__(
        self, pool: RecognizerPool, uid: int, compiled: CompiledGrammar | None, note: str | None
    ) -> None:
        self._pool = pool
        self.id = uid
        self.compiled = compiled
        self.note = note  # why the grammar fell back to the language model, if it did
        self.buffer: list[bytes] = []  # audio not yet written to a worker
        self.buffered = 0
        self.worker: _Worker | None = None
        self.ended = False
        self.audio_bytes = 0
        self.created = time.monotonic()
        self.finished: float | None = None
        self.outcome: asyncio.Future[Recognition | RecognitionError] = (
            asyncio.get_running_loop().create_future()
        )

    @property
    def settled(self) -> bool:
        return self.outcome.done()

    def feed(self, pcm16_16k: bytes) -> None:
        # Audio after a failure or cancel has nowhere to go; the failure surfaces in finish().
        if self.settled or self.ended or not pcm16_16k:
            return
        self.audio_bytes += len(pcm16_16k)
        self.buffer.append(pcm16_16k)
        self.buffered += len(pcm16_16k)
        if self.worker is not None and self.buffered >= _FLUSH_BYTES:
            self._flush(self.worker)

    def _flush(self, worker: _Worker) -> None:
        audio = b"".join(self.buffer)
        self.buffer.clear()
        self.buffered = 0
        for i in range(0, len(audio), _AUDIO_FRAME_BYTES):
            worker.send(wire.AUDIO, audio[i : i + _AUDIO_FRAME_BYTES])

    async def finish(self) -> Recognition:
        if not self.ended and not self.settled:
            self.ended = True
            self.finished = time.monotonic()
            if self.worker is not None:
                self._flush(self.worker)
                self.worker.send(wire.END, wire.UTTERANCE_ID.pack(self.id))
        try:
            outcome = await asyncio.wait_for(asyncio.shield(self.outcome), self._pool.timeout)
        except TimeoutError:
            self._pool._timed_out(self)
            outcome = self.outcome.result()
        except asyncio.CancelledError:
            self._pool._cancel(self)
            raise
        if isinstance(outcome, RecognitionError):
            raise outcome
        return outcome

    async def cancel(self) -> None:
        self._pool._cancel(self)

    # -- called by the pool --

    def attach(self, worker: _Worker) -> None:
        self.worker = worker
        jsgf = self.compiled.jsgf if self.compiled is not None else ""
        worker.send(wire.BEGIN, wire.UTTERANCE_ID.pack(self.id) + jsgf.encode())
        self._flush(worker)
        if self.ended:
            worker.send(wire.END, wire.UTTERANCE_ID.pack(self.id))

    def settle(self, outcome: Recognition | RecognitionError) -> None:
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
        if self.compiled is not None:
            phrase = self.compiled.match(hypothesis)
            if phrase is None:
                # The decoder never reached the grammar's end: a partial path is no answer.
                text, confidence = "", 0.0
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
        )


def _as_float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


@dataclass(eq=False)
class _Worker:
    pool: RecognizerPool
    proc: asyncio.subprocess.Process
    spawned: float = field(default_factory=time.monotonic)
    startup_seconds: float | None = None
    alive: bool = True
    current: SphinxUtterance | None = None
    reader: asyncio.Task[None] | None = None
    drainer: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        stdin = self.proc.stdin
        if not self.alive or stdin is None or stdin.is_closing():
            return
        try:
            stdin.write(wire.encode_frame(kind, payload))
        except (ConnectionError, RuntimeError):
            return  # the reader notices the exit and fails the utterance
        if stdin.transport.get_write_buffer_size() > _DRAIN_THRESHOLD and self.drainer is None:
            self.drainer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            await asyncio.wait_for(stdin.drain(), self.pool.timeout)
        except TimeoutError:
            self.kill()  # it stopped reading: wedged
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.drainer = None

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class RecognizerPool:
    """`Recognizer` over `size` pocketsphinx worker processes.

    Use as `async with RecognizerPool(2) as pool:` or call `start_workers()` / `close()`.
    `timeout` bounds `finish()` (waiting for a worker, decoding, the reply); `log_path`
    collects the workers' stderr; `sched_idle` runs them under SCHED_IDLE on top of nice 10
    (see `sphinx_worker.lower_priority`).
    """

    name = ENGINE

    def __init__(
        self,
        size: int = 2,
        *,
        timeout: float = 20.0,
        startup_timeout: float = 30.0,
        log_path: str | None = None,
        sched_idle: bool = True,
    ) -> None:
        if size < 1:
            raise InvalidValue("a pool needs at least one worker")
        self.size = size
        self.timeout = timeout  # bound on finish(): queueing, decoding and the reply
        self.startup_timeout = startup_timeout
        self._log_path = log_path
        self._worker_args = ["--sched-idle"] if sched_idle else []
        self._workers: list[_Worker] = []
        self._idle: deque[_Worker] = deque()
        self._waiting: deque[SphinxUtterance] = deque()
        self._ids = itertools.count(1)
        self._grammars: OrderedDict[Grammar, CompiledGrammar | str] = OrderedDict()
        self._vocabulary: frozenset[str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready: asyncio.Event | None = None
        self._started = False
        self._closed = False

    async def __aenter__(self) -> RecognizerPool:
        await self.start_workers()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- lifecycle -------------------------------------------------------------------------

    async def start_workers(self) -> None:
        """Spawn the workers and wait until each has loaded its models (or timed out)."""
        if self._closed:
            raise RecognitionError("recognizer pool is closed")
        if self._started:
            return
        self._started = True
        vocabulary = asyncio.create_task(asyncio.to_thread(load_vocabulary))
        spawned = await asyncio.gather(
            *(self._spawn() for _ in range(self.size)), return_exceptions=True
        )
        self._vocabulary = await asyncio.wait_for(vocabulary, self.startup_timeout)
        failures = [s for s in spawned if isinstance(s, BaseException)]
        if len(failures) == len(spawned):
            raise RecognitionError(f"no recognition worker could start: {failures[0]!r}")
        deadline = time.monotonic() + self.startup_timeout
        while not (self._workers and all(w.startup_seconds is not None for w in self._workers)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RecognitionError("recognition workers did not become ready in time")
            self._ready = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), remaining)

    async def close(self) -> None:
        """Fail outstanding utterances and stop every worker."""
        if self._closed:
            return
        self._closed = True
        closed = RecognitionError("recognizer pool is closed")
        while self._waiting:
            self._waiting.popleft().settle(closed)
        for task in list(self._tasks):
            task.cancel()
        workers, self._workers = self._workers, []
        self._idle.clear()
        await asyncio.gather(*(self._stop(w, closed) for w in workers))

    async def _stop(self, worker: _Worker, error: RecognitionError) -> None:
        if worker.current is not None:
            # Otherwise the worker would finish decoding it before noticing EOF.
            worker.send(wire.CANCEL, wire.UTTERANCE_ID.pack(worker.current.id))
            worker.current.settle(error)
            worker.current = None
        worker.alive = False
        stdin = worker.proc.stdin
        if stdin is not None:
            stdin.close()  # EOF: the worker exits on its own
        try:
            await asyncio.wait_for(worker.proc.wait(), 2.0)
        except TimeoutError:
            worker.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.proc.wait(), 2.0)
        for task in (worker.reader, worker.drainer):
            if task is not None:
                task.cancel()

    async def _spawn(self) -> _Worker:
        log = (
            os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if self._log_path
            else None
        )
        try:
            proc = await asyncio.wait_for(
                asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "ivr.speech.sphinx_worker",
                    *self._worker_args,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=log if log is not None else asyncio.subprocess.DEVNULL,
                ),
                self.startup_timeout,
            )
        finally:
            if log is not None:
                os.close(log)  # the child has its own descriptor
        worker = _Worker(self, proc)
        if self._closed:
            worker.kill()
            raise RecognitionError("recognizer pool is closed")
        self._workers.append(worker)
        worker.reader = asyncio.create_task(self._read(worker))
        return worker

    def _respawn_later(self, delay: float) -> None:
        async def respawn() -> None:
            backoff = delay
            while not self._closed:
                await asyncio.sleep(backoff)
                try:
                    await self._spawn()
                    return
                except (OSError, TimeoutError):
                    backoff = min(max(backoff * 2, 0.5), 10.0)

        self._track(respawn())

    def _track(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- worker output ---------------------------------------------------------------------

    async def _read(self, worker: _Worker) -> None:
        stdout = worker.proc.stdout
        assert stdout is not None
        reason = "exited"
        try:
            while True:
                header = await stdout.readexactly(wire.HEADER.size)
                kind, length = wire.HEADER.unpack(header)
                if length > wire.MAX_PAYLOAD:
                    reason = f"sent a {length}-byte frame"
                    break
                payload = await stdout.readexactly(length)
                if kind == wire.RESULT:
                    message = json.loads(payload)
                    if not isinstance(message, dict):
                        raise InvalidValue("result is not an object")
                    self._on_result(worker, message)
                elif kind == wire.READY:
                    self._on_ready(worker)
        except asyncio.IncompleteReadError:
            pass
        except (ValueError, ConnectionError) as exc:
            reason = f"sent garbage ({exc})"
        finally:
            if worker.alive and not self._closed:
                self._on_exit(worker, reason)

    def _on_ready(self, worker: _Worker) -> None:
        worker.startup_seconds = time.monotonic() - worker.spawned
        self._idle.append(worker)
        self._dispatch()
        if self._ready is not None:
            self._ready.set()

    def _on_result(self, worker: _Worker, message: dict[str, object]) -> None:
        utterance = worker.current
        if utterance is None or message.get("id") != utterance.id:
            return  # a reply to an utterance that was cancelled meanwhile
        worker.current = None
        utterance.settle(utterance.recognition(message))
        self._idle.append(worker)
        self._dispatch()

    def _on_exit(self, worker: _Worker, reason: str) -> None:
        worker.alive = False
        worker.kill()
        code = worker.proc.returncode
        with contextlib.suppress(ValueError):
            self._workers.remove(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        if self._ready is not None:
            self._ready.set()
        if worker.current is not None:
            worker.current.settle(
                RecognitionError(
                    f"recognition worker {worker.pid} {reason} (exit code {code}) "
                    f"during utterance {worker.current.id}"
                )
            )
            worker.current = None
        # A worker that dies before it is ready would die again at once: back off.
        self._respawn_later(0.0 if worker.startup_seconds is not None else 1.0)
        self._track(self._reap(worker))

    async def _reap(self, worker: _Worker) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.proc.wait(), 5.0)

    # -- scheduling ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._idle and self._waiting:
            worker = self._idle.popleft()
            if not worker.alive:
                continue
            utterance = self._waiting.popleft()
            worker.current = utterance
            utterance.attach(worker)

    def _cancel(self, utterance: SphinxUtterance) -> None:
        if utterance.settled:
            return
        worker = utterance.worker
        utterance.settle(RecognitionError(f"utterance {utterance.id} was cancelled"))
        if worker is not None and worker.current is utterance:
            worker.send(wire.CANCEL, wire.UTTERANCE_ID.pack(utterance.id))
            worker.current = None
            if worker.alive:
                self._idle.append(worker)
            self._dispatch()
        else:
            with contextlib.suppress(ValueError):
                self._waiting.remove(utterance)

    def _timed_out(self, utterance: SphinxUtterance) -> None:
        worker = utterance.worker
        if worker is not None:
            # A worker that misses the deadline is wedged or hopelessly behind; a fresh one
            # serves the next caller better.
            worker.current = None
            utterance.settle(
                RecognitionError(f"no result from worker {worker.pid} in {self.timeout:g} s")
            )
            worker.kill()
        else:
            with contextlib.suppress(ValueError):
                self._waiting.remove(utterance)
            utterance.settle(
                RecognitionError(f"no recognition worker became free in {self.timeout:g} s")
            )

    # -- Recognizer ------------------------------------------------------------------------

    async def start(self, grammar: Grammar | None) -> SphinxUtterance:
        if self._closed:
            raise RecognitionError("recognizer pool is closed")
        if not self._started or self._vocabulary is None:
            raise SpeechError("RecognizerPool.start_workers() has not completed")
        compiled, note = None, None
        if grammar is not None:
            entry = self._compile(grammar)
            if isinstance(entry, str):
                note = entry
            else:
                compiled = entry
        utterance = SphinxUtterance(self, next(self._ids), compiled, note)
        self._waiting.append(utterance)
        self._dispatch()
        return utterance

    def _compile(self, grammar: Grammar) -> CompiledGrammar | str:
        entry = self._grammars.get(grammar)
        if entry is None:
            assert self._vocabulary is not None
            try:
                entry = compile_grammar(grammar, self._vocabulary)
            except ValueError as exc:
                entry = str(exc)  # decode with the language model rather than fail the call
            self._grammars[grammar] = entry
            if len(self._grammars) > _GRAMMAR_CACHE:
                self._grammars.popitem(last=False)
        else:
            self._grammars.move_to_end(grammar)
        return entry

    # -- introspection ---------------------------------------------------------------------

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.alive]

    @property
    def startup_seconds(self) -> list[float]:
        return [w.startup_seconds for w in self._workers if w.startup_seconds is not None]

    @property
    def idle_workers(self) -> int:
        return len(self._idle)

    @property
    def queued(self) -> int:
        return len(self._waiting)
