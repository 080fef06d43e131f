from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import soxr

from ivr.audio.codec import (
    FRAME_BYTES,
    ULAW_SILENCE,
    Framer,
    ToUlaw8k,
    Upsampler,
    frames,
    pcm16_to_ulaw,
    pcm16_to_wav,
    to_ulaw8k,
    ulaw_to_pcm16,
)


def tone(freq: float, rate: int, seconds: float, amp: float = 8000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16).tobytes()


def peak_hz(pcm16: bytes, rate: int) -> float:
    x = np.frombuffer(pcm16, dtype=np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """Split `data` into chunks cycling through `sizes` (odd sizes split samples)."""
    out, i, k = [], 0, 0
    while i < len(data):
        out.append(data[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return out


def test_ulaw_round_trip_within_quantisation_error() -> None:
    pcm = tone(440, 8000, 0.1, amp=12000)
    ulaw = pcm16_to_ulaw(pcm)
    assert len(ulaw) == len(pcm) // 2
    back = np.frombuffer(ulaw_to_pcm16(ulaw), dtype=np.int16).astype(int)
    orig = np.frombuffer(pcm, dtype=np.int16).astype(int)
    # µ-law keeps ~4 mantissa bits: error within 1/16 of the magnitude plus a small floor.
    assert np.all(np.abs(back - orig) <= np.abs(orig) / 16 + 8)


def test_ulaw_silence_decodes_to_zero() -> None:
    assert ulaw_to_pcm16(ULAW_SILENCE * FRAME_BYTES) == bytes(2 * FRAME_BYTES)
    assert pcm16_to_ulaw(bytes(2 * FRAME_BYTES)) == ULAW_SILENCE * FRAME_BYTES


def test_upsampler_doubles_samples_and_keeps_frequency() -> None:
    up = Upsampler()
    pcm = tone(440, 8000, 1.0)
    out = b"".join(up.process(c) for c in chunked(pcm, [320])) + up.flush()
    assert len(out) == 2 * len(pcm)
    assert peak_hz(out, 16000) == pytest.approx(440, abs=2)

    # Reusable after flush, and odd-sized chunks do not shift samples (chunking only
    # changes soxr's rounding in the last bit).
    out2 = b"".join(up.process(c) for c in chunked(pcm, [321, 99, 1])) + up.flush()
    assert len(out2) == len(out)
    diff = np.frombuffer(out2, np.int16).astype(int) - np.frombuffer(out, np.int16)
    assert np.max(np.abs(diff)) <= 2


def test_upsampler_reset_drops_pending_audio() -> None:
    up = Upsampler()
    up.process(tone(440, 8000, 0.1))
    up.reset()
    pcm = tone(440, 8000, 0.5)
    out = up.process(pcm) + up.flush()
    assert len(out) == 2 * len(pcm)


@pytest.mark.parametrize("rate", [22050, 24000, 16000])
def test_to_ulaw8k_streaming_matches_one_shot(rate: int) -> None:
    pcm = tone(440, rate, 1.0)
    conv = ToUlaw8k(rate)
    streamed = b"".join(conv.push(c) for c in chunked(pcm, [1001, 333, 7, 4096])) + conv.flush()

    x = np.frombuffer(pcm, dtype=np.int16)
    expected = len(soxr.resample(x, rate, 8000))
    assert abs(len(streamed) - expected) <= 4
    assert abs(len(to_ulaw8k(pcm, rate)) - expected) <= 4
    assert peak_hz(ulaw_to_pcm16(streamed), 8000) == pytest.approx(440, abs=2)


def test_to_ulaw8k_at_8k_is_plain_encoding() -> None:
    pcm = tone(440, 8000, 0.2)
    conv = ToUlaw8k(8000)
    streamed = b"".join(conv.push(c) for c in chunked(pcm, [3, 5])) + conv.flush()
    assert streamed == pcm16_to_ulaw(pcm)


def test_framer_emits_exact_frames_and_pads_the_tail() -> None:
    data = bytes(range(256)) * 7 + b"\x01\x02\x03"  # 1795 bytes: 11 frames + 35
    framer = Framer()
    out: list[bytes] = []
    for chunk in chunked(data, [1, 159, 161, 500, 37]):
        out.extend(framer.push(chunk))
    assert all(len(f) == FRAME_BYTES for f in out)
    assert len(out) == len(data) // FRAME_BYTES
    assert framer.pending == len(data) % FRAME_BYTES
    tail = framer.flush(pad=True)
    assert len(tail) == 1 and len(tail[0]) == FRAME_BYTES
    assert b"".join(out + tail) == data + ULAW_SILENCE * (FRAME_BYTES - 35)
    assert framer.pending == 0
    assert framer.flush() == []


def test_framer_flush_without_padding_and_clear() -> None:
    framer = Framer()
    assert framer.push(b"\x10" * 170) == [b"\x10" * 160]
    assert framer.flush(pad=False) == [b"\x10" * 10]
    framer.push(b"\x10" * 50)
    framer.clear()
    assert framer.flush() == []


def test_frames_helper() -> None:
    data = b"\x20" * 400
    out = frames(data)
    assert [len(f) for f in out] == [160, 160, 160]
    assert out[-1] == b"\x20" * 80 + ULAW_SILENCE * 80
    assert [len(f) for f in frames(data, pad=False)] == [160, 160, 80]
    assert frames(b"") == []
    assert frames(b"\x20" * 320) == [b"\x20" * 160] * 2


def test_pcm16_to_wav() -> None:
    pcm = tone(440, 16000, 0.1)
    with wave.open(io.BytesIO(pcm16_to_wav(pcm, 16000)), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.readframes(w.getnframes()) == pcm
