"""pocketsphinx recognition in a pool of worker processes.

pocketsphinx holds the GIL while decoding, so each worker is a separate process
(`python -m ivr.speech.sphinx.worker`, frames in `ivr.speech.sphinx.wire`) at a lower CPU
priority. Nothing here blocks the event loop: audio goes out through non-blocking pipe
writes and results come back through a reader task per worker.

A worker holds up to `slots` utterances at once and decodes each one's audio as it arrives
(`ivr.speech.sphinx.worker`): a caller's answer takes a fraction of its length to decode,
so a worker given one utterance at a time sat idle while the caller spoke and callers who
answered together queued for whole utterances. A new utterance goes to the least-loaded
worker with a free slot (at most one free-speech utterance per worker: it needs the
worker's one language-model decoder). When every slot is taken it buffers its audio in
memory and takes the next slot that frees up, in FIFO order, so `start()` and `feed()`
never wait.

Nothing can hold a slot for good: an utterance that waits for one longer than `max_wait`
fails (its turn is a no-match and the flow's retry or keypad path takes over); one held
longer than `max_hold`, or whose result misses `finish()`'s `timeout`, is cancelled inside
its worker while the worker's other utterances go on. A worker that does not acknowledge
that cancel within `cancel_grace` is wedged and is killed; a worker that exits is respawned
and every utterance it held fails at once.
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
# Utterances one worker decodes at once. A grammar answer costs ~15 ms of CPU per second
# of speech and ~6 MB per decoder slot (`ivr.speech.sphinx.decoding`); see `ivr bench
# recognizer --rate` for how the figure was chosen.
DEFAULT_SLOTS: Final = 8


class RecognizerPool:
    """`Recognizer` over `size` pocketsphinx worker processes.

    Use as `async with RecognizerPool(2) as pool:` or call `start_workers()` / `close()`.
    `timeout` bounds `finish()` (waiting for a worker, decoding, the reply); `log_path`
    collects the workers' stderr; `sched_idle` runs them under SCHED_IDLE on top of nice 10
    (see `ivr.speech.sphinx.worker.lower_priority`). `max_wait` bounds the wait for a free
    slot and `max_hold` how long one utterance may hold one (None: no bound); `on_wait`
    is told each wait for a slot, in seconds. `slots` is how many utterances one worker
    decodes at once (1: one after another, as before issue 12); `cancel_grace` how long
    a worker may take to acknowledge a cancel before it is killed as wedged.
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
        slots: int = DEFAULT_SLOTS,
        cancel_grace: float = 2.0,
    ) -> None:
        if size < 1:
            raise InvalidValue("a pool needs at least one worker")
        if slots < 1:
            raise InvalidValue("a worker needs at least one slot")
        for name, bound in (("max_wait", max_wait), ("max_hold", max_hold)):
            if bound is not None and bound <= 0:
                raise InvalidValue(f"{name} must be positive, got {bound}")
        self.size = size
        self.timeout = timeout  # bound on finish(): queueing, decoding and the reply
        self.startup_timeout = startup_timeout
        self.max_wait = max_wait
        self.max_hold = max_hold
        self.on_wait = on_wait
        self.slots = slots
        self.cancel_grace = cancel_grace
        # respawns; hold_cancels (an utterance held past max_hold or timeout, cancelled in
        # its worker); hold_kills (a worker that did not acknowledge such a cancel);
        # wait_expired (no free slot in max_wait)
        self.stats: Counter[str] = Counter()
        self._log_path = log_path
        self._worker_args = ["--sched-idle"] if sched_idle else []
        self._workers: list[WorkerProcess] = []
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
        await asyncio.gather(*(self._stop(w, closed) for w in workers))

    async def _stop(self, worker: WorkerProcess, error: RecognitionError) -> None:
        for utterance in list(worker.utterances.values()):
            # Otherwise the worker would finish decoding it before noticing EOF.
            worker.send(wire.CANCEL, wire.UTTERANCE_ID.pack(utterance.id))
            self._release(worker, utterance)
            utterance.settle(error)
        self._stop_watchdogs(worker)
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
                elif kind == wire.DROPPED:
                    self._on_dropped(worker, wire.UTTERANCE_ID.unpack_from(payload)[0])
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
        self._dispatch()
        if self._ready is not None:
            self._ready.set()

    def _on_result(self, worker: WorkerProcess, message: dict[str, object]) -> None:
        utterance = _held(worker, message.get("id"))
        if utterance is None:
            return  # a reply to an utterance that was cancelled meanwhile
        self._release(worker, utterance)
        utterance.settle(utterance.recognition(message))
        self._dispatch()

    def _on_partial(self, worker: WorkerProcess, message: object) -> None:
        if not isinstance(message, dict):
            return
        utterance = _held(worker, message.get("id"))
        if utterance is not None:  # else for an utterance cancelled meanwhile
            utterance.on_partial(str(message.get("text") or ""))

    def _on_dropped(self, worker: WorkerProcess, uid: int) -> None:
        watchdog = worker.cancelling.pop(uid, None)
        if watchdog is not None:
            watchdog.cancel()
            self._dispatch()  # alive after all: it may take new work again

    def _on_exit(self, worker: WorkerProcess, reason: str) -> None:
        worker.alive = False
        worker.kill()
        code = worker.proc.returncode
        with contextlib.suppress(ValueError):
            self._workers.remove(worker)
        if self._ready is not None:
            self._ready.set()
        self._stop_watchdogs(worker)
        # Every turn it held is a no-match now, not when each one's timeout runs out.
        for utterance in list(worker.utterances.values()):
            self._release(worker, utterance)
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
        """Give waiting utterances free slots, oldest first, each on the least-loaded
        worker that can take it."""
        if not self._waiting:
            return
        still: deque[SphinxUtterance] = deque()
        while self._waiting:
            utterance = self._waiting.popleft()
            worker = self._pick(utterance)
            if worker is None:
                still.append(utterance)
            else:
                self._assign(worker, utterance)
        self._waiting = still

    def _pick(self, utterance: SphinxUtterance) -> WorkerProcess | None:
        fits = [
            w for w in self._workers
            if w.ready and len(w.utterances) < self.slots
            and not (utterance.wants_lm and w.lm_busy)
        ]
        return min(fits, key=lambda w: len(w.utterances), default=None)

    def _assign(self, worker: WorkerProcess, utterance: SphinxUtterance) -> None:
        utterance.stop_timer()
        worker.utterances[utterance.id] = utterance
        if self.on_wait is not None:
            self.on_wait(time.monotonic() - utterance.created)
        if self.max_hold is not None:
            utterance.hold_timer = asyncio.get_running_loop().call_later(
                self.max_hold, self._held_too_long, worker, utterance, self.max_hold
            )
        utterance.attach(worker)

    def _release(self, worker: WorkerProcess, utterance: SphinxUtterance) -> None:
        """`worker` lets go of `utterance` (the caller settles it and dispatches)."""
        worker.utterances.pop(utterance.id, None)
        utterance.stop_hold_timer()

    def _cancel_stuck(
        self, worker: WorkerProcess, utterance: SphinxUtterance, error: RecognitionError
    ) -> None:
        """Cancel `utterance` inside its worker; the worker's other utterances go on unless
        it does not acknowledge within `cancel_grace` (then it is wedged and is killed)."""
        self.stats["hold_cancels"] += 1
        self._release(worker, utterance)
        utterance.settle(error)
        worker.send(wire.CANCEL, wire.UTTERANCE_ID.pack(utterance.id))
        if worker.alive:
            worker.cancelling[utterance.id] = asyncio.get_running_loop().call_later(
                self.cancel_grace, self._unacknowledged, worker, utterance.id
            )
        self._dispatch()

    def _unacknowledged(self, worker: WorkerProcess, uid: int) -> None:
        if worker.cancelling.pop(uid, None) is not None and worker.alive:
            self.stats["hold_kills"] += 1
            worker.kill()  # the reader sees it exit, fails what it held and respawns it

    @staticmethod
    def _stop_watchdogs(worker: WorkerProcess) -> None:
        for watchdog in worker.cancelling.values():
            watchdog.cancel()
        worker.cancelling.clear()

    def _held_too_long(
        self, worker: WorkerProcess, utterance: SphinxUtterance, hold: float
    ) -> None:
        if _held(worker, utterance.id) is not utterance:
            return
        # Longer than any utterance plus its decoding: a session that never let go of it.
        self._cancel_stuck(worker, utterance, RecognitionError(
            f"utterance {utterance.id} held worker {worker.pid} past {hold:g} s"
        ))

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
        return next((w for w in self._workers if _held(w, utterance.id) is utterance), None)

    def utterance_cancelled(self, utterance: SphinxUtterance) -> None:
        """Called by an utterance that is abandoned: free its slot or its queue place."""
        if utterance.settled:
            return
        worker = self._worker_of(utterance)
        utterance.settle(RecognitionError(f"utterance {utterance.id} was cancelled"))
        if worker is not None:
            worker.send(wire.CANCEL, wire.UTTERANCE_ID.pack(utterance.id))
            self._release(worker, utterance)
            self._dispatch()
        else:
            with contextlib.suppress(ValueError):
                self._waiting.remove(utterance)

    def utterance_timed_out(self, utterance: SphinxUtterance) -> None:
        """Called by an utterance whose `finish()` ran out of time."""
        worker = self._worker_of(utterance)
        if worker is not None:
            # Wedged, or hopelessly behind: whether it acknowledges the cancel tells which.
            self._cancel_stuck(worker, utterance, RecognitionError(
                f"no result from worker {worker.pid} in {self.timeout:g} s"
            ))
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
        if self.max_wait is not None and utterance in self._waiting:
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
        """Workers ready for work and holding no utterance."""
        return sum(1 for w in self._workers if w.ready and not w.utterances)

    @property
    def busy_workers(self) -> int:
        """Workers holding at least one utterance."""
        return sum(1 for w in self._workers if w.utterances)

    @property
    def busy_slots(self) -> int:
        """Utterances held by workers (at most `size * slots`)."""
        return sum(len(w.utterances) for w in self._workers)

    def pid_of(self, utterance: SphinxUtterance) -> int | None:
        """The worker holding `utterance`, if one does."""
        worker = self._worker_of(utterance)
        return worker.pid if worker is not None else None

    @property
    def queued(self) -> int:
        return len(self._waiting)


def _held(worker: WorkerProcess, uid: object) -> SphinxUtterance | None:
    return worker.utterances.get(uid) if isinstance(uid, int) else None
