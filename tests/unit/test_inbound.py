"""The inbound side never leaves an utterance open: whatever ends the speech's turn (a
result, new speech, the turn's end, the call's end), its utterance is finished or
cancelled, so it cannot hold a recognizer worker."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import structlog

from ivr.audio.codec import pcm16_to_ulaw
from ivr.flows import engine
from ivr.grammar import Grammar
from ivr.session.inbound import Inbound, SpeechDone
from ivr.speech.base import Recognition
from ivr.telephony.inbound import Media

LISTEN = engine.Listen(step="menu", phrases=("sales", "support"), dtmf=None, timeout_ms=5000,
                       end_silence_ms=None, max_utterance_ms=1000, speech=True,
                       barge_in=True)
FRAME_MS = 20


@dataclass
class FakeUtterance:
    audio: int = 0
    finished: bool = False
    cancelled: bool = False

    def feed(self, pcm16_16k: bytes) -> None:
        self.audio += len(pcm16_16k)

    async def finish(self) -> Recognition:
        self.finished = True
        return Recognition("sales", 0.9)

    async def cancel(self) -> None:
        if not self.finished:
            self.cancelled = True

    @property
    def open(self) -> bool:
        return not (self.finished or self.cancelled)


@dataclass
class FakeRecognizer:
    name: str = "fake"
    started: list[FakeUtterance] = field(default_factory=list)
    gate: asyncio.Event | None = None  # start() waits on it when set

    async def start(self, grammar: Grammar | None) -> FakeUtterance:
        if self.gate is not None:
            await self.gate.wait()
        self.started.append(FakeUtterance())
        return self.started[-1]


class QuietSpeaker:
    playing = False
    interruptible = False

    def interrupt(self) -> None:
        raise AssertionError("nothing is playing")


def voiced(ms: int) -> bytes:
    """8 kHz PCM16 that webrtcvad calls voice in every frame (see tests/unit/test_endpoint)."""
    t = np.arange(8 * ms) / 8000
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 25))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (x / np.max(np.abs(x)) * 8000).astype(np.int16).tobytes()


class Line:
    def __init__(self, inbound: Inbound) -> None:
        self.inbound = inbound
        self.ts = 0

    def send(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), 320):
            payload = pcm16_to_ulaw(pcm[i : i + 320])
            self.inbound.on_media(Media(self.ts // FRAME_MS, "MZ1", "inbound", 1, self.ts,
                                        payload))
            self.ts += FRAME_MS

    async def talk_until_started(self, recognizer: FakeRecognizer, count: int) -> None:
        """Voice until the `count`th utterance has started (the endpointer needs ~200 ms)."""
        for _ in range(50):
            self.send(voiced(20))
            await asyncio.sleep(0)
            if len(recognizer.started) >= count:
                return
        raise AssertionError("speech never started an utterance")


def make() -> tuple[Inbound, FakeRecognizer, Line]:
    recognizer = FakeRecognizer()
    inbound = Inbound(recognizer, QuietSpeaker(), Counter(),  # type: ignore[arg-type]
                      structlog.get_logger())
    inbound.listen = LISTEN
    inbound.arm(LISTEN)
    return inbound, recognizer, Line(inbound)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_turn_ending_mid_speech_cancels_the_utterance() -> None:
    """A turn given up on while the caller still talks (the answer's time-out) cancels
    the utterance the speech started."""
    inbound, recognizer, line = make()
    await line.talk_until_started(recognizer, 1)
    inbound.disarm()
    await settle()
    assert recognizer.started[0].cancelled


async def test_claimed_utterance_is_released_after_recognition() -> None:
    """The utterance whose speech ended is finished by its claimer and then let go; a
    release before the recognizer has even started it cancels it when it arrives."""
    inbound, recognizer, line = make()
    await line.talk_until_started(recognizer, 1)
    task = inbound.claim_utterance()
    assert task is not None
    utt = await task
    await utt.finish()
    inbound.release(task)
    inbound.disarm()
    await inbound.close()
    assert recognizer.started[0].finished and not recognizer.started[0].cancelled

    inbound, recognizer, line = make()
    recognizer.gate = asyncio.Event()
    for _ in range(20):
        line.send(voiced(20))
    task = inbound.claim_utterance()
    assert task is not None and not task.done()
    inbound.release(task)  # recognition gave up while the recognizer was starting
    recognizer.gate.set()
    await task
    await settle()
    assert recognizer.started[0].cancelled


async def test_new_speech_cancels_the_unclaimed_utterance() -> None:
    """Speech that never ended (the turn moved on without it) is cancelled when new speech
    starts rather than overwritten and left open."""
    inbound, recognizer, line = make()
    await line.talk_until_started(recognizer, 1)
    inbound.disarm()  # the turn ends; the caller keeps talking into the next one
    inbound.listen = LISTEN
    inbound.arm(LISTEN)
    await line.talk_until_started(recognizer, 2)
    await inbound.close()
    assert [u.open for u in recognizer.started] == [False, False]


async def test_call_end_cancels_every_open_utterance() -> None:
    """A hang-up mid-speech cancels the utterance, and `close` waits for the cancel."""
    inbound, recognizer, line = make()
    await line.talk_until_started(recognizer, 1)
    await inbound.close()
    assert recognizer.started[0].cancelled


async def test_speech_ended_by_max_length_is_claimed_not_cancelled() -> None:
    """Speech cut at max_utterance_ms is the turn's answer: it goes to recognition."""
    inbound, recognizer, line = make()
    await line.talk_until_started(recognizer, 1)
    line.send(voiced(1200))
    assert isinstance(inbound.inputs.get_nowait(), SpeechDone)
    task = inbound.claim_utterance()
    assert task is not None
    utt = await task
    assert (await utt.finish()).text == "sales" and not recognizer.started[0].cancelled
    inbound.release(task)
    await inbound.close()
