"""One shared 20 ms clock that sends every call's due outbound frames.

A sleeping task per call (wake, send one frame, sleep 20 ms) costs a task switch and a
timer per frame per call: at 1,000 calls that is 50,000 wake-ups a second. Here one
timer ticks every 20 ms for the whole process and walks the calls that have audio
queued; each call (`Channel`) holds its prompts as already-encoded frames (opaque
strings from the outbound port, see `Sink`), so a tick is a loop of non-blocking writes.

Pacing per call is the player's: an estimate of when the audio already sent will have
finished playing at the far end (`buffer_end`); a frame goes out once no more than
`lead` seconds are buffered ahead of now, and each frame moves the estimate by exactly
20 ms. A late tick therefore sends what is due (catching up) but never more than `lead`
ahead; a channel whose buffer ran dry restarts its estimate from now instead of
bursting. The clock's own deadlines are absolute (previous + 20 ms, drift-free); a
tick more than a period late skips to now rather than firing back-to-back.

The `Sink` writes must not block: one slow socket may not hold up the tick for the
others (the telephony adapter queues behind a send that waits on the transport).
The clock runs only while some channel has audio queued, on the running event loop.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from ivr.audio.codec import FRAME_SECONDS

__all__ = ["Channel", "FrameClock", "Sink", "Tally", "shared_clock"]

PERIOD = FRAME_SECONDS
log = structlog.get_logger("ivr.audio.clock")


class Sink(Protocol):
    """A call's outbound writes as the clock makes them: non-blocking, in order."""

    def media(self, piece: bytes) -> None:
        """Send one encoded 20 ms frame (a piece from the port's `encode`)."""

    def mark(self, name: str) -> None:
        """Send a mark after the frames sent so far."""


class Tally(Protocol):
    """What a prompt counts of its frames as they go out (`player.Prompt` is one)."""

    frames: int
    late_frames: int
    first_frame_at: float | None


@dataclass(slots=True)
class _Frames:
    tally: Tally
    pieces: Sequence[bytes]
    pos: int = 0


@dataclass(slots=True)
class _Mark:
    name: str
    on_sent: Callable[[], None]


class Channel:
    """One call's queue of encoded frames and marks, paced on the shared clock."""

    __slots__ = ("_clock", "_drops", "_lead", "_now", "_pumping", "_queue", "_sink",
                 "active", "buffer_end", "frames_sent", "late_frames")

    def __init__(self, clock: FrameClock, sink: Sink, *, lead: float,
                 now: Callable[[], float]) -> None:
        self._clock = clock
        self._sink = sink
        self._lead = lead
        self._now = now
        self._queue: deque[_Frames | _Mark] = deque()
        self._pumping = False
        self._drops = 0  # bumped by drop/restart: a pump under way stops at once
        self.active = False  # in the clock's list of channels to pump
        self.buffer_end = 0.0  # when the audio sent so far ends playing at the far end
        self.frames_sent = 0
        self.late_frames = 0

    @property
    def queued(self) -> bool:
        return bool(self._queue)

    def frames(self, tally: Tally, pieces: Sequence[bytes]) -> None:
        """Queue encoded frames; what is due goes out now, the rest on the ticks."""
        if pieces:
            self._queue.append(_Frames(tally, pieces))
            self._start()

    def mark(self, name: str, on_sent: Callable[[], None]) -> None:
        """Queue a mark: sent right after the frames queued before it."""
        self._queue.append(_Mark(name, on_sent))
        self._start()

    def drop(self) -> None:
        """Stop at once: nothing queued is sent (barge-in, clear, the call ended)."""
        self._queue.clear()
        self._drops += 1

    def restart(self, now: float) -> None:
        """The far end dropped its buffer (a clear): pacing starts again from `now`."""
        self._queue.clear()
        self._drops += 1
        self.buffer_end = now

    def _start(self) -> None:
        # The first frames of a prompt go out now, not at the next tick (the greeting's
        # latency); then the clock carries the channel. Queued from inside a pump (a
        # sink or a mark's callback starting audio): that pump sends it, paced on its
        # own running estimate; a nested pump would pace on a stale one.
        if self._pumping:
            return
        if self.pump(self._now()) and not self.active:
            self._clock.add(self)

    def pump(self, now: float) -> bool:
        """Send what is due at `now`; True while anything is left queued."""
        queue = self._queue
        if not queue or self._pumping:
            return bool(queue)
        self._pumping = True
        try:
            return self._pump(queue, now)
        finally:
            self._pumping = False

    def _pump(self, queue: deque[_Frames | _Mark], now: float) -> bool:
        # A sink write or a mark's callback may drop the queue (the call ended, a
        # clear): `drops` changes, and nothing more is sent or paced on this pass.
        sink, drops = self._sink, self._drops
        # 1 µs of slack: 20 ms steps summed in floating point may pass an exact
        # deadline by a rounding error, and the frame due then would slip a whole tick.
        limit = now + self._lead + 1e-6
        end = self.buffer_end
        while queue:
            head = queue[0]
            if isinstance(head, _Mark):
                queue.popleft()
                sink.mark(head.name)
                head.on_sent()
                if self._drops != drops:
                    return bool(queue)
                continue
            if end > limit:
                break
            tally = head.tally
            if end < now:
                if tally.frames and now - end > PERIOD:
                    # The far end's buffer ran dry mid-prompt: the caller heard a gap.
                    tally.late_frames += 1
                    self.late_frames += 1
                end = now
            if tally.first_frame_at is None:
                tally.first_frame_at = now
            pieces, pos, stop = head.pieces, head.pos, len(head.pieces)
            sent = 0
            while pos < stop and end <= limit:
                sink.media(pieces[pos])
                pos += 1
                sent += 1
                end += PERIOD
                if self._drops != drops:
                    break
            tally.frames += sent
            self.frames_sent += sent
            if self._drops != drops:
                return bool(queue)
            if pos < stop:
                head.pos = pos
                break
            queue.popleft()
        self.buffer_end = end
        return bool(queue)


