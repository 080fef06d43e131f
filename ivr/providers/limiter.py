"""Adaptive limits on one provider: AIMD concurrency, RPM/TPM windows, a bounded wait.

A provider's rate limit belongs to the account, not to us, and it moves; a 429 says
"fewer at once". So the number of requests in flight is adaptive, the way TCP finds a
link's capacity without being told it: the limit starts at the configured ceiling,
halves on a 429 (multiplicative decrease, never below 1) and grows by one after
`INCREASE_AFTER` successes in a row (additive increase, never above the ceiling). One
decrease per *generation*: requests started before the last decrease were sent under the
old limit, so their 429s, which arrive together, say the same thing once.

Requests and tokens per minute, when configured, are counted over a sliding window of
start times, so no `WINDOW_S` span ever holds more, whatever the burst; a retry is a
request. A start that would break either waits for the window to move on.

Waiters start first in, first out. A request that cannot start within the queue time is
refused (`ProviderBusy`) at once when the wait is known to be longer (a full RPM window),
else when its time runs out: on a phone call the embedded engine now beats the remote
one later. Lowering the limit never touches requests in flight; they finish, and new
ones wait until fewer than the limit remain.

Time comes from the injected `clock` and `sleep` (the provider client's), so tests drive
every wait with a fake clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import structlog

from ivr.providers.errors import ProviderBusy

__all__ = [
    "CHARS_PER_TOKEN",
    "INCREASE_AFTER",
    "WINDOW_S",
    "AdaptiveLimiter",
    "Slot",
    "estimate_tokens",
]

log = structlog.get_logger("ivr.providers")

WINDOW_S = 60.0
INCREASE_AFTER = 20
# Rough English text tokenization for budgeting before the provider counts: ~4
# characters a token (OpenAI's rule of thumb); what matters is the order of magnitude.
CHARS_PER_TOKEN = 4


def estimate_tokens(body: Any) -> int:
    """A rough token count of a JSON request body, for the TPM budget (chars / 4)."""
    return len(json.dumps(body, separators=(",", ":"))) // CHARS_PER_TOKEN


@dataclass(frozen=True, slots=True)
class Slot:
    """One granted start: give it back with `release`; `generation` dates its limit."""

    generation: int
    waited: float


class _Waiter:
    __slots__ = ("tokens", "wake")

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class AdaptiveLimiter:
    """The limits of one provider client; `acquire` a `Slot` per attempt, then `release`.

    `rpm` / `tpm` of 0 mean no such limit. `ceiling` is `IVR_{ROLE}_CONCURRENCY`.
    """

    def __init__(
        self,
        name: str,
        ceiling: int,
        *,
        rpm: int = 0,
        tpm: int = 0,
        queue_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.ceiling = max(1, ceiling)
        self.limit = self.ceiling
        self.rpm = rpm
        self.tpm = tpm
        self.queue_s = queue_s
        self._clock = clock
        self._sleep = sleep
        self.in_flight = 0
        self.rejected = 0
        self._generation = 0
        self._streak = 0
        self._queue: deque[_Waiter] = deque()
        self._starts: deque[float] = deque()
        self._spent: deque[tuple[float, int]] = deque()
        self._tokens_in_window = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def acquire(self, tokens: int = 0) -> Slot:
        """A slot once this request may start, or `ProviderBusy` past the queue time.

        `tokens` is the request's estimated size for the TPM budget; one larger than the
        whole budget is counted as the whole budget (it waits for an empty window).
        """
        tokens = min(max(tokens, 0), self.tpm) if self.tpm else 0
        started = self._clock()
        deadline = started + self.queue_s
        waiter = _Waiter(tokens)
        self._queue.append(waiter)
        try:
            while True:
                now = self._clock()
                first = self._queue[0] is waiter
                window = self._window_wait(now, tokens) if first else 0.0
                if first and window <= 0 and self.in_flight < self.limit:
                    self._start(now, tokens)
                    return Slot(self._generation, now - started)
                remaining = deadline - now
                if remaining <= 0 or window > remaining:
                    raise self._busy(window)
                if waiter.wake.done():
                    waiter.wake = asyncio.get_running_loop().create_future()
                await self._wait(waiter.wake, min(window, remaining) if window > 0 else remaining)
        finally:
            self._queue.remove(waiter)
            self._wake_first()

    def release(self, slot: Slot) -> None:
        """The attempt is over (answered, failed or cancelled): its place is free."""
        self.in_flight -= 1
        self._wake_first()

    def succeeded(self, slot: Slot) -> None:
        """A 2xx: after `INCREASE_AFTER` in a row the limit grows by one, up to the ceiling."""
        self._streak += 1
        if self._streak < INCREASE_AFTER:
            return
        self._streak = 0
        if self.limit < self.ceiling:
            self.limit += 1
            log.info("provider_limit", provider=self.name, limit=self.limit, change="increase")
            self._wake_first()

    def throttled(self, slot: Slot) -> None:
        """A 429: the limit halves (floor 1), once for all requests of one generation."""
        self._streak = 0
        if slot.generation != self._generation:
            return
        self._generation += 1
        previous, self.limit = self.limit, max(1, self.limit // 2)
        log.warning("provider_limit", provider=self.name, limit=self.limit, previous=previous,
                    change="decrease")

    def _start(self, now: float, tokens: int) -> None:
        self.in_flight += 1
        if self.rpm:
            self._starts.append(now)
        if tokens:
            self._spent.append((now, tokens))
            self._tokens_in_window += tokens

    def _window_wait(self, now: float, tokens: int) -> float:
        """Seconds until a start of `tokens` fits both windows (0: it fits now)."""
        horizon = now - WINDOW_S
        while self._starts and self._starts[0] <= horizon:
            self._starts.popleft()
        while self._spent and self._spent[0][0] <= horizon:
            self._tokens_in_window -= self._spent.popleft()[1]
        wait = 0.0
        if self.rpm and len(self._starts) >= self.rpm:
            # The start that must leave the window before one more fits in it.
            wait = self._starts[len(self._starts) - self.rpm] + WINDOW_S - now
        over = self._tokens_in_window + tokens - self.tpm if self.tpm else 0
        for at, spent in self._spent:
            if over <= 0:
                break
            over -= spent
            wait = max(wait, at + WINDOW_S - now)
        return wait

    def _busy(self, window: float) -> ProviderBusy:
        self.rejected += 1
        why = (f"the {WINDOW_S:.0f} s rate window frees up in {window:.1f} s" if window > 0
               else f"{self.in_flight} in flight at limit {self.limit}")
        return ProviderBusy(self.name, f"no start within {self.queue_s * 1000:.0f} ms: {why}")

    def _wake_first(self) -> None:
        if self._queue and not self._queue[0].wake.done():
            self._queue[0].wake.set_result(None)

    async def _wait(self, wake: asyncio.Future[None], seconds: float) -> None:
        """Until `wake` is set or `seconds` pass on the injected clock's `sleep`."""
        timer = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait((wake, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            with suppress(asyncio.CancelledError):
                await timer
