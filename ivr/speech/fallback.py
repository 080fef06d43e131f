"""Remote engine first, embedded engine when the remote one fails.

A remote recognizer or synthesizer can be down, slow or rate-limited; a phone call cannot
wait for it. These wrappers try the remote (primary) engine and, on a `ProviderError` or
a timeout, redo that one request on the embedded (fallback) engine, so the caller gets an
answer either way. The provider client's circuit breaker makes an outage cheap: once it
is open the primary fails at once, without a network round trip.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import structlog

from ivr.grammar import Grammar
from ivr.providers.http import ProviderError, ProviderTimeout
from ivr.speech.base import STAND_IN, Recognition, Recognizer, Synthesizer, Utterance

__all__ = ["FallbackRecognizer", "FallbackSynthesizer", "FallbackUtterance", "served_by",
           "serving_names"]

log = structlog.get_logger("ivr.speech.fallback")

# What counts as "the remote engine failed" rather than a bug worth crashing on.
_REMOTE_FAILURES = (ProviderError, TimeoutError)


async def _aclose(chunks: AsyncIterator[tuple[bytes, int]]) -> None:
    # The protocol promises only an iterator, but engines are async generators; closing
    # one promptly (a barge-in stops the prompt) ends its HTTP stream or engine thread.
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


class FallbackUtterance:
    """Feeds the primary utterance and keeps the audio, to replay it to the fallback."""

    def __init__(self, owner: FallbackRecognizer, primary: Utterance, grammar: Grammar | None):
        self._owner = owner
        self._primary = primary
        self._grammar = grammar
        # The remote upload happens at finish(), so the fallback can only start then and
        # needs the whole utterance again; 16 kHz PCM is ~32 kB/s, cheap to keep.
        self._audio = bytearray()

    def feed(self, pcm16_16k: bytes) -> None:
        self._audio += pcm16_16k
        self._primary.feed(pcm16_16k)

    async def finish(self) -> Recognition:
        owner = self._owner
        try:
            async with asyncio.timeout(owner.timeout_s):
                return await self._primary.finish()
        except _REMOTE_FAILURES as e:
            owner.stats["fallbacks"] += 1
            log.warning(
                "recognizer_fallback", primary=owner.primary.name,
                fallback=owner.fallback.name, error=str(e) or type(e).__name__,
            )
        utterance = await owner.fallback.start(self._grammar)
        utterance.feed(bytes(self._audio))
        result = await utterance.finish()
        result.extra["fallback_from"] = owner.primary.name
        return result

    async def cancel(self) -> None:
        self._audio.clear()
        await self._primary.cancel()


class FallbackRecognizer:
    """`Recognizer`: `primary` (remote) first, `fallback` (embedded) on its failure.

    `timeout_s` bounds how long a result from the primary may take after end of speech
    (None: only the provider client's own timeouts apply).
    """

    def __init__(
        self, primary: Recognizer, fallback: Recognizer, *, timeout_s: float | None = None
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.timeout_s = timeout_s
        self.name = f"{primary.name}|{fallback.name}"
        self.stats: Counter[str] = Counter()

    async def start(self, grammar: Grammar | None) -> FallbackUtterance:
        return FallbackUtterance(self, await self.primary.start(grammar), grammar)


class FallbackSynthesizer:
    """`Synthesizer`: `primary` (remote) first, `fallback` (embedded) on its failure.

    Only a failure before the first chunk switches engines: once the caller has heard
    part of a prompt in one voice, restarting it in another would repeat words, so a
    failure mid-prompt ends the prompt there instead.

    `first_audio_s` bounds the wait for the primary's first chunk (headers, retries and
    all): a provider that accepts the connection and never answers would otherwise hold
    the caller in silence until its read timeout and retries run out (a minute). Past
    it the request is abandoned for that prompt and `on_abandon` is told (the provider
    client's breaker counts it as a failure, so a hung provider soon costs nothing).
    """

    def __init__(
        self, primary: Synthesizer, fallback: Synthesizer, *,
        first_audio_s: float | None = None, on_abandon: Callable[[], None] | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.first_audio_s = first_audio_s
        self.on_abandon = on_abandon
        self.name = f"{primary.name}|{fallback.name}"
        self.stats: Counter[str] = Counter()

    async def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncIterator[tuple[bytes, int]]:
        yielded = False
        try:
            chunks = self.primary.synthesize(text, voice=voice, rate=rate)
            try:
                first = await self._first(chunks)
                if first is not None:
                    yielded = True
                    yield first
                    async for chunk in chunks:
                        yield chunk
            finally:
                await _aclose(chunks)
            return
        except _REMOTE_FAILURES as e:
            error = str(e) or type(e).__name__
            if yielded:
                self.stats["truncated"] += 1
                log.warning("synthesizer_truncated", primary=self.primary.name, error=error)
                return
            self.stats["fallbacks"] += 1
            log.warning(
                "synthesizer_fallback", primary=self.primary.name,
                fallback=self.fallback.name, error=error,
            )
        # The primary's voice names mean nothing to the fallback engine; use its default.
        STAND_IN.set(self.fallback.name)
        chunks = self.fallback.synthesize(text, rate=rate)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await _aclose(chunks)

    async def _first(
        self, chunks: AsyncIterator[tuple[bytes, int]]
    ) -> tuple[bytes, int] | None:
        """The primary's first chunk, or None for an empty prompt; `ProviderTimeout` past
        `first_audio_s`."""
        deadline = asyncio.timeout(self.first_audio_s)
        try:
            async with deadline:
                return await anext(chunks, None)
        except TimeoutError:
            if not deadline.expired():
                raise  # the primary's own time-out: a failure like any other
            self.stats["first_audio_timeouts"] += 1
            if self.on_abandon is not None:
                self.on_abandon()
            raise ProviderTimeout(self.primary.name,
                                  f"no audio within {self.first_audio_s:.3f} s") from None


def served_by(synthesizer: Synthesizer) -> str:
    """The engine that answered the synthesis just iterated in this task: the stand-in
    when one did (`STAND_IN`, reset by the caller before it began), else the engine
    asked (a fallback pair's primary)."""
    stand_in = STAND_IN.get()
    if stand_in is not None:
        return stand_in
    if isinstance(synthesizer, FallbackSynthesizer):
        return synthesizer.primary.name
    return synthesizer.name


def serving_names(engine: Recognizer | Synthesizer | None) -> list[str]:
    """The names of the engines that may answer a request to `engine` (both of a pair)."""
    if engine is None:
        return []
    if isinstance(engine, FallbackRecognizer | FallbackSynthesizer):
        return [engine.primary.name, engine.fallback.name]
    return [engine.name]
