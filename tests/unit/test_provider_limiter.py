"""The provider limiter: AIMD concurrency, sliding RPM/TPM windows, FIFO waiters, the
queue time. Time is a fake clock that moves only when a test advances it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from ivr.providers.errors import ProviderBusy
from ivr.providers.limiter import INCREASE_AFTER, WINDOW_S, AdaptiveLimiter


class FakeTime:
    """A monotonic clock moved by `advance`; `sleep` wakes once the clock passes its end."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        entry = (self.now + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)

    async def advance(self, seconds: float) -> None:
        """Move the clock on, waking sleepers in deadline order, each at its deadline."""
        target = self.now + seconds
        while due := [s for s in self._sleepers if s[0] <= target and not s[1].done()]:
            self.now = max(self.now, min(t for t, _ in due))
            for t, fut in due:
                if t <= self.now:
                    fut.set_result(None)
            await settle()
        self.now = target
        await settle()


async def settle() -> None:
    """Let every ready task run until none is left runnable."""
    for _ in range(50):
        await asyncio.sleep(0)


def limiter(
    time: FakeTime, ceiling: int = 8, *, rpm: int = 0, tpm: int = 0, queue_s: float = 1.0
) -> AdaptiveLimiter:
    return AdaptiveLimiter("llm:test", ceiling, rpm=rpm, tpm=tpm, queue_s=queue_s, clock=time,
                           sleep=time.sleep)


async def one(lim: AdaptiveLimiter, *, throttled: bool = False) -> None:
    """One whole attempt: start, a 2xx or a 429, done."""
    slot = await lim.acquire()
    if throttled:
        lim.throttled(slot)
    else:
        lim.succeeded(slot)
    lim.release(slot)


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


# --- AIMD -----------------------------------------------------------------------------

async def test_limit_halves_on_each_429_and_floors_at_one(time: FakeTime) -> None:
    lim = limiter(time, ceiling=8)
    seen = []
    for _ in range(5):
        await one(lim, throttled=True)
        seen.append(lim.limit)
    assert seen == [4, 2, 1, 1, 1]


async def test_429s_of_requests_sent_under_the_old_limit_halve_it_once(time: FakeTime) -> None:
    """Three requests in flight all get a 429: one congestion signal, one halving."""
    lim = limiter(time, ceiling=8)
    slots = [await lim.acquire() for _ in range(3)]
    for slot in slots:
        lim.throttled(slot)
    assert lim.limit == 4
    await one(lim, throttled=True)  # sent after the decrease: a new signal
    assert lim.limit == 2


async def test_limit_recovers_one_per_20_successes_up_to_the_ceiling(time: FakeTime) -> None:
    lim = limiter(time, ceiling=5)
    for _ in range(3):
        await one(lim, throttled=True)
    assert lim.limit == 1
    limits = []
    for _ in range(INCREASE_AFTER * 6):
        await one(lim)
        limits.append(lim.limit)
    # +1 exactly at each 20th success, then held at the ceiling, never above it.
    assert [limits[i * INCREASE_AFTER - 1] for i in range(1, 7)] == [2, 3, 4, 5, 5, 5]
    assert limits[INCREASE_AFTER - 2] == 1 and max(limits) == 5


async def test_a_429_breaks_the_success_streak(time: FakeTime) -> None:
    lim = limiter(time, ceiling=8)
    await one(lim, throttled=True)
    for _ in range(INCREASE_AFTER - 1):
        await one(lim)
    await one(lim, throttled=True)  # 4 -> 2, and the 19 successes no longer count
    for _ in range(INCREASE_AFTER - 1):
        await one(lim)
    assert lim.limit == 2
    await one(lim)
    assert lim.limit == 3


async def test_shrinking_spares_requests_in_flight_new_ones_wait(time: FakeTime) -> None:
    """Four in flight when the limit halves to 2: all four finish normally; a new request
    starts only once fewer than two remain."""
    lim = limiter(time, ceiling=4)
    held = [await lim.acquire() for _ in range(4)]
    lim.throttled(held[0])
    assert (lim.limit, lim.in_flight) == (2, 4)
    waiting = asyncio.create_task(lim.acquire())
    await settle()
    for slot in held[:2]:
        lim.succeeded(slot)
        lim.release(slot)
        await settle()
        assert not waiting.done()  # 3, then 2 in flight: not below the limit of 2
    lim.release(held[2])
    await settle()
    assert waiting.done() and lim.in_flight == 2
    lim.release(held[3])
    lim.release(waiting.result())
    assert lim.in_flight == 0


# --- waiting and refusing ---------------------------------------------------------------

async def test_waiters_start_first_in_first_out(time: FakeTime) -> None:
    lim = limiter(time, ceiling=1)
    held = await lim.acquire()
    order: list[str] = []

    async def wait(name: str) -> None:
        slot = await lim.acquire()
        order.append(name)
        await settle()
        lim.release(slot)

    tasks = []
    for name in "abcd":
        tasks.append(asyncio.create_task(wait(name)))
        await settle()
    lim.release(held)
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c", "d"]


