"""The caller's voice: what it says, as 20 ms µ-law frames ready for the media clock.

Every utterance is synthesized before the call is placed (see `SimulatedCaller`), so a
`CallerSpeech` is only a list of frames and the times at which they went out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from ivr.audio.codec import Framer, ToUlaw8k, ulaw_to_pcm16
from ivr.speech.base import Synthesizer

__all__ = ["VOICED_RMS", "CallerSpeech", "synthesize", "trim", "voiced"]

# RMS (PCM16) above which a frame counts as voiced. Synthesized speech is far above it
# and digital silence is 0, so the exact value only matters for faint onsets.
VOICED_RMS = 200.0


@dataclass(slots=True)
class CallerSpeech:
    """A synthesized utterance being sent, frame by frame, by the media clock."""

    text: str
    frames: list[bytes]
    barge: bool
    sent: int = 0
    t_start: float | None = None
    onset: float | None = None
    t_end: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


def voiced(frame: bytes) -> bool:
    """Whether a µ-law frame carries speech rather than (near) silence."""
    pcm = np.frombuffer(ulaw_to_pcm16(frame), dtype=np.int16).astype(np.float64)
    return bool(pcm.size) and float(np.sqrt(np.mean(pcm * pcm))) > VOICED_RMS


def trim(frames: list[bytes]) -> list[bytes]:
    """Drop the synthesizer's leading and trailing silence.

    Leading silence would delay the onset a barge-in test measures from; trailing
    silence is supplied by the line anyway.
    """
    spoken = [i for i, f in enumerate(frames) if voiced(f)]
    if not spoken:
        return frames
    return frames[spoken[0] : spoken[-1] + 1]


async def synthesize(
    synth: Synthesizer, text: str, voice: str | None, rate: int | None, max_wait: float
) -> list[bytes]:
    """`text` as the caller says it: 20 ms frames of 8 kHz µ-law, silence trimmed."""
    framer = Framer()
    out: list[bytes] = []
    conv: ToUlaw8k | None = None
    async with asyncio.timeout(max_wait):
        async for pcm, sample_rate in synth.synthesize(text, voice=voice, rate=rate):
            if conv is None or conv.rate != sample_rate:
                if conv is not None:
                    out += framer.push(conv.flush())
                conv = ToUlaw8k(sample_rate)
            out += framer.push(conv.push(pcm))
    if conv is not None:
        out += framer.push(conv.flush())
    out += framer.flush(pad=True)
    return trim(out)
