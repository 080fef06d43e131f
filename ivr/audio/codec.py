"""Audio formats at the telephony edge: µ-law ⇄ PCM16, resampling, framing.

Twilio speaks 8 kHz mono µ-law in both directions. Inbound audio is decoded to 8 kHz
PCM16 (what webrtcvad wants) and, while the caller is speaking, upsampled to 16 kHz for
the recognizer. Synthesizer output at whatever rate the engine produces is brought to
8 kHz µ-law and cut into 160-byte (20 ms) frames for the player.

All PCM16 here is native-endian, which is little-endian on every platform we deploy to
and is what audioop, numpy, soxr and webrtcvad all assume.

The streaming objects are per call (or per prompt) and not thread-safe; each is owned by
whoever drives it (the call session, or the synthesis thread for `ToUlaw8k`).
"""

from __future__ import annotations

import io
import sys
import warnings
import wave
from typing import Literal

import numpy as np
import soxr

from ivr.errors import InvalidValue

# The one place audioop is imported: stdlib up to 3.12 (deprecated, hence the filter so
# the warning does not surface in every test run), the `audioop-lts` backport on 3.13+.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "FRAME_BYTES",
    "FRAME_SECONDS",
    "TELEPHONY_RATE",
    "ULAW_SILENCE",
    "Framer",
    "ToUlaw8k",
    "Upsampler",
    "frames",
    "pcm16_to_ulaw",
    "pcm16_to_wav",
    "to_ulaw8k",
    "ulaw_to_pcm16",
]

TELEPHONY_RATE = 8000
# 20 ms at 8 kHz, one byte per µ-law sample: the frame size Twilio sends and we send.
FRAME_BYTES = 160
FRAME_SECONDS = FRAME_BYTES / TELEPHONY_RATE
# µ-law code for a zero sample (0xFF is +0; 0x7F, -0, would do as well).
ULAW_SILENCE = b"\xff"

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]

