"""What the caller's phone plays: Twilio's outbound buffer, as far as a caller can observe it.

Audio from the server plays in real time from when it arrives, queued behind what is
already buffered; a mark is echoed once the audio before it has played, and `clear`
drops what has not played and releases every pending mark at once. `PlaybackBuffer`
keeps that account on times handed in by its user (no clock, no I/O), so it is tested
without sockets; `ivr.sim.line` drives it from the socket and echoes the marks it
says are due.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from ivr.audio.codec import TELEPHONY_RATE

__all__ = ["MarkRecord", "PlaybackBuffer", "Segment"]


@dataclass(slots=True)
class MarkRecord:
    """A mark the server sent, and when the caller echoed it back."""

    name: str
    t_received: float
    t_echoed: float | None = None
    cleared: bool = False
    """Echoed because of a `clear`, not because the audio before it played."""


@dataclass(slots=True)
class _Run:
    """Audio that plays back to back, starting at `start`."""

    start: float
    nbytes: int

    @property
    def end(self) -> float:
        return self.start + self.nbytes / TELEPHONY_RATE


@dataclass(slots=True)
class Segment:
    """A stretch of played audio (roughly, a prompt) and the mark that ended it."""

    runs: list[_Run] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    mark: str | None = None
    cut_short: bool = False

    @property
    def start(self) -> float:
        return self.runs[0].start

    @property
    def end(self) -> float:
        return self.runs[-1].end

    def truncate(self, now: float) -> None:
        """Keep only what had played by `now`."""
        kept: list[_Run] = []
        for run in self.runs:
            if run.start >= now:
                break
            played = min(run.nbytes, int((now - run.start) * TELEPHONY_RATE))
            kept.append(_Run(run.start, played))
        total = sum(r.nbytes for r in kept)
        if total < len(self.audio):
            self.cut_short = True
            del self.audio[total:]
        self.runs = [r for r in kept if r.nbytes]


class PlaybackBuffer:
    """Twilio's outbound audio buffer, as far as the caller can observe it.

    Pure bookkeeping on times handed in by the caller (no clock, no I/O), so it can be
    tested without sockets. Audio plays in real time from when it arrives, queued behind
    what is already buffered; a mark is due when the audio queued before it has played.
    Played audio is grouped into segments (roughly, prompts): a segment ends at a mark,
    at a `clear`, or when playback has been idle for longer than `gap` seconds.
    """

    def __init__(self, *, gap: float = 0.4) -> None:
        self.gap = gap
        self.play_end = -math.inf
        """When everything buffered will have finished playing."""
        self.last_arrival = -math.inf
        self.marks: list[MarkRecord] = []
        self.segments: list[Segment] = []
        self._open: Segment | None = None
        self._pending: deque[tuple[float, MarkRecord]] = deque()

    def media(self, payload: bytes, now: float) -> None:
        self.last_arrival = now
        buffered = self.play_end > now
        start = self.play_end if buffered else now
        seg = self._open
        if seg is None or start - seg.end > self.gap:
            seg = self._open = Segment()
            self.segments.append(seg)
        if buffered and seg.runs and seg.runs[-1].end == self.play_end:
            seg.runs[-1].nbytes += len(payload)
        else:
            seg.runs.append(_Run(start, len(payload)))
        seg.audio += payload
        self.play_end = seg.runs[-1].end

    def mark(self, name: str, now: float) -> MarkRecord | None:
        """Queue a mark; returns it if it is due at once (nothing buffered)."""
        record = MarkRecord(name, now)
        self.marks.append(record)
        if self._open is not None:
            self._open.mark = name
            self._open = None
        if self.play_end <= now:
            return record
        self._pending.append((self.play_end, record))
        return None

    def clear(self, now: float) -> list[MarkRecord]:
        """Drop unplayed audio; returns every pending mark, all due at once."""
        self._cut(now)
        released = [record for _, record in self._pending]
        self._pending.clear()
        for record in released:
            record.cleared = True
        return released

    def finish(self, now: float) -> None:
        """The call ended: audio still buffered was never heard; pending marks never echo."""
        self._cut(now)
        self._pending.clear()

    def _cut(self, now: float) -> None:
        for seg in reversed(self.segments):
            if seg.end <= now:
                break
            seg.truncate(now)
        self.segments = [s for s in self.segments if s.runs]
        self.play_end = min(self.play_end, now)
        self._open = None

    def due(self, now: float) -> list[MarkRecord]:
        """Pop the marks whose audio has played by `now`, in order."""
        out: list[MarkRecord] = []
        while self._pending and self._pending[0][0] <= now:
            out.append(self._pending.popleft()[1])
        return out

    def next_due(self) -> float | None:
        return self._pending[0][0] if self._pending else None

    def idle(self, now: float) -> bool:
        """Nothing buffered and no mark waiting to be echoed."""
        return self.play_end <= now and not self._pending

    def quiet_for(self, now: float) -> float:
        """Seconds since the bot last made a sound or sent audio (0 while busy)."""
        if not self.idle(now):
            return 0.0
        return now - max(self.play_end, self.last_arrival)
