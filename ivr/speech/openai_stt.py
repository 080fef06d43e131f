"""Recognition by a remote OpenAI-compatible `/audio/transcriptions` endpoint.

Whisper-style endpoints take a whole file, not a stream, so an utterance buffers its
audio and uploads it at end of speech. A `Grammar` cannot constrain such a model, but its
phrases can bias it through the `prompt` field, which helps short answers ("yes",
"billing") that a free-form model otherwise mishears.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiohttp

from ivr.audio.codec import pcm16_to_wav
from ivr.errors import SpeechError
from ivr.grammar import Grammar
from ivr.providers.http import ProviderBadResponse, ProviderClient
from ivr.speech.base import Recognition

__all__ = ["BufferedUtterance", "OpenAIRecognizer"]

_RATE = 16000
# Whisper reads only the last ~224 tokens of a prompt; a long phrase list is cut well
# before that so the tail (often the most specific phrases) is not what gets dropped.
_PROMPT_CHARS = 600


def grammar_prompt(grammar: Grammar | None) -> str | None:
    """A transcription prompt listing the expected phrases, or None without any."""
    if grammar is None or not grammar.phrases:
        return None
    prompt = ""
    for phrase in grammar.phrases:
        piece = phrase if not prompt else f", {phrase}"
        if len(prompt) + len(piece) > _PROMPT_CHARS:
            break
        prompt += piece
    return prompt + "." if prompt else None


class BufferedUtterance:
    """An utterance for whole-file remote recognizers: audio is buffered while the caller
    speaks and handed to `recognize` at end of speech (nothing is sent before that)."""

    def __init__(self, recognize: Callable[[bytes], Awaitable[Recognition]]) -> None:
        self._recognize = recognize
        self._audio = bytearray()
        self._done = False

    def feed(self, pcm16_16k: bytes) -> None:
        if not self._done:
            self._audio += pcm16_16k

    async def finish(self) -> Recognition:
        if self._done:
            raise SpeechError("utterance already finished or cancelled")
        self._done = True
        return await self._recognize(bytes(self._audio))

    async def cancel(self) -> None:
        self._done = True
        self._audio.clear()


class OpenAIRecognizer:
    """`Recognizer` over a `ProviderClient` whose config has role "stt"."""

    def __init__(self, client: ProviderClient, *, language: str = "en") -> None:
        self.client = client
        self.model = client.config.model
        self.language = language
        self.name = f"openai:{self.model}"

    async def start(self, grammar: Grammar | None) -> BufferedUtterance:
        prompt = grammar_prompt(grammar)
        return BufferedUtterance(lambda pcm: self.transcribe(pcm, prompt))

    async def transcribe(self, pcm16_16k: bytes, prompt: str | None = None) -> Recognition:
        """Upload one utterance of 16 kHz PCM16 and return its transcript."""
        wav = pcm16_to_wav(pcm16_16k, _RATE)

        def form() -> aiohttp.FormData:
            # Built per attempt: a FormData body can be sent only once.
            fd = aiohttp.FormData()
            fd.add_field("file", wav, filename="utterance.wav", content_type="audio/wav")
            fd.add_field("model", self.model)
            fd.add_field("language", self.language)
            fd.add_field("response_format", "json")
            if prompt:
                fd.add_field("prompt", prompt)
            return fd

        started = time.perf_counter()
        body = await self.client.request_json("POST", "/audio/transcriptions", data=form)
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        text = body.get("text")
        if not isinstance(text, str):
            raise ProviderBadResponse(self.client.name, "transcription without a `text` string")
        return Recognition(
            text=text.strip(),
            engine=self.name,
            audio_seconds=len(pcm16_16k) / 2 / _RATE,
            extra={"latency_ms": latency_ms},
            usage=billed_units(body.get("usage")),
        )


def billed_units(usage: object) -> dict[str, float]:
    """What the provider says it billed, when it says (`usage` of a transcription:
    `{"type": "duration", "seconds": s}` for Whisper, `{"type": "tokens", ...}` for the
    GPT-4o transcribers); empty otherwise, and the seconds we sent are billed."""
    if not isinstance(usage, dict):
        return {}
    if usage.get("type") == "duration" and isinstance(usage.get("seconds"), int | float):
        return {"audio_s": float(usage["seconds"])}
    if usage.get("type") == "tokens":
        details = usage.get("input_token_details") or {}
        audio = details.get("audio_tokens", 0) if isinstance(details, dict) else 0
        text_in = details.get("text_tokens", 0) if isinstance(details, dict) else 0
        units = {"audio_in": audio, "text_in": text_in, "text_out": usage.get("output_tokens", 0)}
        return {k: float(v) for k, v in units.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and v > 0}
    return {}
