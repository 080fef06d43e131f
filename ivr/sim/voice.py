"""The caller's voice: what it says, as 20 ms µ-law frames ready for the media clock.

Every utterance is synthesized before the call is placed (see `SimulatedCaller`), so a
`CallerSpeech` is only a list of frames and the times at which they went out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from ivr.audio.codec import FRAME_BYTES, Framer, ToUlaw8k, pcm16_to_ulaw, ulaw_to_pcm16
from ivr.speech.base import Synthesizer

__all__ = ["VOICED_RMS", "CallerSpeech", "LineNoise", "synthesize", "trim", "voiced"]

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


def _pcm(frame: bytes) -> np.ndarray:
    return np.frombuffer(ulaw_to_pcm16(frame), dtype=np.int16).astype(np.float64)


class LineNoise:
    """White noise on the line at a fixed level: added to the caller's speech frames
    (`mix`) and sent alone while the caller is silent (`frame`), through µ-law as a
    phone line carries it. `below` sets the level from the caller's voice and an SNR."""

    def __init__(self, rms: float, *, seed: int = 0) -> None:
        self.rms = rms
        self._rng = np.random.default_rng(seed)

    @classmethod
    def below(cls, utterances: list[list[bytes]], snr_db: float, *, seed: int = 0) -> LineNoise:
        """Noise `snr_db` below the RMS of the voiced frames of `utterances`."""
        voiced_pcm = [_pcm(f) for frames in utterances for f in frames if voiced(f)]
        speech = np.concatenate(voiced_pcm) if voiced_pcm else np.zeros(1)
        speech_rms = float(np.sqrt(np.mean(speech * speech)))
        return cls(speech_rms / 10 ** (snr_db / 20), seed=seed)

    def _noise(self, n: int) -> np.ndarray:
        return self._rng.normal(0.0, self.rms, n)

    def _ulaw(self, pcm: np.ndarray) -> bytes:
        return pcm16_to_ulaw(np.clip(pcm, -32768, 32767).astype(np.int16).tobytes())

    def frame(self) -> bytes:
        """One 20 ms frame of the noise alone."""
        return self._ulaw(self._noise(FRAME_BYTES))

    def mix(self, frames: list[bytes]) -> list[bytes]:
        """`frames` with the noise added."""
        return [self._ulaw(_pcm(f) + self._noise(len(f))) for f in frames]
