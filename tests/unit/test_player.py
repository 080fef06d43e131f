"""The outbound player: framing, marks, clear and what the caller heard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from ivr.audio.player import Player


class Wire:
    """The player's outbound port, recording what was sent and when (frames "encoded"
    as hex, so what was sent can be compared with the audio)."""

    def __init__(self, *, signal_after: int = 0) -> None:
        self.sent: list[tuple[float, str, bytes | str | None]] = []
        self.signal_after = signal_after
        self.frames_sent = asyncio.Event()  # set once `signal_after` frames went out

    def encode(self, ulaw: bytes) -> list[str]:
        assert len(ulaw) % 160 == 0
        return [ulaw[i:i + 160].hex() for i in range(0, len(ulaw), 160)]

    def media(self, piece: str) -> None:
        self.sent.append((time.monotonic(), "media", bytes.fromhex(piece)))
        if self.signal_after and self.events().count("media") >= self.signal_after:
            self.frames_sent.set()

    def mark(self, name: str) -> None:
        self.sent.append((time.monotonic(), "mark", name))

    def clear(self) -> None:
        self.sent.append((time.monotonic(), "clear", None))

    def events(self) -> list[str]:
        return [event for _, event, _ in self.sent]


async def audio(total: int, chunk: int = 333) -> AsyncIterator[bytes]:
    for i in range(0, total, chunk):
        yield b"\x7f" * min(chunk, total - i)


async def test_frames_are_160_bytes_and_a_mark_follows() -> None:
    """Odd-sized chunks become whole 160-byte frames (last one padded), then one mark."""
    wire = Wire()
    player = Player(wire)
    prompt = await player.play(player.new_prompt("hi"), audio(1000))
    assert wire.events() == ["media"] * 7 + ["mark"]
    payloads = [p for _, event, p in wire.sent if event == "media" and isinstance(p, bytes)]
    assert len(payloads) == 7
    assert {len(p) for p in payloads} == {160}
    assert payloads[-1].endswith(b"\xff" * 120)  # padded with µ-law silence
    assert wire.sent[-1][2] == prompt.name
    assert prompt.state == "sent" and player.playing


async def test_pacing_keeps_at_most_the_lead_ahead() -> None:
    """With a 40 ms lead, 15 frames (300 ms) take at least 300 - 40 - 20 ms to send."""
    wire = Wire()
    player = Player(wire, lead=0.040)
    start = time.monotonic()
    await player.play(player.new_prompt("x"), audio(160 * 15))
    frames = [t for t, event, _ in wire.sent if event == "media"]
    assert frames[-1] - start >= 0.300 - 0.040 - 0.020
    for i, t in enumerate(frames):
        assert t - start >= i * 0.020 - 0.040 - 0.005


async def test_echoed_mark_means_played() -> None:
    wire = Wire()
    player = Player(wire)
    prompt = await player.play(player.new_prompt("hi"), audio(320))
    assert player.on_mark(prompt.name) is prompt
    assert prompt.state == "played" and prompt.done.is_set()
    assert prompt.heard_ms == 40
    assert not player.playing


async def test_clear_marks_pending_prompts_interrupted_and_echoes_are_stale() -> None:
    """After clear, the mark Twilio echoes for a cut prompt is not taken as 'played'."""
    wire = Wire()
    player = Player(wire)
    prompt = await player.play(player.new_prompt("hi"), audio(320))
    cut = await player.clear()
    assert cut == [prompt] and prompt.state == "interrupted"
    assert wire.events()[-1] == "clear"
    assert player.on_mark(prompt.name) is None
    assert prompt.state == "interrupted"


async def test_cancelled_play_is_interrupted_and_releases_waiters() -> None:
    """Barge-in cancels the play task: the prompt is interrupted and `done` is set."""
    wire = Wire(signal_after=10)
    player = Player(wire, lead=0.020)
    prompt = player.new_prompt("long")
    task = asyncio.create_task(player.play(prompt, audio(160 * 100)))
    await wire.frames_sent.wait()  # well into the prompt, on the player's own clock
    task.cancel()
    await asyncio.wait({task})
    assert prompt.state == "interrupted" and prompt.done.is_set()
    assert 0 < prompt.heard_ms < prompt.duration_ms
    assert "mark" not in wire.events()
    assert not player.playing
