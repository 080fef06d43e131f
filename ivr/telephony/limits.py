"""What one `/media` WebSocket may do: how big a message, how fast its audio, how quiet.

Twilio sends frames under 1 KiB, audio in real time from `start` on (8,000 µ-law bytes
a second), and a frame every 20 ms until `stop`. A peer that does otherwise is not
Twilio, or is a line that has died, and gets a closed socket rather than our memory:

* a message over `max_message_bytes`: aiohttp refuses it before buffering it and closes
  the socket with 1009 (message too big); the handler counts it (`oversized`);
* audio more than `flood_ms` ahead of the wall clock since `start` (`flood`). Audio is
  counted in bytes received, never by `media.timestamp`: that is the caller's to write,
  and a frozen one would hide any rate. A network stall followed by a burst only
  catches up with real time, so jitter stays far below the bound;
* no `start` within `start_timeout_ms` of the upgrade (`no_start`);
* no inbound frame for `idle_timeout_ms` after `start` (`idle`): the call has lost its
  line and ends as dropped.

`StreamGuard` is that policy for one connection: pure, on an injected clock. The
handler tells it what arrived and acts on its answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ivr.audio.codec import TELEPHONY_RATE
from ivr.config import Settings

__all__ = ["Expiry", "MediaLimits", "StreamGuard"]

Expiry: TypeAlias = Literal["no_start", "idle"]

_ULAW_BYTES_PER_MS = TELEPHONY_RATE / 1000  # one byte per sample


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """The bounds of one connection (defaults: `Settings`, `IVR_MEDIA_*`)."""

    max_message_bytes: int = 16 * 1024
    flood_ms: int = 3000
    start_timeout_ms: int = 10_000
    idle_timeout_ms: int = 30_000

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        return cls(
            max_message_bytes=settings.media_max_message_bytes,
            flood_ms=settings.media_flood_ms,
            start_timeout_ms=settings.media_start_timeout_ms,
            idle_timeout_ms=settings.media_idle_timeout_ms,
        )


class StreamGuard:
    """One connection's limits over time: is it flooding, has it gone quiet too long.

    Per frame the handler calls `received()` (one clock read) and, for media,
    `floods(len(payload))` (arithmetic only); a watchdog sleeps until `deadline()` and
    asks `expired()`.
    """

    def __init__(self, limits: MediaLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self.opened = clock()
        self.last_in = self.opened
        """When the last message arrived (clock seconds)."""
        self.started_at: float | None = None
        self.audio_bytes = 0
        """µ-law bytes received since `start`."""
        self._flood_bytes = limits.flood_ms * _ULAW_BYTES_PER_MS

    def received(self) -> None:
        """A message arrived: the line is alive."""
        self.last_in = self._clock()

    def started(self) -> None:
        """The `start` frame that arrived last (`received()`) started the call: audio is
        timed from its arrival, not from when the call was set up (a slow database must
        not make the first frames look early). Only the first start counts."""
        if self.started_at is None:
            self.started_at = self.last_in

    def floods(self, payload_bytes: int) -> bool:
        """Count a media frame's audio (arrived at `last_in`); True once the audio
        received runs more than `flood_ms` ahead of the time since `start`."""
        started = self.started_at
        if started is None:
            return False  # media before start is refused by the handler, not counted here
        self.audio_bytes += payload_bytes
        allowed = (self.last_in - started) * TELEPHONY_RATE + self._flood_bytes
        return self.audio_bytes > allowed

    def ahead_ms(self) -> float:
        """How far the audio received runs ahead of the wall clock since `start`."""
        if self.started_at is None:
            return 0.0
        return self.audio_bytes / _ULAW_BYTES_PER_MS - (self.last_in - self.started_at) * 1000

    def deadline(self) -> float:
        """The clock time before which `expired()` cannot become true."""
        if self.started_at is None:
            return self.opened + self.limits.start_timeout_ms / 1000
        return max(self.started_at, self.last_in) + self.limits.idle_timeout_ms / 1000

    def until_deadline(self) -> float:
        """Seconds from now to `deadline()`, never negative."""
        return max(0.0, self.deadline() - self._clock())

    def expired(self) -> Expiry | None:
        """`no_start` or `idle` once that limit has passed, else None."""
        if self._clock() < self.deadline():
            return None
        return "no_start" if self.started_at is None else "idle"
