"""A call's voice: synthesis (cache first), prefetch of the next prompt, playback.

Playback goes through `audio.player.Player` (paced frames, a mark per prompt, clear on
barge-in). The prompts played since the last answer are kept (`prompts`) for the turn
record and for `wait_heard`, which waits until the caller has heard them; every prompt of
the call (`played`) for the live prompt record an operator's client may read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import structlog

from ivr.audio.codec import ToUlaw8k
from ivr.audio.player import Player, Prompt
from ivr.flows import engine
from ivr.flows.model import Flow
from ivr.server.services import Services
from ivr.session.record import CallRecord
from ivr.speech.base import STAND_IN
from ivr.speech.fallback import served_by

# A long call (an agent's) keeps only its last prompts for the live prompt record.
PLAYED_KEPT = 200


class Speaker:
    def __init__(
        self, services: Services, player: Player, flow: Callable[[], Flow],
        record: CallRecord, log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.services = services
        self.player = player
        self._flow = flow  # the flow speaking now (a `goto flow` changes it)
        self.record = record  # synthesis is timed and billed to the call
        self.stats = record.stats
        self.log = log
        self.prompts: list[Prompt] = []  # prompts since the last answer
        # Every prompt of the call, in order (the last `PLAYED_KEPT`): what the caller has
        # been told, for `GET /api/calls/{sid}/prompts` while the call goes on.
        self.played: list[Prompt] = []
        self.interruptible = False  # the prompt playing may be cut by the caller
        self._play_task: asyncio.Task[Prompt] | None = None
        self._prefetched: dict[str, asyncio.Task[bytes]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def playing(self) -> bool:
        """Audio is being sent, or is still buffered at Twilio."""
        return self.player.playing

    def running(self) -> list[asyncio.Task[Any]]:
        """Every task of this speaker still running (for the end of the call)."""
        tasks = [self._play_task, *self._tasks]
        return [t for t in tasks if t is not None and not t.done()]

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def take_prompts(self) -> list[Prompt]:
        """The prompts since the last answer; the next answer starts a new list."""
        prompts, self.prompts = self.prompts, []
        return prompts

    # ------------------------------------------------------------- playback

    async def play(
        self, action: engine.Play, *, interruptible: bool,
        audio: AsyncIterator[bytes] | None = None,
    ) -> Prompt:
        """Play `action`'s text (or `audio`, µ-law a model speaks, with the text its
        transcript); returns once it is sent, or cut by `interrupt()`."""
        prompt = self.start(action, interruptible=interruptible, audio=audio)
        await self.sent()
        return prompt

    def start(
        self, action: engine.Play, *, interruptible: bool,
        audio: AsyncIterator[bytes] | None = None,
    ) -> Prompt:
        """Begin playing (see `play`); `await sent()` for the end of sending."""
        self.interruptible = interruptible
        prompt = self.player.new_prompt(action.text)
        self.prompts.append(prompt)
        self.played.append(prompt)
        if len(self.played) > PLAYED_KEPT:
            del self.played[0]
        if audio is None:
            audio = self._audio(action.text)
        self._play_task = asyncio.create_task(self.player.play(prompt, audio))
        return prompt

    async def sent(self) -> None:
        """Until the prompt begun last is sent, or cut by `interrupt()`."""
        if self._play_task is not None:
            # wait(), not await: a cancelled play (barge-in) must not cancel the conductor.
            await asyncio.wait({self._play_task})
            self._play_task = None

    def interrupt(self) -> None:
        """Barge-in: stop sending, and drop what Twilio has buffered."""
        self.player.stop()
        if self._play_task is not None:
            self._play_task.cancel()
        self._spawn(self.player.clear())

    def on_mark(self, name: str) -> None:
        if self.player.on_mark(name) is None:
            self.stats["stale_marks"] += 1

    async def wait_heard(self, grace_s: float) -> None:
        """Wait until the caller has heard every prompt sent (marks echoed or cleared);
        a mark not back `grace_s` past the prompt's expected end is given up on."""
        for prompt in self.prompts:
            if not prompt.done.is_set():
                budget = max(0.0, prompt.duration_ms / 1000) + grace_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(prompt.done.wait(), budget)

    def abandon(self) -> None:
        """The call ended: nothing more is sent. Cancelled tasks are let go: each keeps
        its CancelledError, whose traceback holds this speaker (a reference cycle)."""
        self.player.abandon()
        self._play_task = None
        self._prefetched.clear()

    def counters(self) -> dict[str, int]:
        return {"frames_out": self.player.frames_sent,
                "late_frames": self.player.late_frames, "clears": self.player.clears}

    # ------------------------------------------------------------- synthesis

    def prefetch(self, text: str) -> None:
        """Synthesize the next prompt while this one plays, so no gap opens between them
        when many calls share the synthesizer."""
        if text not in self._prefetched:
            self._prefetched[text] = self._spawn(self._collect(text))

    async def _collect(self, text: str) -> bytes:
        return b"".join([chunk async for chunk in self._synthesize(text)])

    async def _audio(self, text: str) -> AsyncIterator[bytes]:
        task = self._prefetched.pop(text, None)
        if task is not None:
            yield await task
            return
        async for chunk in self._synthesize(text):
            yield chunk

    async def _synthesize(self, text: str) -> AsyncIterator[bytes]:
        services = self.services
        assert services.synthesizer is not None
        flow = self._flow()
        voice, rate = services.voice_for(flow)
        cached = services.speech_cache
        if cached is not None and text in services.static_prompts(flow):
            # Static prompts come from the cache (prewarmed at start-up and on reload);
            # filled-in templates are synthesized each time and never fill the disk.
            async for chunk in cached.stream(text, voice, rate):
                yield chunk
            return
        self.stats["tts_chars"] += len(text)  # prewarmed static prompts cost nothing per call
        synthesizer = services.synthesizer
        timer = self.record.span("tts")
        STAND_IN.set(None)
        try:
            pcm = synthesizer.synthesize(text, voice=voice, rate=rate)
            async for chunk in ulaw_of(pcm, first=timer.first):
                yield chunk
        finally:
            # Billed to the engine that answered (the fallback's, if it stood in), also
            # when the prompt was cut short: the provider was asked for all of it.
            engine = served_by(synthesizer)
            timer.done(engine)
            self.record.usage.add("tts", engine, {"chars": len(text), "requests": 1})


async def ulaw_of(
    pcm: AsyncIterator[tuple[bytes, int]], *, first: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """PCM16 chunks (at their rate) as 8 kHz µ-law, converted as they come; `first` is
    called when the first chunk arrives (a first-byte timing)."""
    conv: ToUlaw8k | None = None
    async for chunk, rate in pcm:
        if conv is None:
            conv = ToUlaw8k(rate)
            if first is not None:
                first()
        yield conv.push(chunk)
    if conv is not None:
        yield conv.flush()
