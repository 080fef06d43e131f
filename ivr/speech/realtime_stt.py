"""Streaming recognition over a Realtime transcription session (`IVR_STT_API=realtime`).

`/audio/transcriptions` takes an utterance as one file after the caller has stopped; a
transcription session (`llm.realtime`, `intent="transcription"`) takes the audio while
the caller speaks and answers with deltas of the transcript, then the whole of it once the
buffer is committed. The deltas are this recognizer's partial hypotheses (`partial()`),
which the session's grammar-aware endpointing reads. Which deltas come when is the
model's: the streaming transcribers (`gpt-live-transcribe`) send them as speech arrives;
`gpt-4o-transcribe` and `whisper-1` start at the commit, so during speech they give none.

One session per utterance. The recognizer is one object shared by every call, with no
per-call lifecycle to hang a socket on, and one session per utterance has exactly one
committed item, so no event can be mistaken for another utterance's. The price is a
connect per utterance: TCP and TLS, the WebSocket upgrade, then `session.created` and
the update's round trip, so four or five network round trips (a few hundred ms to a
provider in another region; our own part, against the loopback test server, is under
1 ms: p50 0.55 ms from `start()` to the update arriving, 50 runs, 2-vCPU VM).
It starts at `start()` (speech onset) in the background and overlaps the caller's words;
audio fed before the socket is open waits in a buffer and goes once it is. Only an answer
shorter than the connect waits for it.

Failures (no connection, the provider's circuit breaker open, an `error` event, a failed
transcription, the socket ending before the transcript, no transcript within
`result_timeout_s` of the end of speech) raise from `finish()` as `ProviderError`s, so
`speech.fallback` redoes the utterance on the embedded engine; `start()` never fails.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

import aiohttp

from ivr.audio.codec import Upsampler
from ivr.errors import SpeechError
from ivr.grammar import Grammar
from ivr.llm.realtime import (
    Closed,
    InputTranscript,
    InputTranscriptDelta,
    InputTranscriptFailed,
    RealtimeConfig,
    RealtimeError,
    RealtimeSession,
)
from ivr.llm.realtime_wire import TRANSCRIPTION_RATE
from ivr.providers.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeout,
    ProviderUnavailable,
)
from ivr.providers.http import ProviderClient
from ivr.speech.base import Recognition
from ivr.speech.openai_stt import billed_units, grammar_prompt

__all__ = ["RealtimeRecognizer", "RealtimeUtterance"]

_IN_RATE = 16000
# The API refuses to commit less than 100 ms (`input_audio_buffer_commit_empty`); such a
# blip is no answer, and failing over to the embedded engine for it would be wasted work.
_MIN_COMMIT_BYTES = TRANSCRIPTION_RATE * 2 // 10
# Audio buffered while connecting goes out in pieces of this much (500 ms) rather than
# one message per 20 ms frame: fewer messages on a socket that has just opened.
_BACKLOG_PIECE = TRANSCRIPTION_RATE * 2 // 2


class RealtimeRecognizer:
    """`Recognizer` over a Realtime transcription endpoint.

    `client` is the STT provider's (role "stt"): its key and model, and its circuit
    breaker, so an outage costs one refused connect per cool-down rather than one per
    utterance. `url` is the WebSocket endpoint (`realtime_wire.realtime_url`).
    `result_timeout_s` bounds the wait for the transcript after end of speech (None: the
    provider's read timeout).
    """

    def __init__(
        self, client: ProviderClient, http: aiohttp.ClientSession, url: str, *,
        language: str = "en", beta: bool = False, result_timeout_s: float | None = None,
    ) -> None:
        self.client = client
        self.http = http
        self.url = url
        self.model = client.config.model
        self.language = language
        self.beta = beta
        self.result_timeout_s = (client.config.timeout_read_s if result_timeout_s is None
                                 else result_timeout_s)
        self.name = f"realtime:{self.model}"

    async def start(self, grammar: Grammar | None) -> RealtimeUtterance:
        config = RealtimeConfig(
            url=self.url, api_key=self.client.config.api_key or None, model=self.model,
            beta=self.beta, intent="transcription", transcription_prompt=grammar_prompt(grammar),
            language=self.language)
        return RealtimeUtterance(self, config)

    async def connect(self, config: RealtimeConfig) -> RealtimeSession:
        """Open a session, through the provider's circuit breaker (a refused upgrade,
        4xx, says the provider is up: it is not counted against it)."""
        breaker, stats = self.client.breaker, self.client.stats
        try:
            probe = breaker.acquire()
        except ProviderUnavailable:
            stats["rejected"] += 1
            raise
        stats["requests"] += 1
        try:
            session = await RealtimeSession.connect(self.http, config)
        except ProviderHTTPError as e:
            stats["failures"] += 1
            if e.status >= 500:
                breaker.failure()
            elif probe:
                breaker.release_probe()
            raise
        except ProviderError:
            stats["failures"] += 1
            breaker.failure()
            raise
        except BaseException:
            if probe:
                breaker.release_probe()
            raise
        breaker.success()
        return session


class RealtimeUtterance:
    """One utterance's transcription session: connecting from birth, fed as it goes."""

    def __init__(self, owner: RealtimeRecognizer, config: RealtimeConfig) -> None:
        self._owner = owner
        self._upsampler = Upsampler(rate_in=_IN_RATE, rate_out=TRANSCRIPTION_RATE)
        self._backlog = bytearray()  # 24 kHz audio fed before the session was open
        self._session: RealtimeSession | None = None
        self._sent = 0  # bytes of 24 kHz PCM16 handed to the session (or the backlog)
        self._partial: str | None = None
        self._finishing = False
        self._done = False
        self._read_all = False  # the session has said all it will; only its close is left
        self._result: asyncio.Future[InputTranscript] = (
            asyncio.get_running_loop().create_future())
        self._task = asyncio.create_task(self._run(config), name="realtime-stt")

    def feed(self, pcm16_16k: bytes) -> None:
        if not self._done:
            self._send(self._upsampler.process(pcm16_16k))

    def partial(self) -> str | None:
        return self._partial

    async def finish(self) -> Recognition:
        if self._done:
            raise SpeechError("utterance already finished or cancelled")
        self._done = True
        self._send(self._upsampler.flush())
        seconds = self._sent / 2 / TRANSCRIPTION_RATE
        if self._sent < _MIN_COMMIT_BYTES:
            await self._stop()
            return Recognition(text="", engine=self._owner.name, audio_seconds=seconds)
        try:
            transcript = await self._transcript()
        except BaseException:
            await self._stop()
            raise
        # The session closes itself behind the transcript (no waiting on the close
        # handshake here); `cancel()`, which the call session sends every utterance it
        # is done with, waits for that.
        return Recognition(
            text=transcript.text.strip(), engine=self._owner.name, audio_seconds=seconds,
            usage=billed_units(transcript.usage) or {"audio_s": seconds})

    async def _transcript(self) -> InputTranscript:
        self._finishing = True
        if self._session is not None:
            await self._session.commit()  # else `_run` commits once connected
        timeout = self._owner.result_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._result)
        except TimeoutError:
            raise ProviderTimeout(self._owner.name,
                                  f"no transcript within {timeout} s") from None

    async def cancel(self) -> None:
        self._done = True
        self._backlog.clear()
        await self._stop()

    # --- the session ------------------------------------------------------------------

    def _send(self, pcm24: bytes) -> None:
        if not pcm24:
            return
        self._sent += len(pcm24)
        if self._session is not None:
            self._session.append_audio(pcm24)
        else:
            self._backlog += pcm24

    async def _run(self, config: RealtimeConfig) -> None:
        """Connect, send what waited, commit if asked already, then read until the
        transcript: deltas into `partial()`, the end (or a failure) into `_result`."""
        try:
            session = await self._owner.connect(config)
        except ProviderError as e:
            self._fail(e)
            return
        self._session = session
        try:
            backlog, self._backlog = bytes(self._backlog), bytearray()
            for i in range(0, len(backlog), _BACKLOG_PIECE):
                session.append_audio(backlog[i : i + _BACKLOG_PIECE])
            if self._finishing:
                await session.commit()
            await self._read(session)
            self._read_all = True
        finally:
            await session.close()

    async def _read(self, session: RealtimeSession) -> None:
        name = self._owner.name
        async for event in session.events():
            if isinstance(event, InputTranscriptDelta):
                self._partial = (self._partial or "") + event.text
            elif isinstance(event, InputTranscript):
                self._partial = event.text
                if not self._result.done():
                    self._result.set_result(event)
                return
            elif isinstance(event, InputTranscriptFailed):
                self._fail(ProviderBadResponse(
                    name, f"transcription failed: {event.code}: {event.message}"))
                return
            elif isinstance(event, RealtimeError):
                # In a session that does nothing but this one transcription, any refused
                # request (an append, the commit) leaves no transcript to wait for.
                self._fail(ProviderBadResponse(name, f"{event.code}: {event.message}"))
                return
            elif isinstance(event, Closed):
                self._fail(ProviderUnavailable(
                    name, f"session {event.reason} before the transcript (code {event.code})"))

    def _fail(self, error: ProviderError) -> None:
        if not self._result.done():
            self._result.set_exception(error)
            # Retrieved by `finish()` if it comes; an abandoned utterance must not log
            # "exception was never retrieved".
            self._result.exception()

    async def _stop(self) -> None:
        """End the session task (its `finally` closes the socket) and wait for it; one
        that is only closing is left to finish (cancelled, it would leak the socket)."""
        task = self._task
        if not task.done() and not self._read_all:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await task
