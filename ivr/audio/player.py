"""Outbound audio: paced 20 ms frames, a mark per prompt, clear on barge-in.

Pacing keeps an estimate of when the audio already sent will have finished playing at
Twilio (`_buffer_end`). A frame is sent once no more than `lead` seconds are buffered
ahead of real time, and each frame moves the estimate by exactly 20 ms, so the clock is
absolute (no drift from sleep overshoot) and at most `lead` of audio can ever be
cleared or misattributed. When synthesis falls behind, the buffer runs dry and the
estimate restarts from "now" instead of bursting to catch up.

The player writes through a port, `Outbound` (media, mark, clear): the telephony adapter
(`ivr.telephony.outbound.TwilioOutbound`) turns those into Twilio frames, so this module
knows neither the wire format nor the stream it goes out on.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

from ivr.audio.codec import FRAME_BYTES, FRAME_SECONDS, Framer


class Outbound(Protocol):
    """A call's outbound audio channel, as the player needs it."""

    async def media(self, ulaw: bytes) -> None:
        """Send one 20 ms frame of 8 kHz µ-law."""

    async def mark(self, name: str) -> None:
        """Send a mark: echoed back once the audio sent before it has played (or is cleared)."""

    async def clear(self) -> None:
        """Drop all audio sent and not yet played; pending marks are echoed at once."""


@dataclass(slots=True)
class Prompt:
    """One prompt as played: what was sent and what the caller actually heard."""

    name: str
    text: str
    first_frame_at: float | None = None
    frames: int = 0
    late_frames: int = 0
    mark_sent: bool = False
    # "playing" -> "sent" (all frames and the mark out) -> "played" | "interrupted"
    state: str = "playing"
    heard_ms: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def duration_ms(self) -> float:
        return self.frames * FRAME_SECONDS * 1000


class Player:
    """One call's outbound audio channel."""

    def __init__(
        self,
        out: Outbound,
        *,
        lead: float = 0.160,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._lead = lead
        self._clock = clock
        self._buffer_end = 0.0
        self._ids = itertools.count(1)
        self._pending: dict[str, Prompt] = {}  # marks sent, not yet echoed
        self._current: Prompt | None = None
        self.frames_sent = 0
        self.late_frames = 0
        self.clears = 0

    @property
    def playing(self) -> bool:
        """True while audio is being sent or is still buffered at Twilio."""
        return self._current is not None or bool(self._pending)

    def new_prompt(self, text: str) -> Prompt:
        return Prompt(name=f"prompt-{next(self._ids)}", text=text)

    async def play(self, prompt: Prompt, audio: AsyncIterator[bytes]) -> Prompt:
        """Send µ-law `audio` (any chunk sizes) as paced frames, then a mark.

        Returns once the mark is sent; `await prompt.done.wait()` for the echo. Cancelling
        the task that runs this stops sending at the next frame (barge-in).
        """
        self._current = prompt
        framer = Framer()
        try:
            async for chunk in audio:
                for frame in framer.push(chunk):
                    await self._send_frame(prompt, frame)
            tail = framer.flush(pad=True)
            for frame in tail:
                await self._send_frame(prompt, frame)
            if prompt.frames == 0:
                prompt.state = "played"
                prompt.done.set()
                return prompt
            self._pending[prompt.name] = prompt
            prompt.state = "sent"
            await self._out.mark(prompt.name)
            prompt.mark_sent = True
            return prompt
        except asyncio.CancelledError:
            # Barge-in: the caller heard what was sent until now, at most.
            self._cut(prompt, self._clock())
            raise
        finally:
            self._current = None

    async def _send_frame(self, prompt: Prompt, frame: bytes) -> None:
        assert len(frame) == FRAME_BYTES
        now = self._clock()
        if self._buffer_end < now:
            if prompt.frames and now - self._buffer_end > FRAME_SECONDS:
                # Twilio's buffer ran dry mid-prompt: the caller heard a gap.
                prompt.late_frames += 1
                self.late_frames += 1
            self._buffer_end = now
        wait = self._buffer_end - self._lead - now
        if wait > 0:
            await asyncio.sleep(wait)
        await self._out.media(frame)
        if prompt.first_frame_at is None:
            prompt.first_frame_at = self._clock()
        self._buffer_end += FRAME_SECONDS
        prompt.frames += 1
        self.frames_sent += 1

    def on_mark(self, name: str) -> Prompt | None:
        """An echoed mark: that prompt has played (unless it was cleared before)."""
        prompt = self._pending.pop(name, None)
        if prompt is None:
            return None  # stale (already cleared) or not ours
        if prompt.state == "sent":
            prompt.state = "played"
            prompt.heard_ms = prompt.duration_ms
        prompt.done.set()
        return prompt

    async def clear(self) -> list[Prompt]:
        """Drop everything buffered at Twilio; returns the prompts cut short.

        The caller of this cancels the play task first so no frame follows the clear.
        Twilio echoes pending marks right after a clear; they are recorded here as
        interrupted, so the echoes are recognised as stale rather than "played".
        """
        now = self._clock()
        cut: list[Prompt] = []
        if self._current is not None:
            cut.append(self._current)
        cut.extend(self._pending.values())
        self._pending.clear()
        for prompt in cut:
            self._cut(prompt, now)
        self._current = None
        self._buffer_end = now
        self.clears += 1
        await self._out.clear()
        return cut

    @staticmethod
    def _cut(prompt: Prompt, now: float) -> None:
        prompt.state = "interrupted"
        if prompt.first_frame_at is not None:
            prompt.heard_ms = min(prompt.duration_ms, (now - prompt.first_frame_at) * 1000)
        prompt.done.set()

    def abandon(self) -> None:
        """The call ended: release anyone waiting on a mark that will never come."""
        for prompt in self._pending.values():
            prompt.state = "unheard" if prompt.state == "sent" else prompt.state
            prompt.done.set()
        self._pending.clear()
