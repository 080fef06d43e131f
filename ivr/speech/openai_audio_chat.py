"""Recognition through GPT-4o audio: the utterance sent to `/chat/completions` as
`input_audio` (e.g. model `gpt-4o-audio-preview`, `gpt-4o-mini-audio-preview`).

Chosen with `IVR_STT_API=chat`. Unlike `/audio/transcriptions`, the model can be told
what the step expects, so it answers with the caller's words *understood*: for an ask
with expected phrases it is asked to reply with the matching phrase when there is one,
which is what the flow's matcher wants; otherwise with a verbatim transcript.
"""

from __future__ import annotations

import base64
import time

from ivr.audio.codec import pcm16_to_wav
from ivr.grammar import Grammar
from ivr.providers.http import ProviderBadResponse, ProviderClient
from ivr.providers.limiter import CHARS_PER_TOKEN
from ivr.providers.usage import token_units
from ivr.speech.base import Recognition
from ivr.speech.openai_stt import BufferedUtterance

__all__ = ["AudioChatRecognizer"]

_RATE = 16000
_PATH = "/chat/completions"
_SYSTEM = (
    "You transcribe one short answer a caller gave on a phone line. Reply with the "
    "caller's words only: no quotes, no commentary. If you hear no speech, reply with "
    "nothing."
)


def instructions(grammar: Grammar | None) -> str:
    if grammar is None or not grammar.phrases:
        return _SYSTEM
    options = "; ".join(grammar.phrases[:60])
    return (_SYSTEM + " The caller was asked a question whose expected answers are: "
            f"{options}. If the caller gave one of them (in any words), reply with exactly "
            "that answer as written.")


class AudioChatRecognizer:
    """`Recognizer` over a chat-completions model that accepts `input_audio`."""

    def __init__(self, client: ProviderClient) -> None:
        self.client = client
        self.model = client.config.model
        self.name = f"openai-audio-chat:{self.model}"

    async def start(self, grammar: Grammar | None) -> BufferedUtterance:
        return BufferedUtterance(lambda pcm: self.recognize(pcm, grammar))

    async def recognize(self, pcm16_16k: bytes, grammar: Grammar | None) -> Recognition:
        wav = base64.b64encode(pcm16_to_wav(pcm16_16k, _RATE)).decode("ascii")
        body = {
            "model": self.model,
            "modalities": ["text"],
            "messages": [
                {"role": "system", "content": instructions(grammar)},
                {"role": "user", "content": [
                    {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
                ]},
            ],
        }
        started = time.monotonic()
        seconds = len(pcm16_16k) / (2 * _RATE)
        # For the TPM budget: the text at chars / 4 and the audio at a rough 10 tokens a
        # second, not its base64 (which is ~20 times that in characters).
        tokens = len(instructions(grammar)) // CHARS_PER_TOKEN + int(seconds * 10)
        reply = await self.client.request_json("POST", _PATH, json=body, tokens=tokens)
        try:
            text = reply["choices"][0]["message"].get("content") or ""
            usage = reply.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderBadResponse(self.client.config.name,
                                      f"POST {_PATH}: no choices[0].message: {exc!r}") from None
        return Recognition(
            text=str(text).strip().strip('"').strip(),
            engine=self.name,
            audio_seconds=seconds,
            extra={"latency_ms": round((time.monotonic() - started) * 1000, 1),
                   "prompt_tokens": usage.get("prompt_tokens", 0),
                   "completion_tokens": usage.get("completion_tokens", 0)},
            usage=dict(token_units(usage if isinstance(usage, dict) else None)),
        )
