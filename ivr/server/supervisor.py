"""`ivr serve --processes N`: N server processes on one port under a small supervisor.

One process is one event loop, about one core's worth of calls (README, Performance).
With `IVR_PROCESSES` > 1 `ivr serve` becomes this supervisor: it opens no port and no
database itself and runs N children, each a plain `ivr serve --processes 1`, which:

- listen on the same host:port with SO_REUSEPORT: the kernel spreads new connections
  over them, and a child that dies takes only its own sockets with it;
- share one stream secret (`IVR_STREAM_SECRET`): drawn here when neither it nor
  `TWILIO_AUTH_TOKEN` is configured, since Twilio's `/voice` and `/media` of one call
  may reach different children;
- share the cores: without `--recognizer-workers` / `IVR_RECOGNIZER_WORKERS` each child's
  recognizer pool gets cores // N workers (at least 1, at most the single-process 4);
- have an instance id each (`IVR_INSTANCE_ID`; configured: `<id>-<slot>`, else the
  child's own host-pid-random), so the store tells their calls apart; a restarted child
  closes as `interrupted` only calls whose heartbeat is stale, never a live sibling's;
- write their metrics to one `PROMETHEUS_MULTIPROC_DIR` (a temporary directory made and
  removed here), so any child's `/metrics` covers them all (`analytics.metrics`).

The first child starts alone and the others once it listens: it creates or upgrades the
database schema, which N processes must not race at. A first child that exits before it
listens is a configuration error (port taken, bad flows): the supervisor exits 1. Later,
a child that exits is started again after a backoff (1 s, doubling to 30 s; back to 1 s
once a child has run `_STEADY_S`), so a crash loop does not spin.

SIGTERM is forwarded to every child, each drains (`IVR_DRAIN_S`), and the supervisor
exits 0 once all have exited (1 if one failed). A second SIGTERM, or SIGINT, is
forwarded too: the children end their calls at once. SIGHUP (reload the flows) is
forwarded as it is. Children run in a session of their
own, so a signal meant for the whole group reaches them once, through here; under
systemd use `KillMode=mixed`. If the supervisor itself is killed, each child is sent
SIGTERM by the kernel (Linux `PR_SET_PDEATHSIG`) and drains.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

import structlog

__all__ = ["READY_FD_ENV", "Supervisor", "child_ready_notifier", "workers_per_process"]

log = structlog.get_logger("ivr.server.supervisor")

# The supervisor tells a child where to say it listens; set only in children's environment.
READY_FD_ENV = "IVR_SUPERVISOR_READY_FD"
_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 30.0
# A child that ran this long was not crash-looping: its next restart waits the first step.
_STEADY_S = 60.0
# The first child loads flows, opens the store and binds within seconds; a minute is a hang.
_FIRST_READY_S = 60.0
_TICK_S = 0.1
_PR_SET_PDEATHSIG = 1


def workers_per_process(processes: int, cores: int | None = None) -> int:
    """Recognizer workers for each of `processes` children: the cores shared out, at least
    one, at most the single-process default's cap of 4."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 2)
    return min(4, max(1, cores // processes))


def child_ready_notifier() -> Callable[[], None] | None:
    """In a supervised child: a function that tells the supervisor the port is open.
    None when this process is not a supervisor's child."""
    raw = os.environ.pop(READY_FD_ENV, "")
    if not raw.isdigit():
        return None
    fd = int(raw)

    def ready() -> None:
        with contextlib.suppress(OSError):
            os.write(fd, b"1")
            os.close(fd)

    return ready


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    # Linux only: the child gets SIGTERM (and drains) when the supervisor dies.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class _Child:
    slot: int
    proc: subprocess.Popen[bytes]
    ready_fd: int | None  # read end; None once the child said it is ready (or died)
    started: float


@dataclass(slots=True)
class _Slot:
    backoff_s: float
    restart_at: float | None = None  # when a dead child's successor starts
    restarts: int = 0
    listened: bool = False  # a child in this slot has said it listens, at least once


@dataclass
class Supervisor:
    """Runs `command` (an `ivr serve --processes 1`) `processes` times with `env` laid
    over the environment, as the module docstring says. `run()` returns the exit code."""

    command: Sequence[str]
    env: dict[str, str]
    processes: int
    instance_id: str = ""  # configured IVR_INSTANCE_ID: each child gets `<id>-<slot>`
    backoff_first_s: float = _BACKOFF_FIRST_S
    backoff_max_s: float = _BACKOFF_MAX_S
    steady_s: float = _STEADY_S
    print: Callable[[str], None] = field(default=lambda m: print(m, file=sys.stderr))
    _children: dict[int, _Child] = field(default_factory=dict)
    _slots: dict[int, _Slot] = field(default_factory=dict)
    _signals: list[int] = field(default_factory=list)
    _stopping: bool = False
    _failed: bool = False
    metrics_dir: str = ""

    def run(self) -> int:
        self.metrics_dir = tempfile.mkdtemp(prefix="ivr-metrics-")
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for child in list(self._children.values()):  # only after an exception
                with contextlib.suppress(OSError):
                    child.proc.kill()
                child.proc.wait()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _loop(self) -> int:
        self._slots = {slot: _Slot(self.backoff_first_s) for slot in range(self.processes)}
        self._spawn(0)
        started_all = False
        while True:
            self._forward_signals()
            self._reap()
            if self._stopping:
                if not self._children:
                    log.info("supervisor_stopped", failed=self._failed)
                    return 1 if self._failed else 0
            elif not started_all:
                first = self._children.get(0)
                if self._slots[0].listened:
                    for slot in range(1, self.processes):
                        self._spawn(slot)
                    started_all = True
                    self.print(f"ivr: {self.processes} server processes, supervisor pid "
                               f"{os.getpid()} (SIGTERM drains them all)")
                elif first is None:  # the first child died before it listened
                    log.error("first_process_failed")
                    self.print("ivr: the first server process exited before it listened "
                               "(see its error above); not starting the others")
                    return 1
                elif time.monotonic() - first.started > _FIRST_READY_S:
                    self.print("ivr: the first server process did not listen within "
                               f"{_FIRST_READY_S:g} s; stopping")
                    self._failed = True
                    self._stop(signal.SIGTERM)
            else:
                self._restart_due()
            self._wait_ready(_TICK_S)

    def _spawn(self, slot: int) -> None:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **self.env, READY_FD_ENV: str(write_fd),
               "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir, "IVR_PROCESSES": "1"}
        if self.instance_id:
            env["IVR_INSTANCE_ID"] = f"{self.instance_id}-{slot}"
        try:
            # start_new_session: a group-wide signal (a terminal's Ctrl-C) must not
            # reach the children beside the one forwarded here, which would hurry them.
            proc = subprocess.Popen(
                list(self.command), env=env, pass_fds=(write_fd,), start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        finally:
            os.close(write_fd)
        self._children[slot] = _Child(slot, proc, read_fd, time.monotonic())
        log.info("process_started", slot=slot, pid=proc.pid,
                 restarts=self._slots[slot].restarts)

    def _wait_ready(self, timeout: float) -> None:
        """Sleep up to `timeout`, waking when a child says it listens (or its pipe closes)."""
        fds = {c.ready_fd: c for c in self._children.values() if c.ready_fd is not None}
        if not fds:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(fds), [], [], timeout)
        for fd in readable:
            child = fds[fd]
            self._read_ready(child)

    def _read_ready(self, child: _Child) -> None:
        """The child's word on its pipe: a byte when it listens, EOF when it died first."""
        assert child.ready_fd is not None
        data = os.read(child.ready_fd, 1)
        os.close(child.ready_fd)
        child.ready_fd = None
        if data:
            self._slots[child.slot].listened = True
            log.info("process_ready", slot=child.slot, pid=child.proc.pid)

    def _reap(self) -> None:
        for slot, child in list(self._children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            del self._children[slot]
            if child.ready_fd is not None:  # it may have said so just before it died
                self._read_ready(child)
            self._metrics_dead(child.proc.pid)
            ran = time.monotonic() - child.started
            state = self._slots[slot]
            if self._stopping:
                log.info("process_exited", slot=slot, pid=child.proc.pid, code=code)
                self._failed |= code != 0
                continue
            if ran >= self.steady_s:
                state.backoff_s = self.backoff_first_s
            state.restart_at = time.monotonic() + state.backoff_s
            log.error("process_died", slot=slot, pid=child.proc.pid, code=code,
                      ran_s=round(ran, 1), restart_in_s=state.backoff_s)
            state.backoff_s = min(self.backoff_max_s, state.backoff_s * 2)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for slot, state in self._slots.items():
            if state.restart_at is not None and now >= state.restart_at:
                state.restart_at = None
                state.restarts += 1
                self._spawn(slot)

    def _forward_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:  # reload the flows, in every process
                for child in self._children.values():
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(signal.SIGHUP)
                continue
            # A second SIGTERM hurries the children as it hurries one process.
            log.info("supervisor_signal", signal=signal.Signals(signum).name,
                     again=self._stopping)
            self._stop(signal.Signals(signum))

    def _stop(self, sig: signal.Signals) -> None:
        self._stopping = True
        for state in self._slots.values():
            state.restart_at = None
        for child in self._children.values():
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(sig)

    def _metrics_dead(self, pid: int) -> None:
        # Its live gauges (active calls) leave the sums; its counters stay in them.
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]