# Cost per 20 ms of audio, one core of a (shared, 2-vCPU) AMD EPYC VM, Python 3.11,
# soxr 1.1.0, best of repeated runs including the bytes<->numpy conversions:
#   Upsampler (8 k -> 16 k, MQ)     ~8 µs (HQ the same, LQ ~6.5)
#   ToUlaw8k (22.05 k -> 8 k, MQ)   ~5.3 µs (HQ and LQ the same)
#   ulaw_to_pcm16                   ~0.12 µs
# MQ: HQ costs the same but its extra precision (20 vs 16 bits) is wasted on 8-bit µ-law
# and its filter is longer (more delay); MQ is flat to 3.6 kHz, past the 3.4 kHz phone
# band, and its images above 4 kHz are >100 dB down, so the 16 kHz recognizer sees no
# invented high band. LQ is already -8 dB at 3.4 kHz. soxr works in internal blocks, so
# the output comes in bursts (every ~120 ms for the upsampler) rather than per
# frame; `flush()` at end of speech releases the remainder, so the final result is not
# delayed. Reproduce with:
#   .venv/bin/python -m timeit -s "from ivr.audio.codec import Upsampler; import os; \
#       u = Upsampler(); f = os.urandom(320)" "u.process(f)"
#   .venv/bin/python -m timeit -s "from ivr.audio.codec import ToUlaw8k; import os; \
#       c = ToUlaw8k(22050); f = os.urandom(882)" "c.push(f)"
_DEFAULT_QUALITY: Quality = "MQ"


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode µ-law bytes to PCM16 (two bytes per sample)."""
    return audioop.ulaw2lin(ulaw, 2)


def pcm16_to_ulaw(pcm16: bytes) -> bytes:
    """Encode PCM16 to µ-law; `pcm16` must hold whole samples (an even byte count)."""
    return audioop.lin2ulaw(pcm16, 2)


def _take_even(carry: bytes, data: bytes) -> tuple[bytes, bytes]:
    """Join a dangling byte with new data; return (whole samples, new dangling byte).

    Producers hand us arbitrary byte chunks, and a sample split across two chunks must
    not shift every later sample by one byte.
    """
    if carry:
        data = carry + data
    if len(data) % 2:
        return data[:-1], data[-1:]
    return data, b""


def _as_int16(pcm16: bytes) -> np.ndarray:
    return np.frombuffer(pcm16, dtype=np.int16)


class Upsampler:
    """Streaming 8 kHz -> 16 kHz PCM16 resampler for one call's recognizer feed (or
    between other rates: 16 -> 24 kHz for the Realtime transcriber).

    `process()` returns whatever output is ready (often nothing: see the cost note
    above); `flush()` at end of an utterance returns the rest and leaves the stream
    ready for the next utterance, so one instance serves a whole call. Over a stream,
    exactly `rate_out / rate_in` times as many samples come out as went in.
    """

    def __init__(self, quality: Quality = _DEFAULT_QUALITY, *,
                 rate_in: int = TELEPHONY_RATE, rate_out: int = 16000) -> None:
        self._quality = quality
        self._rates = (rate_in, rate_out)
        # soxr's stream state is ~50 KB: held only while an utterance is being fed (a
        # call listens far more than its caller speaks), made again at the next one.
        self._stream: soxr.ResampleStream | None = None
        self._carry = b""

    def process(self, pcm16_8k: bytes) -> bytes:
        data, self._carry = _take_even(self._carry, pcm16_8k)
        if not data:
            return b""
        stream = self._stream
        if stream is None:
            stream = self._stream = soxr.ResampleStream(
                *self._rates, 1, dtype="int16", quality=self._quality)
        out: np.ndarray = stream.resample_chunk(_as_int16(data))
        return out.tobytes()

    def flush(self) -> bytes:
        """End of the stream: return the pending tail, then reset for reuse."""
        if self._stream is None:
            self._carry = b""
            return b""
        out: np.ndarray = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self.reset()
        return out.tobytes()

    def reset(self) -> None:
        """Drop pending audio (an utterance abandoned) and the stream with it."""
        self._stream = None
        self._carry = b""


class ToUlaw8k:
    """Streaming converter from PCM16 at `rate` Hz to 8 kHz µ-law, for synthesizer output.

    `push()` accepts chunks of any byte length (a sample split across two pushes is
    carried over) and returns whatever µ-law is ready, of any length, possibly empty;
    `flush()` returns the rest. Frame the result with `Framer`. One instance per prompt,
    or reuse it after `flush()`.
    """

    def __init__(self, rate: int, quality: Quality = _DEFAULT_QUALITY) -> None:
        if rate <= 0:
            raise InvalidValue(f"sample rate must be positive, got {rate}")
        self.rate = rate
        # At 8 kHz there is nothing to resample; skip soxr's filter delay and cost.
        self._stream = (
            None
            if rate == TELEPHONY_RATE
            else soxr.ResampleStream(rate, TELEPHONY_RATE, 1, dtype="int16", quality=quality)
        )
        self._carry = b""

    def push(self, pcm16: bytes) -> bytes:
        data, self._carry = _take_even(self._carry, pcm16)
        if not data:
            return b""
        if self._stream is None:
            return audioop.lin2ulaw(data, 2)
        out: np.ndarray = self._stream.resample_chunk(_as_int16(data))
        return audioop.lin2ulaw(out.tobytes(), 2) if out.size else b""

    def flush(self) -> bytes:
        """End of the prompt: the remaining µ-law; the converter is then ready for reuse.

        A dangling odd byte at the end is half a sample and is dropped.
        """
        self._carry = b""
        if self._stream is None:
            return b""
        out: np.ndarray = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._stream.clear()
        return audioop.lin2ulaw(out.tobytes(), 2) if out.size else b""


def to_ulaw8k(pcm16: bytes, rate: int, quality: Quality = _DEFAULT_QUALITY) -> bytes:
    """One-shot conversion of a whole PCM16 buffer at `rate` Hz to 8 kHz µ-law."""
    conv = ToUlaw8k(rate, quality)
    return conv.push(pcm16) + conv.flush()


def frames(ulaw: bytes, size: int = FRAME_BYTES, *, pad: bool = True) -> list[bytes]:
    """Cut µ-law into `size`-byte frames; a short last frame is padded with silence.

    With `pad=False` the short last frame is returned as it is.
    """
    out = [ulaw[i : i + size] for i in range(0, len(ulaw), size)]
    if pad and out and len(out[-1]) < size:
        out[-1] = out[-1] + ULAW_SILENCE * (size - len(out[-1]))
    return out


class Framer:
    """Accumulates µ-law chunks of any size and hands out exact `size`-byte frames."""

    def __init__(self, size: int = FRAME_BYTES) -> None:
        if size <= 0:
            raise InvalidValue(f"frame size must be positive, got {size}")
        self.size = size
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back because they do not yet make a whole frame."""
        return len(self._buf)

    def push(self, ulaw: bytes) -> list[bytes]:
        """Add a chunk; return every frame now complete (possibly none)."""
        buf = self._buf
        buf += ulaw
        size = self.size
        whole = len(buf) - len(buf) % size
        if not whole:
            return []
        out = [bytes(buf[i : i + size]) for i in range(0, whole, size)]
        # The remainder is always shorter than one frame, so this delete stays cheap.
        del buf[:whole]
        return out

    def flush(self, pad: bool = True) -> list[bytes]:
        """Return the partial last frame (padded with µ-law silence when `pad`), if any."""
        if not self._buf:
            return []
        tail = bytes(self._buf)
        self._buf.clear()
        if pad:
            tail += ULAW_SILENCE * (self.size - len(tail))
        return [tail]

    def clear(self) -> None:
        """Discard buffered audio (the prompt was interrupted)."""
        self._buf.clear()


def pcm16_to_wav(pcm16: bytes, rate: int) -> bytes:
    """Wrap mono PCM16 in a WAV container (debug dumps, remote recognizers)."""
    if sys.byteorder == "big":
        # WAV data is little-endian; our buffers are native-endian.
        pcm16 = audioop.byteswap(pcm16, 2)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)
    return buf.getvalue()
