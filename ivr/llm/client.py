"""Streaming chat completions from an OpenAI-compatible provider, as typed deltas.

The agent wants text as soon as it is generated (the first sentence can be synthesized
while the model is still writing the second) and tool calls only once they are whole, so
this module turns the server-sent event stream into `TextDelta`s as they come and
`ToolCallDone`s assembled across chunks. Transport failures are the provider client's
`ProviderError`s; a stream we cannot parse is `ProviderBadResponse`.

Speech-to-speech (`stream(..., audio=AudioOut(voice))`): the request asks for text and
audio output, and the reply's `delta.audio` pieces come out as `AudioDelta` (PCM16 24 kHz,
whole samples, as they arrive), `AudioTranscriptDelta` (the words of that audio) and, once
the stream has ended, one `AudioDone` with the provider's audio id for the next request's
history. A piece of audio that is not valid base64 is skipped and counted, never fatal:
the caller loses 100 ms of a reply, not the call.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import structlog

from ivr.errors import InvalidValue
from ivr.providers.http import (
    ProviderBadResponse,
    ProviderClient,
    ProviderTimeout,
    ProviderUnavailable,
)
from ivr.providers.limiter import estimate_tokens
from ivr.providers.usage import token_units

__all__ = [
    "AUDIO_RATE",
    "AudioDelta",
    "AudioDone",
    "AudioOut",
    "AudioTranscriptDelta",
    "ChatClient",
    "ChatDelta",
    "Finish",
    "TextDelta",
    "ToolCallDone",
    "Usage",
]

log = structlog.get_logger("ivr.llm")

_PATH = "/chat/completions"
AUDIO_RATE = 24000  # OpenAI's pcm16 output: 24 kHz mono, 16-bit little-endian
# Input audio is billed at about one token per 100 ms; the agent sends 16 kHz PCM16
# (32,000 bytes a second), so the TPM estimate counts 3,200 bytes a token, not the
# base64 text's length / 4 (which would be ~13x too much).
_AUDIO_BYTES_PER_TOKEN = 3200


@dataclass(frozen=True, slots=True)
class AudioOut:
    """Ask for a spoken reply: the provider's `voice`, and `format` pcm16 (the only one
    that can be played while it streams: no container, no codec frames)."""

    voice: str
    format: str = "pcm16"

    def __post_init__(self) -> None:
        if self.format != "pcm16":
            raise InvalidValue(f"audio output format {self.format!r}: only 'pcm16' streams")


@dataclass(frozen=True, slots=True)
class AudioDelta:
    pcm: bytes  # PCM16 mono little-endian, an even number of bytes
    rate: int = AUDIO_RATE


@dataclass(frozen=True, slots=True)
class AudioTranscriptDelta:
    text: str


@dataclass(frozen=True, slots=True)
class AudioDone:
    """The reply's audio once the stream has ended: `id` names it in later requests'
    history until `expires_at` (Unix seconds); `skipped` counts undecodable pieces."""

    id: str
    transcript: str
    expires_at: int | None
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDone:
    id: str
    name: str  # as the model sent it: the function-calling form ("bookings__book")
    arguments_json: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    # The same tokens as disjoint billable units (`providers.usage.token_units`: text,
    # cached, audio, in and out), for the call's cost.
    units: dict[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str


ChatDelta = (TextDelta | ToolCallDone | Usage | Finish
             | AudioDelta | AudioTranscriptDelta | AudioDone)
ToolChoice = Literal["auto", "none", "required"] | dict[str, Any]


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _AudioParts:
    """The reply's `delta.audio` pieces so far: the odd byte of a sample split across two
    pieces waits for the next one, so samples never shift by a byte."""

    seen: bool = False
    id: str = ""
    transcript: list[str] = field(default_factory=list)
    expires_at: int | None = None
    carry: bytes = b""
    skipped: int = 0

    def push(self, audio: dict[str, Any]) -> list[ChatDelta]:
        self.seen = True
        if isinstance(audio.get("id"), str) and audio["id"]:
            self.id = audio["id"]
        expires = audio.get("expires_at")
        if isinstance(expires, int) and not isinstance(expires, bool):
            self.expires_at = expires
        out: list[ChatDelta] = []
        text = audio.get("transcript")
        if isinstance(text, str) and text:
            # Before the piece's sound: a reply cut off at any sound has its words noted.
            self.transcript.append(text)
            out.append(AudioTranscriptDelta(text))
        data = audio.get("data")
        if isinstance(data, str) and data:
            try:
                pcm = self.carry + base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                self.skipped += 1
            else:
                whole = len(pcm) - len(pcm) % 2
                self.carry = pcm[whole:]
                if whole:
                    out.append(AudioDelta(pcm[:whole]))
        elif data is not None and not isinstance(data, str):
            self.skipped += 1
        return out

    def done(self) -> AudioDone | None:
        if not self.seen:
            return None
        # A trailing odd byte is half a sample: nothing can be played from it.
        return AudioDone(self.id, "".join(self.transcript), self.expires_at, self.skipped)


class ChatClient:
    """`stream()` one chat completion through a resilient `ProviderClient`."""

    def __init__(self, provider: ProviderClient, model: str) -> None:
        self.provider = provider
        self.model = model

    def _bad(self, message: str) -> ProviderBadResponse:
        return ProviderBadResponse(self.provider.name, f"POST {_PATH}: {message}")

    async def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: ToolChoice = "auto",
        *,
        audio: AudioOut | None = None,
    ) -> AsyncGenerator[ChatDelta, None]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            # Sent only with tools: some servers reject tool_choice without them.
            body["tools"] = tools
            body["tool_choice"] = tool_choice
        if audio is not None:
            body["modalities"] = ["text", "audio"]
            body["audio"] = {"voice": audio.voice, "format": audio.format}
        partial: dict[int, _PartialCall] = {}
        sound = _AudioParts()
        done = seen = False
        # The TPM budget counts the prompt as sent (chars / 4): the provider's own count
        # comes only with the usage chunk at the end of the stream.
        tokens = _estimate(body)
        async with self.provider.request(
            "POST", _PATH, json=body, stream=True, tokens=tokens
        ) as resp:
            if resp.content_type != "text/event-stream":
                # A proxy's error page or a server that ignored `stream`: not a reply.
                raise self._bad(f"expected text/event-stream, got {resp.content_type!r}")
            try:
                async for raw in resp.content:
                    line = raw.decode("utf-8", errors="replace").strip()
                    # Blank lines separate events; ":" lines are keep-alive comments;
                    # event:/id:/retry: fields carry nothing for chat completions.
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    seen = True
                    for delta in self._parse(data, partial, sound):
                        yield delta
            except (TimeoutError, aiohttp.ServerTimeoutError) as e:
                raise ProviderTimeout(self.provider.name, f"POST {_PATH}: reading stream") from e
            except aiohttp.ClientError as e:
                raise ProviderUnavailable(
                    self.provider.name, f"POST {_PATH}: stream broke: {e!r}"
                ) from e
            except ValueError as e:  # aiohttp: a line longer than its buffer limit
                raise self._bad(f"unreadable stream: {e}") from e
        if not done and partial:
            # A stream cut before [DONE] with a tool call still open may hold truncated
            # arguments; running a half-received call would be worse than failing.
            raise self._bad("stream ended before [DONE] with an unfinished tool call")
        if not done and not seen:
            raise self._bad("stream ended before any event")
        for call in _drain(partial):
            yield call
        if (heard := sound.done()) is not None:
            if heard.skipped:
                log.warning("llm_audio_skipped", pieces=heard.skipped, audio_id=heard.id)
            yield heard

    def _parse(
        self, data: str, partial: dict[int, _PartialCall], sound: _AudioParts
    ) -> list[ChatDelta]:
        try:
            chunk = json.loads(data)
        except ValueError as e:
            raise self._bad(f"malformed JSON in stream chunk: {e}") from e
        if not isinstance(chunk, dict):
            raise self._bad(f"stream chunk is {type(chunk).__name__}, not an object")
        if isinstance(chunk.get("error"), dict):
            # Some servers report a failure mid-stream as an error event with status 200.
            raise self._bad(f"error in stream: {chunk['error'].get('message', chunk['error'])}")
        out: list[ChatDelta] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n=1 is all we ask for
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(TextDelta(text))
            if isinstance(delta.get("audio"), dict):
                out.extend(sound.push(delta["audio"]))
            for tc in delta.get("tool_calls") or []:
                if not isinstance(tc, dict):
                    raise self._bad("tool_calls entry is not an object")
                index = tc.get("index", 0)
                if not isinstance(index, int):
                    raise self._bad(f"tool call index {index!r} is not an integer")
                call = partial.setdefault(index, _PartialCall())
                if tc.get("id"):
                    call.id = str(tc["id"])
                fn = tc.get("function") or {}
                if fn.get("name"):
                    # Sent once by OpenAI; some servers repeat it in every chunk.
                    call.name = str(fn["name"])
                if isinstance(fn.get("arguments"), str):
                    call.arguments.append(fn["arguments"])
            reason = choice.get("finish_reason")
            if reason:
                out.extend(_drain(partial))
                out.append(Finish(str(reason)))
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details") or {}
            out.append(Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                cached_tokens=int(details.get("cached_tokens") or 0),
                units=token_units(usage),
            ))
        return out


def _drain(partial: dict[int, _PartialCall]) -> list[ChatDelta]:
    """The assembled calls in index order, and forget them (each is emitted once)."""
    calls: list[ChatDelta] = [
        ToolCallDone(
            id=call.id or f"call_{index}",
            name=call.name,
            arguments_json="".join(call.arguments),
        )
        for index, call in sorted(partial.items())
    ]
    partial.clear()
    return calls


def _estimate(body: dict[str, Any]) -> int:
    """`estimate_tokens` of the body, with each `input_audio` part counted by its length
    in seconds (as billed) rather than by its base64 text."""
    audio_bytes = 0
    messages: list[Any] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            messages.append(message)
            continue
        parts: list[Any] = []
        for part in content:
            sound = part.get("input_audio") if isinstance(part, dict) else None
            if isinstance(sound, dict) and isinstance(sound.get("data"), str):
                audio_bytes += len(sound["data"]) * 3 // 4
                part = {**part, "input_audio": {**sound, "data": ""}}
            parts.append(part)
        messages.append({**message, "content": parts})
    return estimate_tokens({**body, "messages": messages}) + audio_bytes // _AUDIO_BYTES_PER_TOKEN