async def test_a_newcomer_does_not_overtake_a_waiter(time: FakeTime) -> None:
    """The slot freed while someone waits is theirs, even if a new request asks first."""
    lim = limiter(time, ceiling=1)
    held = await lim.acquire()
    waiter = asyncio.create_task(lim.acquire())
    await settle()
    lim.release(held)
    newcomer = asyncio.create_task(lim.acquire())
    await settle()
    assert waiter.done() and not newcomer.done()
    lim.release(waiter.result())
    await settle()
    assert newcomer.done()
    lim.release(newcomer.result())


async def test_no_start_within_the_queue_time_is_refused_busy(time: FakeTime) -> None:
    lim = limiter(time, ceiling=1, queue_s=1.0)
    held = await lim.acquire()
    waiting = asyncio.create_task(lim.acquire())
    await settle()
    await time.advance(0.999)
    assert not waiting.done()
    await time.advance(0.002)
    with pytest.raises(ProviderBusy) as caught:
        await waiting
    assert caught.value.reason == "busy" and lim.rejected == 1
    assert (lim.in_flight, lim.queued) == (1, 0)  # the request in flight is untouched
    lim.release(held)


async def test_a_waiter_that_gives_up_leaves_the_queue(time: FakeTime) -> None:
    """Cancelled (the caller hung up): the next waiter is served, no slot is lost."""
    lim = limiter(time, ceiling=1)
    held = await lim.acquire()
    first = asyncio.create_task(lim.acquire())
    await settle()
    second = asyncio.create_task(lim.acquire())
    await settle()
    first.cancel()
    await settle()
    lim.release(held)
    await settle()
    assert second.done() and lim.in_flight == 1 and lim.queued == 0
    lim.release(second.result())


def starts_per_window(starts: list[float]) -> int:
    """The most starts any half-open `WINDOW_S` window holds (the windows that matter
    begin at a start)."""
    return max(sum(1 for t in starts if s <= t < s + WINDOW_S) for s in starts)


async def burst(
    time: FakeTime, lim: AdaptiveLimiter, arrivals: list[float], tokens: int = 0
) -> tuple[list[float], int]:
    """Requests arriving at `arrivals` (s), each done at once: when each started, and how
    many were refused."""
    starts: list[float] = []
    refused = 0

    async def request() -> None:
        nonlocal refused
        try:
            slot = await lim.acquire(tokens)
        except ProviderBusy:
            refused += 1
            return
        starts.append(time())
        lim.succeeded(slot)
        lim.release(slot)

    tasks: list[Awaitable[None]] = []
    for at in arrivals:
        await time.advance(at - time())
        tasks.append(asyncio.create_task(request()))
        await settle()
    await time.advance(4 * WINDOW_S)
    await asyncio.gather(*tasks)
    return starts, refused


async def test_rpm_is_never_exceeded_in_any_sliding_window_under_a_burst(time: FakeTime) -> None:
    """RPM 5 and a queue time longer than the window: of 12 requests at once, 5 start at
    once, 5 as the window moves on, 2 are refused when their wait would pass the queue
    time; a drip later fills each window to 5 and no further."""
    lim = limiter(time, ceiling=100, rpm=5, queue_s=90.0)
    starts, refused = await burst(time, lim, [0.0] * 12)
    assert starts == [0.0] * 5 + [WINDOW_S] * 5 and refused == 2
    assert starts_per_window(starts) == 5
    drip = [300.0 + 7.0 * i for i in range(30)]
    more, _ = await burst(time, lim, drip)
    assert starts_per_window(more) == 5 and len(more) >= 15


async def test_a_full_window_is_refused_at_once_when_it_frees_too_late(time: FakeTime) -> None:
    lim = limiter(time, ceiling=100, rpm=3, queue_s=1.0)
    for _ in range(3):
        await one(lim)
    with pytest.raises(ProviderBusy, match="rate window"):
        await lim.acquire()  # the window frees in 60 s: no point waiting 1 s for it
    assert time() == 0.0


async def test_tpm_is_never_exceeded_in_any_sliding_window(time: FakeTime) -> None:
    """TPM 1000 with requests of ~300 tokens: three per window, whatever the burst."""
    lim = limiter(time, ceiling=100, tpm=1000, queue_s=200.0)
    starts, refused = await burst(time, lim, [0.0] * 8 + [10.0] * 4, tokens=300)
    assert starts_per_window(starts) == 3 and len(starts) == 12 and refused == 0
    for s in starts:  # tokens started in every window from a start: at most the budget
        assert 300 * sum(1 for t in starts if s <= t < s + WINDOW_S) <= 1000

