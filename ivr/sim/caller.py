"""The simulated caller: a phone call as Twilio would deliver it, for tests and demos.

`ivr call`, `ivr demo` and the end-to-end tests use this to call the server without
Twilio: `POST /voice`, then the `/media` WebSocket its TwiML names (`ivr.sim.dial`).
The wire side (`ivr.sim.line`) behaves exactly as Twilio does; this module is the
person on the line, working through a script (`ivr.sim.script`).

The caller takes turns like a patient person: it answers a prompt once the bot has gone
quiet, or barges in a set time after a prompt starts. Everything the server sent is
recorded with arrival times so tests can assert on pacing and barge-in latency
(`ivr.sim.transcript`); `ivr.sim.run` also has what the caller heard transcribed.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import aiohttp

from ivr.audio.codec import FRAME_SECONDS, TELEPHONY_RATE
from ivr.errors import IvrError
from ivr.sim.dial import call_urls, dial, voice_form
from ivr.sim.line import CallerLine
from ivr.sim.playback import PlaybackBuffer
from ivr.sim.script import Barge, CallerAction, PressKeys, PutDown, Say, Silence
from ivr.sim.transcript import (
    BotSaid,
    CallerHungUp,
    CallerPressed,
    CallerSaid,
    CallerSilent,
    CallTranscript,
    TranscriptEvent,
    new_sid,
)
from ivr.sim.voice import CallerSpeech, LineNoise, synthesize
from ivr.speech.base import Synthesizer

__all__ = ["DTMF_INTERVAL", "Reaction", "SimulatedCaller"]

# Twilio sends the digit event once the tone has ended; people press about this fast.
DTMF_INTERVAL = 0.150


# A caller that reacts: given the caller once the bot has gone quiet, what to do next
# (None: nothing to answer yet, listen on).
Reaction: TypeAlias = Callable[["SimulatedCaller"], Awaitable[CallerAction | None]]


def _event_time(event: TranscriptEvent) -> float:
    return event.t_start


def _arrival(frame: tuple[float, int]) -> float:
    return frame[0]


class _Closed(IvrError):
    """The WebSocket is gone; the conversation cannot go on."""


class SimulatedCaller:
    """One call to a server (`http://HOST:PORT`, or its `ws://HOST:PORT/media` URL): the
    voice webhook first, then the stream it names. Use once: `await caller.run()`."""

    def __init__(
        self,
        url: str,
        actions: Sequence[CallerAction],
        *,
        flow: str | None = None,
        voice: str | None = "en-us",
        rate: int | None = None,
        from_number: str = "+15550100001",
        to_number: str = "+15550100002",
        quiet_ms: int = 700,
        segment_gap_ms: int = 400,
        prompt_timeout: float = 15.0,
        hangup_timeout: float = 20.0,
        call_timeout: float = 120.0,
        connect_timeout: float = 10.0,
        synth_timeout: float = 30.0,
        auth_token: str | None = None,
        public_url: str | None = None,
        synthesizer: Synthesizer | None = None,
        session: aiohttp.ClientSession | None = None,
        react: Reaction | None = None,
        may_say: Sequence[str] = (),
        max_reactions: int = 40,
        noise_snr_db: float | None = None,
        noise_seed: int = 0,
    ) -> None:
        """`react` replaces the script `actions` with a caller deciding as it goes (its
        answers in `may_say` are synthesized before dialling; others when first said);
        `noise_snr_db` puts white noise on the line, that far below the caller's voice,
        under its speech and its silences alike."""
        self.actions = list(actions)
        self.react = react
        self.may_say = tuple(may_say)
        self.max_reactions = max_reactions
        self.noise_snr_db = noise_snr_db
        self.noise_seed = noise_seed
        self.voice = voice
        self.rate = rate
        self.quiet = quiet_ms / 1000
        self.prompt_timeout = prompt_timeout
        self.hangup_timeout = hangup_timeout
        self.call_timeout = call_timeout
        self.synth_timeout = synth_timeout
        self._synth = synthesizer
        self._session = session
        self.urls = call_urls(url)
        self.flow = flow
        self.from_number = from_number
        self.to_number = to_number
        self.auth_token = auth_token
        self.public_url = public_url
        self.connect_timeout = connect_timeout
        self.transcript = CallTranscript(
            call_sid=new_sid("CA"),
            stream_sid=new_sid("MZ"),
            account_sid=new_sid("AC"),
            flow=flow,
        )
        self.buffer = PlaybackBuffer(gap=segment_gap_ms / 1000)
        self.line = CallerLine(
            self.urls.media,
            self.transcript,
            self.buffer,
            connect_timeout=connect_timeout,
            auth_token=auth_token,
        )
        self._utterances: dict[str, list[bytes]] = {}
        self._noise: LineNoise | None = None
        self._caller_events: list[TranscriptEvent] = []

    async def run(self) -> CallTranscript:
        """Place the call and return its record; never raises for what the server does."""
        t = self.transcript
        await self._prepare()
        owns_session = self._session is None
        session = self._session or aiohttp.ClientSession()
        try:
            try:
                async with asyncio.timeout(self.call_timeout):
                    await self._call(session)
            except TimeoutError:
                t.closed_by = "timeout"
                t.errors.append(f"call timed out after {self.call_timeout:g} s")
            finally:
                await self.line.abort()
        finally:
            if owns_session:
                await session.close()
        t.t_end = time.monotonic()
        # What was still buffered when the line went dead was never heard.
        self.buffer.finish(self.line.t_closed or t.t_end)
        t.marks = self.buffer.marks
        heard: list[TranscriptEvent] = [
            BotSaid(
                t_start=s.start,
                t_end=s.end,
                duration_s=len(s.audio) / TELEPHONY_RATE,
                mark=s.mark,
                cut_short=s.cut_short,
                audio=bytes(s.audio),
            )
            for s in self.buffer.segments
        ]
        t.events = sorted(heard + self._caller_events, key=_event_time)
        return t

    async def _prepare(self) -> None:
        """Synthesize every utterance before dialling.

        Synthesis during the call would compete with the media clock for the CPU, and
        a barge-in must start on time, not after espeak has run.
        """
        texts = {a.text for a in self.actions if isinstance(a, Say | Barge)} | set(self.may_say)
        for text in sorted(texts):
            self._utterances[text] = await self._synthesize(text)
        if self.noise_snr_db is not None and self._utterances:
            noise = LineNoise.below(list(self._utterances.values()), self.noise_snr_db,
                                    seed=self.noise_seed)
            self._noise = noise
            self._utterances = {t: noise.mix(f) for t, f in self._utterances.items()}
            self.line.idle_frame = noise.frame

    async def _synthesize(self, text: str) -> list[bytes]:
        if self._synth is None:
            from ivr.speech.espeak import EspeakSynthesizer

            self._synth = EspeakSynthesizer()
        return await synthesize(self._synth, text, self.voice, self.rate, self.synth_timeout)

    async def _call(self, session: aiohttp.ClientSession) -> None:
        t = self.transcript
        form = voice_form(t.call_sid, t.account_sid, self.from_number, self.to_number)
        try:
            async with asyncio.timeout(self.connect_timeout):
                dialled = await dial(session, self.urls.base, form, flow=self.flow,
                                     auth_token=self.auth_token, public_url=self.public_url)
        except TimeoutError:
            raise IvrError(f"{self.urls.base}/voice did not answer within "
                           f"{self.connect_timeout:g} s") from None
        await self.line.connect(session, dialled)
        try:
            await self._converse()
        except _Closed:
            pass
        finally:
            await self.line.hang_up()

    # ----------------------------------------------------------------- turn-taking

    async def _converse(self) -> None:
        if self.react is not None:
            await self._converse_reacting(self.react)
        else:
            await self._converse_scripted()

    async def _converse_scripted(self) -> None:
        t = self.transcript
        # A prompt "for" the next action is audio that arrives after this time.
        since = t.t_start
        for action in self.actions:
            self._check_open()
            if isinstance(action, Barge) or (
                isinstance(action, PutDown) and action.after_ms is not None
            ):
                after_ms = action.after_ms or 0
                first = await self._prompt_start(since)
                if first is not None:
                    await self._sleep_until(first + after_ms / 1000)
            else:
                await self._prompt_start(since)
                await self._until_quiet()
            self._check_open()
            next_since = await self._perform(action)
            if next_since is None:
                return
            since = next_since
        await self._await_hangup()

    async def _converse_reacting(self, react: Reaction) -> None:
        """Hear each prompt out, then ask `react` what to do; None from it is "nothing to
        answer yet": listen on, and stop answering if the bot says nothing more."""
        since = self.transcript.t_start
        listening = False
        for _ in range(self.max_reactions):
            self._check_open()
            if await self._prompt_start(since, quietly=listening) is None and listening:
                break
            await self._until_quiet()
            self._check_open()
            start = time.monotonic()
            action = await react(self)
            self._check_open()
            if action is None:
                since, listening = start, True
                continue
            listening = False
            next_since = await self._perform(action)
            if next_since is None:
                return
            since = next_since
        await self._await_hangup()

    async def _perform(self, action: CallerAction) -> float | None:
        """Do `action` now; the time after which audio is the reply to it (None: hung up)."""
        t = self.transcript
        start = time.monotonic()
        if isinstance(action, Say | Barge):
            u = await self._speak(action.text, barge=isinstance(action, Barge))
            # After a barge-in, the interrupted prompt's last frames may still be
            # arriving while the caller speaks; only audio after it is the reply.
            since = (u.t_end or time.monotonic()) if isinstance(action, Barge) else start
        elif isinstance(action, PressKeys):
            await self._press(action.digits)
            since = start
        elif isinstance(action, Silence):
            await self._wait(lambda: False, action.ms / 1000)
            self._caller_events.append(CallerSilent(action.ms, start, time.monotonic()))
            since = start
        else:
            self._caller_events.append(CallerHungUp(start))
            t.closed_by = "caller"
            t.actions_done += 1
            return None
        t.actions_done += 1
        return since

    async def _await_hangup(self) -> None:
        """Done talking: give the bot time to say goodbye and hang up."""
        t = self.transcript
        if not await self._wait(self.line.closed.is_set, self.hangup_timeout):
            t.closed_by = "timeout"
            t.errors.append(f"server did not hang up within {self.hangup_timeout:g} s")

    def _check_open(self) -> None:
        if self.line.closed.is_set():
            raise _Closed

    async def _wait(self, predicate: Callable[[], bool], max_wait: float) -> bool:
        """Poll `predicate` every 10 ms for up to `max_wait` s; raise `_Closed` if the call ends."""
        deadline = time.monotonic() + max_wait
        while True:
            self._check_open()
            if predicate():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(0.01, left))

    async def _sleep_until(self, when: float) -> None:
        await self._wait(lambda: False, max(0.0, when - time.monotonic()))

    async def _prompt_start(self, since: float, *, quietly: bool = False) -> float | None:
        """Arrival time of the first bot audio after `since`; None if none came in time."""
        frames = self.transcript.frames

        def first_after() -> float | None:
            # Frames are appended in arrival order, so the record is sorted by time.
            i = bisect.bisect_right(frames, since, key=_arrival)
            return frames[i][0] if i < len(frames) else None

        if await self._wait(lambda: first_after() is not None, self.prompt_timeout):
            return first_after()
        if not quietly:
            self.transcript.errors.append(
                f"no prompt within {self.prompt_timeout:g} s; answering anyway"
            )
        return None

    async def _until_quiet(self) -> None:
        limit = self.prompt_timeout * 4
        if not await self._wait(
            lambda: self.buffer.quiet_for(time.monotonic()) >= self.quiet, limit
        ):
            self.transcript.errors.append(f"bot never went quiet in {limit:g} s; answering anyway")

    async def _speak(self, text: str, *, barge: bool) -> CallerSpeech:
        if text not in self._utterances and self.react is not None:
            frames = await self._synthesize(text)
            self._utterances[text] = self._noise.mix(frames) if self._noise else frames
        u = CallerSpeech(text, self._utterances.get(text, []), barge)
        self.line.speak(u)
        duration = len(u.frames) * FRAME_SECONDS
        try:
            await self._wait(u.done.is_set, duration + 5.0)
        finally:
            # Recorded even when the server hangs up mid-sentence: it was (partly) said.
            now = time.monotonic()
            start = u.t_start if u.t_start is not None else now
            end = u.t_end if u.t_end is not None else now
            self._caller_events.append(CallerSaid(text, start, end, u.onset, barge))
        return u

    async def _press(self, digits: str) -> None:
        start = time.monotonic()
        for i, digit in enumerate(digits):
            if i:
                await self._sleep_until(start + i * DTMF_INTERVAL)
            if not await self.line.press(digit):
                raise _Closed
        self._caller_events.append(CallerPressed(digits, start, time.monotonic()))
