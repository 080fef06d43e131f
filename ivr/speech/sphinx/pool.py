"""pocketsphinx recognition in a pool of worker processes.

pocketsphinx holds the GIL while decoding, so each worker is a separate process
(`python -m ivr.speech.sphinx.worker`, frames in `ivr.speech.sphinx.wire`) at a lower CPU
priority. Nothing here blocks the event loop: audio goes out through non-blocking pipe
writes and results come back through a reader task per worker.

A worker decodes one utterance at a time. An utterance started while every worker is busy
buffers its audio in memory and takes the next worker that frees up, in FIFO order, so
`start()` and `feed()` never wait.

Nothing can hold a worker for good: an utterance that waits for a worker longer than
`max_wait` fails (its turn is a no-match and the flow's retry or keypad path takes over);
a worker that holds one utterance longer than `max_hold` is killed; a worker that exits is
respawned and the utterance it held fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Final

from ivr.errors import InvalidValue, SpeechError
from ivr.grammar import Grammar
from ivr.speech.sphinx import wire
from ivr.speech.sphinx.grammar import CompiledGrammar, compile_grammar
from ivr.speech.sphinx.model import load_vocabulary
from ivr.speech.sphinx.process import WorkerProcess, spawn_worker
from ivr.speech.sphinx.utterance import ENGINE, RecognitionError, SphinxUtterance

__all__ = ["RecognizerPool"]

_GRAMMAR_CACHE: Final = 128


class RecognizerPool:
    """`Recognizer` over `size` pocketsphinx worker processes.

    Use as `async with RecognizerPool(2) as pool:` or call `start_workers()` / `close()`.
    `timeout` bounds `finish()` (waiting for a worker, decoding, the reply); `log_path`
    collects the workers' stderr; `sched_idle` runs them under SCHED_IDLE on top of nice 10
    (see `ivr.speech.sphinx.worker.lower_priority`). `max_wait` bounds the wait for a free
    worker and `max_hold` how long one utterance may hold a worker (None: no bound);
    `on_wait` is told each wait for a worker, in seconds.
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
        max_wait: float | None = None,
        max_hold: float | None = None,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        if size < 1:
            raise InvalidValue("a pool needs at least one worker")
        for name, bound in (("max_wait", max_wait), ("max_hold", max_hold)):
            if bound is not None and bound <= 0:
                raise InvalidValue(f"{name} must be positive, got {bound}")
        self.size = size
        self.timeout = timeout  # bound on finish(): queueing, decoding and the reply
        self.startup_timeout = startup_timeout
        self.max_wait = max_wait
        self.max_hold = max_hold
        self.on_wait = on_wait
        # respawns, hold_kills (a worker held past max_hold), wait_expired (no free worker)
        self.stats: Counter[str] = Counter()
        self._log_path = log_path
        self._worker_args = ["--sched-idle"] if sched_idle else []
        self._workers: list[WorkerProcess] = []
        self._idle: deque[WorkerProcess] = deque()
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
            utterance = self._waiting.popleft()
            utterance.stop_timer()
            utterance.settle(closed)
        for task in list(self._tasks):
            task.cancel()
        workers, self._workers = self._workers, []
        self._idle.clear()
        await asyncio.gather(*(self._stop(w, closed) for w in workers))

    async def _stop(self, worker: WorkerProcess, error: RecognitionError) -> None:
        if worker.current is not None:
            # Otherwise the worker would finish decoding it before noticing EOF.
            worker.send(wire.CANCEL, wire.UTTERANCE_ID.pack(worker.current.id))
            self._free(worker).settle(error)
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

    async def _spawn(self) -> WorkerProcess:
        proc = await asyncio.wait_for(
            spawn_worker(self._worker_args, log_path=self._log_path), self.startup_timeout
        )
        worker = WorkerProcess(proc, drain_timeout=self.timeout)
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

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- worker output ---------------------------------------------------------------------

    async def _read(self, worker: WorkerProcess) -> None:
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
                elif kind == wire.PARTIAL:
                    self._on_partial(worker, json.loads(payload))
                elif kind == wire.READY:
                    self._on_ready(worker)
        except asyncio.IncompleteReadError:
            pass
        except (ValueError, ConnectionError) as exc:
            reason = f"sent garbage ({exc})"
        finally:
            if worker.alive and not self._closed:
                self._on_exit(worker, reason)

    def _on_ready(self, worker: WorkerProcess) -> None:
        worker.startup_seconds = time.monotonic() - worker.spawned
        self._idle.append(worker)
        self._dispatch()
        if self._ready is not None:
            self._ready.set()

    def _on_result(self, worker: WorkerProcess, message: dict[str, object]) -> None:
        utterance = worker.current
        if utterance is None or message.get("id") != utterance.id:
            return  # a reply to an utterance that was cancelled meanwhile
        self._free(worker)
        utterance.settle(utterance.recognition(message))
        self._idle.append(worker)
        self._dispatch()

    def _on_partial(self, worker: WorkerProcess, message: object) -> None:
        utterance = worker.current
        if not isinstance(message, dict) or utterance is None or message.get("id") != utterance.id:
            return  # for an utterance cancelled meanwhile
        utterance.on_partial(str(message.get("text") or ""))

    def _on_exit(self, worker: WorkerProcess, reason: str) -> None:
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
            utterance = self._free(worker)
            utterance.settle(
                RecognitionError(
                    f"recognition worker {worker.pid} {reason} (exit code {code}) "
                    f"during utterance {utterance.id}"
                )
            )
        # A worker that dies before it is ready would die again at once: back off.
        self.stats["respawns"] += 1
        self._respawn_later(0.0 if worker.startup_seconds is not None else 1.0)
        self._track(self._reap(worker))

    async def _reap(self, worker: WorkerProcess) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.proc.wait(), 5.0)

    # -- scheduling ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._idle and self._waiting:
            worker = self._idle.popleft()
            if not worker.alive:
                continue
            utterance = self._waiting.popleft()
            utterance.stop_timer()
            worker.current = utterance
            if self.on_wait is not None:
                self.on_wait(time.monotonic() - utterance.created)
            if self.max_hold is not None:
                worker.hold_timer = asyncio.get_running_loop().call_later(
                    self.max_hold, self._held_too_long, worker, utterance
                )
            utterance.attach(worker)

    def _free(self, worker: WorkerProcess) -> SphinxUtterance:
        """`worker` lets go of its utterance (the caller settles it and idles the worker)."""
        utterance = worker.current
        assert utterance is not None
        worker.current = None
        if worker.hold_timer is not None:
            worker.hold_timer.cancel()
            worker.hold_timer = None
        return utterance

    def _held_too_long(self, worker: WorkerProcess, utterance: SphinxUtterance) -> None:
        if worker.current is not utterance:
            return
        # Longer than any utterance plus its decoding: a session that never let go of it,
        # or a wedged worker. Either way a fresh worker serves the next caller.
        self.stats["hold_kills"] += 1
        self._free(worker)
        utterance.settle(
            RecognitionError(f"utterance {utterance.id} held worker {worker.pid} "
                             f"past {self.max_hold:g} s")
        )
        worker.kill()  # the reader sees it exit and respawns it

    def _waited_too_long(self, utterance: SphinxUtterance) -> None:
        if utterance not in self._waiting:
            return
        self._waiting.remove(utterance)
        self.stats["wait_expired"] += 1
        if self.on_wait is not None:
            self.on_wait(time.monotonic() - utterance.created)
        utterance.settle(
            RecognitionError(f"no recognition worker became free in {self.max_wait:g} s")
        )

    def _worker_of(self, utterance: SphinxUtterance) -> WorkerProcess | None:
        return next((w for w in self._workers if w.current is utterance), None)

    def utterance_cancelled(self, utterance: SphinxUtterance) -> None:
        """Called by an utterance that is abandoned: free its worker or its queue place."""
        if utterance.settled:
            return
        worker = self._worker_of(utterance)
        utterance.stop_timer()
        utterance.settle(RecognitionError(f"utterance {utterance.id} was cancelled"))
        if worker is not None:
            worker.send(wire.CANCEL, wire.UTTERANCE_ID.pack(utterance.id))
            self._free(worker)
            if worker.alive:
                self._idle.append(worker)
            self._dispatch()
        else:
            with contextlib.suppress(ValueError):
                self._waiting.remove(utterance)

    def utterance_timed_out(self, utterance: SphinxUtterance) -> None:
        """Called by an utterance whose `finish()` ran out of time."""
        worker = self._worker_of(utterance)
        if worker is not None:
            # A worker that misses the deadline is wedged or hopelessly behind; a fresh one
            # serves the next caller better.
            self._free(worker)
            utterance.settle(
                RecognitionError(f"no result from worker {worker.pid} in {self.timeout:g} s")
            )
            worker.kill()
        else:
            utterance.stop_timer()
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
        if self.max_wait is not None and not utterance.settled and utterance.worker is None:
            utterance.timer = asyncio.get_running_loop().call_later(
                self.max_wait, self._waited_too_long, utterance
            )
        return utterance

    def _compile(self, grammar: Grammar) -> CompiledGrammar | str:
        entry = self._grammars.get(grammar)
        if entry is None:
            assert self._vocabulary is not None
            try:
                entry = compile_grammar(grammar, self._vocabulary)
            except InvalidValue as exc:
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
    def busy_workers(self) -> int:
        return sum(1 for w in self._workers if w.current is not None)

    @property
    def queued(self) -> int:
        return len(self._waiting)
