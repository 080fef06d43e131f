"""Admission control: whether this process takes one more call.

A call is refused when the process is draining, when `IVR_MAX_CALLS` calls are live or
opening, or when the event loop runs late (`IVR_MAX_LOOP_LAG_MS`, p99 over 5 s). Past
capacity every call degrades together (late frames everywhere, then recognition
time-outs), so one caller told "busy" is better than all of them half-served.

Two doors ask: `/voice` answers a busy TwiML, `/media` refuses the upgrade (503). A
stream counts from its upgrade, not from its `start`: a burst of upgrades would
otherwise all pass a check that counts only started calls, and overshoot the cap.

The loop lag comes from `LoopLag`, a probe task the app owns (`lag_ctx`): it sleeps
`PROBE_S` and records how late it woke. Any other `LagSource` can stand in (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Literal, Protocol

import structlog
from aiohttp import web

from ivr.server.services import SERVICES, Services

log = structlog.get_logger("ivr.admission")

# The labels of ivr_calls_refused (analytics/metrics.py REFUSAL_*).
RefusalReason = Literal["cap", "lag", "draining"]
Door = Literal["voice", "media"]

# One probe per media frame's worth of time: 250 samples in the 5 s window, so the p99
# is the third-worst wake-up and one stall (a GC pause, a slow disk) refuses nobody.
PROBE_S = 0.020
WINDOW_S = 5.0


class LagSource(Protocol):
    def p99_ms(self) -> float:
        """The event loop's p99 lateness over the recent window, in ms."""
        ...


class NoLag:
    def p99_ms(self) -> float:
        return 0.0


class LoopLag:
    """How late the event loop wakes a `PROBE_S` sleep, over the last `window_s`."""

    def __init__(
        self, *, probe_s: float = PROBE_S, window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe_s = probe_s
        self.window_s = window_s
        self.clock = clock
        self._samples: deque[tuple[float, float]] = deque()  # (when, lag in s)

    def record(self, lag_s: float) -> None:
        now = self.clock()
        self._samples.append((now, max(0.0, lag_s)))
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()

    def p99_ms(self) -> float:
        """Nearest-rank p99 over a full window: a window not yet full (a process just
        started) counts its missing probes as on time, so its first stall is not its p99."""
        now = self.clock()
        lags = sorted((lag for t, lag in self._samples if t >= now - self.window_s),
                      reverse=True)
        full = max(len(lags), round(self.window_s / self.probe_s))
        worse = full - math.ceil(0.99 * full)  # probes allowed above the p99
        return lags[worse] * 1000 if worse < len(lags) else 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.probe_s)
            self.record(loop.time() - t0 - self.probe_s)


class Admission:
    """The decision, and the count of streams opening (upgraded, no `start` yet)."""

    def __init__(self, services: Services, lag: LagSource | None = None) -> None:
        self.services = services
        self.lag: LagSource = lag if lag is not None else NoLag()
        self.opening = 0

    @property
    def live(self) -> int:
        """Calls in the live set, and streams admitted that have not started yet."""
        return len(self.services.calls) + self.opening

    def refusal(self) -> RefusalReason | None:
        s = self.services.settings
        if self.services.draining:
            return "draining"
        if s.max_calls and self.live >= s.max_calls:
            return "cap"
        if s.max_loop_lag_ms and self.lag.p99_ms() > s.max_loop_lag_ms:
            return "lag"
        return None

    def refuse(self, door: Door) -> RefusalReason | None:
        """The refusal for a new call at `door`, counted and logged; None admits it."""
        reason = self.refusal()
        if reason is not None:
            self.services.counters[f"refused.{reason}"] += 1
            self.services.metrics.call_refused(door, reason)
            log.warning("call_refused", door=door, reason=reason, live=self.live,
                        loop_lag_p99_ms=round(self.lag.p99_ms(), 1))
        return reason

    def open_stream(self) -> StreamSlot:
        """Hold a place for a stream admitted at `/media` until it starts or closes.

        Taken with no await after the check, so no other upgrade can slip in between."""
        self.opening += 1
        return StreamSlot(self)


class StreamSlot:
    """An admitted stream's place while it opens; `opened()` once it is in the live set
    (or gone). Idempotent."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def opened(self) -> None:
        if self._admission is not None:
            self._admission.opening -= 1
            self._admission = None


ADMISSION = web.AppKey("admission", Admission)


async def lag_ctx(app: web.Application) -> AsyncIterator[None]:
    """The loop-lag probe, for as long as the app serves."""
    admission = app[ADMISSION]
    monitor = LoopLag()
    admission.lag = monitor
    app[SERVICES].metrics.observe_loop_lag(lambda: admission.lag.p99_ms())
    task = asyncio.create_task(monitor.run(), name="loop-lag")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