class FrameClock:
    """The process's 20 ms tick: pumps every channel with audio queued.

    `now` is the time function (monotonic seconds) the channels pace on; tests pass a
    fake one and call `tick()` themselves instead of letting the clock run.
    """

    def __init__(self, *, now: Callable[[], float] = time.monotonic,
                 autostart: bool = True) -> None:
        self.now = now
        self.autostart = autostart
        self._active: list[Channel] = []
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next = 0.0
        self.ticks = 0
        self.late_ticks = 0  # ticks that fired more than a period after their deadline

    def channel(self, sink: Sink, *, lead: float) -> Channel:
        return Channel(self, sink, lead=lead, now=self.now)

    @property
    def channels(self) -> int:
        """Channels with audio queued."""
        return len(self._active)

    def add(self, channel: Channel) -> None:
        channel.active = True
        self._active.append(channel)
        if self.autostart:
            self._run()

    def tick(self, now: float | None = None) -> None:
        """Send every channel's due frames; channels with nothing left drop out."""
        now = self.now() if now is None else now
        self.ticks += 1
        keep: list[Channel] = []
        # A channel added while this runs (a callback starting a prompt) is appended to
        # the list being walked, so it is pumped in this tick too and kept if need be.
        for channel in self._active:
            try:
                more = channel.pump(now)
            except Exception:
                # One call's failure (a sink or a callback raising) must not stop the
                # tick for every other call: that call's audio stops, logged.
                log.exception("frame_clock_channel_failed")
                channel.drop()
                more = False
            if more:
                keep.append(channel)
            else:
                channel.active = False
        self._active = keep

    def _run(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (tests run many): the old one's timer is gone with it.
            self._loop, self._handle = loop, None
            self._active = [c for c in self._active if c.queued]
        if self._handle is None:
            self._next = self.now() + PERIOD
            self._handle = loop.call_at(loop.time() + PERIOD, self._fire)

    def _fire(self) -> None:
        now = self.now()
        self.tick(now)
        if not self._active:
            self._handle = None  # idle: no timer until a channel has audio again
            return
        self._next += PERIOD
        if self._next <= now:
            # Over a period behind (an overloaded loop): no back-to-back catch-up ticks;
            # each channel's pump already sends everything due, within its lead.
            self.late_ticks += 1
            self._next = now + PERIOD
        assert self._loop is not None
        self._handle = self._loop.call_at(self._loop.time() + (self._next - now), self._fire)


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FrameClock] = (
    weakref.WeakKeyDictionary())
_unbound: FrameClock | None = None


def shared_clock() -> FrameClock:
    """The clock every call's player on the running event loop sends through.

    One per loop, never one per process: a process may run several loops (a server in a
    thread beside a test's or a benchmark's own), and a clock must only ever write
    sockets of its own loop."""
    global _unbound
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # built outside a loop (a unit test): binds on first use
        if _unbound is None:
            _unbound = FrameClock()
        return _unbound
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = FrameClock()
    return clock
