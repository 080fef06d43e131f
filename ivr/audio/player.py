"""Outbound audio: paced 20 ms frames, a mark per prompt, clear on barge-in.

Pacing keeps an estimate of when the audio already sent will have finished playing at
Twilio (`buffer_end`). A frame is sent once no more than `lead` seconds are buffered
ahead of real time, and each frame moves the estimate by exactly 20 ms, so the clock is
absolute (no drift) and at most `lead` of audio can ever be cleared or misattributed.
When synthesis falls behind, the buffer runs dry and the estimate restarts from "now"
instead of bursting to catch up.

The sending itself is not done here: the player frames a prompt's audio, has the port
encode it once (`Outbound.encode`, one opaque piece per frame, cached by the adapter for
static prompts), and queues the pieces on the call's `clock.Channel`; the process's one
shared 20 ms clock (`ivr.audio.clock`) sends every call's due frames and the mark after
each prompt's last frame.

The player writes through a port, `Outbound` (encode, media, mark, clear): the telephony
adapter (`ivr.telephony.outbound.TwilioOutbound`) turns those into Twilio frames, so this
module knows neither the wire format nor the stream it goes out on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ivr.audio.clock import FrameClock, shared_clock
from ivr.audio.codec import FRAME_BYTES, FRAME_SECONDS, ULAW_SILENCE


class Outbound(Protocol):
    """A call's outbound audio channel, as the player needs it. The writes never block:
    the shared clock makes them for every call in one tick."""

    def encode(self, ulaw: bytes) -> Sequence[bytes]:
        """Whole 20 ms frames of 8 kHz µ-law -> one piece per frame for `media`."""

    def media(self, piece: bytes) -> None:
        """Send one 20 ms frame, encoded by `encode`."""

    def mark(self, name: str) -> None:
        """Send a mark: echoed back once the audio sent before it has played (or is cleared)."""

    def clear(self) -> None:
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

    def heard_ms_at(self, now: float) -> float:
        """How much of it the caller has heard at `now` (monotonic seconds): it plays from
        its first frame, and no more than was sent; 0 before its first frame."""
        if self.first_frame_at is None:
            return 0.0
        return min(self.duration_ms, (now - self.first_frame_at) * 1000)


class Player:
    """One call's outbound audio channel."""

    def __init__(
        self,
        out: Outbound,
        *,
        lead: float = 0.160,
        frames: FrameClock | None = None,
    ) -> None:
        self._out = out
        frames = frames if frames is not None else shared_clock()
        # One time base: the frame clock's, which dates first frames as it sends them.
        self._clock: Callable[[], float] = frames.now
        self._channel = frames.channel(out, lead=lead)
        self._ids = itertools.count(1)
        self._pending: dict[str, Prompt] = {}  # marks sent, not yet echoed
        self._current: Prompt | None = None
        self.clears = 0

    @property
    def frames_sent(self) -> int:
        return self._channel.frames_sent

    @property
    def late_frames(self) -> int:
        return self._channel.late_frames

    @property
    def playing(self) -> bool:
        """True while audio is being sent or is still buffered at Twilio."""
        return self._current is not None or bool(self._pending)

    def new_prompt(self, text: str) -> Prompt:
        return Prompt(name=f"prompt-{next(self._ids)}", text=text)

    async def play(self, prompt: Prompt, audio: AsyncIterator[bytes]) -> Prompt:
        """Send µ-law `audio` (any chunk sizes) as paced frames, then a mark.

        Returns once the mark is sent; `await prompt.done.wait()` for the echo. Cancelling
        the task that runs this stops sending at once (barge-in).
        """
        self._current = prompt
        channel, encode = self._channel, self._out.encode
        rest = b""
        queued = 0
        try:
            async for chunk in audio:
                data = rest + chunk if rest else chunk
                whole = len(data) - len(data) % FRAME_BYTES
                if whole:
                    # One encoding per chunk: a cached prompt is one chunk, encoded once
                    # per process (the port caches it), not once per frame per call.
                    pieces = encode(data[:whole] if whole < len(data) else data)
                    channel.frames(prompt, pieces)
                    queued += len(pieces)
                rest = data[whole:]
            if rest:
                channel.frames(prompt, encode(rest + ULAW_SILENCE * (FRAME_BYTES - len(rest))))
                queued += 1
            if queued == 0:
                prompt.state = "played"
                prompt.done.set()
                return prompt
            sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def mark_sent() -> None:
                prompt.state = "sent"
                prompt.mark_sent = True
                if not sent.done():
                    sent.set_result(None)

            # Pending before the mark can go out: its echo must find the prompt.
            self._pending[prompt.name] = prompt
            channel.mark(prompt.name, mark_sent)
            await sent
            return prompt
        except asyncio.CancelledError:
            # Barge-in: no more frames; the caller heard what was sent until now, at most.
            channel.drop()
            if not prompt.mark_sent:
                self._pending.pop(prompt.name, None)
            self._cut(prompt, self._clock())
            raise
        finally:
            self._current = None

    def stop(self) -> None:
        """Send no more frames, from now on (barge-in): not at the play task's next step,
        a tick of the shared clock could come first."""
        self._channel.drop()

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

        No frame follows the clear: the call's queue on the clock is dropped first.
        Twilio echoes pending marks right after a clear; they are recorded here as
        interrupted, so the echoes are recognised as stale rather than "played".
        """
        now = self._clock()
        cut: list[Prompt] = []
        if self._current is not None:
            cut.append(self._current)
        cut.extend(p for p in self._pending.values() if p is not self._current)
        self._pending.clear()
        for prompt in cut:
            self._cut(prompt, now)
        self._current = None
        self._channel.restart(now)
        self.clears += 1
        self._out.clear()
        return cut

    @staticmethod
    def _cut(prompt: Prompt, now: float) -> None:
        prompt.state = "interrupted"
        if prompt.first_frame_at is not None:
            prompt.heard_ms = prompt.heard_ms_at(now)
        prompt.done.set()

    def abandon(self) -> None:
        """The call ended: nothing more is sent; release anyone waiting on a mark that
        will never come."""
        self._channel.drop()
        for prompt in self._pending.values():
            prompt.state = "unheard" if prompt.state == "sent" else prompt.state
            prompt.done.set()
        self._pending.clear()
