"""Placing one simulated call: `run_call`, and what the caller heard, transcribed.

`run_call` is what `ivr call`, `ivr demo` and the end-to-end tests use: it places the
call (`SimulatedCaller`) and fetches the server's own record of the call, whose prompt
texts are what the bot said. On request (`transcribe`) the caller's recognizer also
transcribes every stretch of bot audio it heard (a pocketsphinx pool unless one is
given): a check of the audio path, not a reading of the prompts. `free_port` finds a
loopback port to serve the server under test on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import aiohttp

from ivr.audio.codec import Upsampler, ulaw_to_pcm16
from ivr.errors import IvrError
from ivr.sim.caller import SimulatedCaller
from ivr.sim.script import CallerAction
from ivr.sim.transcript import BotSaid, CallTranscript, fetch_server_transcript
from ivr.speech.base import Recognizer, Synthesizer

if TYPE_CHECKING:
    # Imported lazily at run time: the pool pulls in the worker machinery, which callers
    # that do not transcribe never need.
    from ivr.speech.sphinx.pool import RecognizerPool

__all__ = ["free_port", "run_call", "transcribe_heard"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, for a local server to take."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def transcribe_heard(
    transcript: CallTranscript,
    recognizer: Recognizer,
    *,
    min_seconds: float = 0.2,
    per_segment: float = 30.0,
) -> None:
    """Fill in `text` of each `BotSaid` with what `recognizer` makes of the played audio.

    Segments are decoded concurrently; a pool with several workers spreads them out.
    """

    async def one(event: BotSaid) -> None:
        # A fresh resampler per segment: each is an utterance of its own.
        up = Upsampler()
        pcm16k = up.process(ulaw_to_pcm16(event.audio)) + up.flush()
        try:
            async with asyncio.timeout(per_segment):
                utterance = await recognizer.start(None)
                utterance.feed(pcm16k)
                event.text = (await utterance.finish()).text
        except (TimeoutError, IvrError) as exc:
            transcript.errors.append(f"transcription failed: {exc!r}")

    await asyncio.gather(*(one(e) for e in transcript.heard if e.duration_s >= min_seconds))


async def _close_pool(pool: RecognizerPool, starting: asyncio.Task[None]) -> None:
    starting.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await starting
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10.0):
            await pool.close()


async def run_call(
    url: str,
    actions: Sequence[CallerAction],
    *,
    flow: str | None = None,
    voice: str = "en-us",
    rate: int | None = None,
    from_number: str = "+15550100001",
    to_number: str = "+15550100002",
    transcribe: bool = False,
    quiet_ms: int = 700,
    prompt_timeout: float = 15.0,
    hangup_timeout: float = 20.0,
    call_timeout: float = 120.0,
    connect_timeout: float = 10.0,
    api_timeout: float = 3.0,
    api_token: str | None = None,
    transcribe_timeout: float = 120.0,
    auth_token: str | None = None,
    public_url: str | None = None,
    synthesizer: Synthesizer | None = None,
    recognizer: Recognizer | None = None,
) -> CallTranscript:
    """Place one simulated call to the server at `url` and return its record.

    `url` is `http://HOST:PORT` (or, as before, `ws://HOST:PORT/media`): the caller
    posts `/voice` there (`?flow=` when `flow` is given), then opens the stream it names.
    `transcribe` fills each `BotSaid.text` (a recognizer check; off by default);
    `recognizer` overrides the embedded pocketsphinx pool used when `transcribe`;
    `auth_token` signs `/voice` and the WebSocket upgrade like Twilio does, over
    `public_url` (the https:// base the server validates against, default the server's
    own URL); `api_token` is the bearer token for `GET /api/calls/{call_sid}` when the
    server requires one.
    """
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        starting: asyncio.Task[None] | None = None
        if transcribe and recognizer is None:
            from ivr.speech.sphinx.pool import RecognizerPool

            pool = RecognizerPool(2)
            # The workers load their models while the call runs rather than after it; they
            # run niced, so the media clock keeps its timing.
            starting = asyncio.create_task(pool.start_workers())
            stack.push_async_callback(_close_pool, pool, starting)
            recognizer = pool
        caller = SimulatedCaller(
            url,
            actions,
            flow=flow,
            voice=voice,
            rate=rate,
            from_number=from_number,
            to_number=to_number,
            quiet_ms=quiet_ms,
            prompt_timeout=prompt_timeout,
            hangup_timeout=hangup_timeout,
            call_timeout=call_timeout,
            connect_timeout=connect_timeout,
            auth_token=auth_token,
            public_url=public_url,
            synthesizer=synthesizer,
            session=session,
        )
        transcript = await caller.run()
        if transcribe and recognizer is not None and transcript.heard:
            try:
                async with asyncio.timeout(transcribe_timeout):
                    if starting is not None:
                        await starting
                    await transcribe_heard(transcript, recognizer)
            except (TimeoutError, IvrError, OSError) as exc:
                transcript.errors.append(f"transcription failed: {exc!r}")
        transcript.server = await fetch_server_transcript(
            session, caller.urls.base, transcript.call_sid, max_wait=api_timeout,
            api_token=api_token,
        )
    return transcript
