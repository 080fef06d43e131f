"""Synthesis by a remote OpenAI-compatible `/audio/speech` endpoint, streamed.

We ask for raw PCM (24 kHz, 16-bit, mono, little-endian) rather than MP3/WAV: it needs no
decoder and can be passed on chunk by chunk as it arrives, so the caller hears the first
words while the rest of the prompt is still being generated.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp

from ivr.providers.http import ProviderClient, ProviderTimeout, ProviderUnavailable

__all__ = ["SPEECH_RATE", "OpenAISynthesizer", "speed_for_rate"]

SPEECH_RATE = 24000
# espeak's default speaking rate; our `rate` argument is in espeak's words per minute.
_NORMAL_WPM = 175
_CHUNK = 4096


def speed_for_rate(rate: int | None) -> float:
    """The API's `speed` (0.25-4.0, 1.0 normal) for a words-per-minute rate."""
    if rate is None or rate <= 0:
        return 1.0
    return round(min(4.0, max(0.25, rate / _NORMAL_WPM)), 3)


def _swap16(data: bytes) -> bytes:
    out = bytearray(data)
    out[0::2], out[1::2] = data[1::2], data[0::2]
    return bytes(out)


class OpenAISynthesizer:
    """`Synthesizer` over a `ProviderClient` whose config has role "tts"."""

    def __init__(self, client: ProviderClient) -> None:
        self.client = client
        self.model = client.config.model
        self.voice = client.config.voice or "alloy"
        self.name = f"openai:{self.model}"

    async def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncIterator[tuple[bytes, int]]:
        payload = {
            "model": self.model,
            "voice": voice or self.voice,
            "input": text,
            "speed": speed_for_rate(rate),
            "response_format": "pcm",
        }
        async with self.client.request("POST", "/audio/speech", json=payload, stream=True) as resp:
            carry = b""
            try:
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    if carry:
                        chunk = carry + chunk
                    # A sample split across two network chunks is held back, or every
                    # later sample would be shifted by one byte (loud noise).
                    cut = len(chunk) - len(chunk) % 2
                    carry = chunk[cut:]
                    if cut:
                        pcm = chunk[:cut]
                        yield (_swap16(pcm) if sys.byteorder == "big" else pcm), SPEECH_RATE
            except TimeoutError as e:
                # The client's retries cover only up to the headers; a stream that dies
                # later surfaces here, as the same error types a failed request raises.
                self.client.stats["stream_failures"] += 1
                raise ProviderTimeout(self.client.name, "speech stream stalled") from e
            except aiohttp.ClientError as e:
                self.client.stats["stream_failures"] += 1
                raise ProviderUnavailable(self.client.name, f"speech stream broke: {e!r}") from e
            if carry:
                # Half a sample at the very end: the provider's bug, not worth a failure.
                self.client.stats["tts_odd_tail"] += 1
