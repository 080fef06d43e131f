"""One recognition worker process as the pool sees it: how it is started, frames written
to it without ever blocking the loop, and how it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Final

from ivr.speech.sphinx import wire
from ivr.speech.sphinx.decoding import check_decoder_overrides
from ivr.speech.sphinx.utterance import SphinxUtterance

__all__ = ["WorkerProcess", "spawn_worker"]

WORKER_MODULE: Final = "ivr.speech.sphinx.worker"
_DRAIN_THRESHOLD: Final = 1024 * 1024  # ~30 s of audio the worker has not read yet


@dataclass(eq=False)
class WorkerProcess:
    """A running worker and the utterances it holds (at most the pool's `slots`)."""

    proc: asyncio.subprocess.Process
    drain_timeout: float  # a worker that reads nothing for this long is wedged
    spawned: float = field(default_factory=time.monotonic)
    startup_seconds: float | None = None
    alive: bool = True
    utterances: dict[int, SphinxUtterance] = field(default_factory=dict)  # by id
    # Utterances the pool cancelled because they were stuck, until the worker acknowledges
    # (DROPPED): the timer kills a worker that does not. No new work meanwhile.
    cancelling: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    drainer: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ready(self) -> bool:
        """Alive, models loaded, and not suspected of being wedged."""
        return self.alive and self.startup_seconds is not None and not self.cancelling

    @property
    def lm_busy(self) -> bool:
        """Its one language-model decoder is taken (see `ivr.speech.sphinx.decoding`)."""
        return any(u.wants_lm for u in self.utterances.values())

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
            await asyncio.wait_for(stdin.drain(), self.drain_timeout)
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


async def spawn_worker(args: list[str], *, log_path: str | None) -> asyncio.subprocess.Process:
    """Start `python -m ivr.speech.sphinx.worker *args`; its stderr goes to `log_path`
    (appended) or nowhere. A malformed `IVR_SPHINX_CONFIG` is a ValueError here, naming it."""
    check_decoder_overrides()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if log_path else None
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log if log is not None else asyncio.subprocess.DEVNULL,
        )
    finally:
        if log is not None:
            os.close(log)  # the child has its own descriptor
