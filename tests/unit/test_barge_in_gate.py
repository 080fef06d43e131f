"""Word-gated barge-in in the inbound side, with a fake recognizer whose partial
hypothesis the test sets: what cuts a prompt, and what happens to speech that does not."""

from __future__ import annotations

import asyncio
import dataclasses
import wave
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import structlog

from ivr.audio.endpoint import EndpointConfig, Endpointer, SpeechStarted
from ivr.audio.voicing import VoicingMeter
from ivr.flows import engine
from ivr.grammar import Grammar
from ivr.session.inbound import Inbound, SpeechDone, _believable
from ivr.telephony.inbound import Dtmf
from tests.conftest import ROOT
from tests.unit.test_inbound import LISTEN, FakeUtterance, Line, settle, voiced


@dataclass
class PartialUtterance(FakeUtterance):
    heard: str | None = None

    def partial(self) -> str | None:
        return self.heard


@dataclass
class PartialRecognizer:
    name: str = "fake"
    started: list[PartialUtterance] = field(default_factory=list)
    heard: str | None = None  # the partial every utterance reports

    async def start(self, grammar: Grammar | None) -> PartialUtterance:
        self.started.append(PartialUtterance(heard=self.heard))
        return self.started[-1]


class PromptSpeaker:
    """A prompt that may be interrupted is playing until `interrupt()` or `end()`."""

    interruptible = True

    def __init__(self) -> None:
        self.playing = True
        self.interrupts = 0

    def interrupt(self) -> None:
        self.interrupts += 1
        self.playing = False


def fixture_pcm(name: str) -> bytes:
    """A committed fixture's 8 kHz PCM16 samples (tests/fixtures/make_barge_in_audio.py)."""
    with wave.open(str(ROOT / "tests" / "fixtures" / f"{name}.wav"), "rb") as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        return w.readframes(w.getnframes())


def cough() -> bytes:
    return fixture_pcm("cough_300ms")


def quiet(ms: int) -> bytes:
    return np.random.default_rng(ms).normal(0, 30, 8 * ms).astype(np.int16).tobytes()


def make(*, words: bool, heard: str | None
         ) -> tuple[Inbound, PartialRecognizer, PromptSpeaker, Line]:
    recognizer = PartialRecognizer(heard=heard)
    speaker = PromptSpeaker()
    inbound = Inbound(recognizer, speaker, Counter(),  # type: ignore[arg-type]
                      structlog.get_logger())
    inbound.listen = LISTEN
    inbound.watch_barge_in(LISTEN, words=words)
    return inbound, recognizer, speaker, Line(inbound)


async def send(line: Line, pcm: bytes) -> None:
    """Frame by frame, letting the recognizer's start run between frames."""
    for i in range(0, len(pcm), 320):
        line.send(pcm[i : i + 320])
        await asyncio.sleep(0)


def test_webrtcvad_calls_the_cough_fixture_speech_but_it_has_no_pitch() -> None:
    """The project's endpointer starts speech on the cough (else the gate would be
    untested), and the cough carries no pitch while the "support" fixture does."""
    assert len(cough()) == 2 * 8000 * 300 // 1000
    endpointer = Endpointer()
    endpointer.watch_barge_in(EndpointConfig(), 0)
    audio = quiet(400) + cough() + quiet(1000)
    events = [endpointer.process(audio[i : i + 320], i // 16) for i in range(0, len(audio), 320)]
    assert [e.at_ms for e in events if isinstance(e, SpeechStarted)] == [400]
    pitched = {}
    for name in ("cough_300ms", "support"):
        meter = VoicingMeter()
        meter.feed(fixture_pcm(name))
        pitched[name] = meter.pitched_ms
    assert pitched["cough_300ms"] == 0 and pitched["support"] >= 160, pitched


async def test_a_cough_over_a_word_gated_prompt_is_dropped_and_the_watch_goes_on() -> None:
    """The recognizer "hears" a phrase (a grammar search always does), but the cough has
    no pitch: no interrupt, nothing answered, its utterance cancelled, and real speech
    after it still cuts the prompt."""
    inbound, recognizer, speaker, line = make(words=True, heard="hours")
    await send(line, quiet(200) + cough() + quiet(900))
    await settle()
    assert len(recognizer.started) == 1, "the cough never started speech"
    assert speaker.interrupts == 0 and not inbound.barged
    assert inbound.inputs.empty()
    assert recognizer.started[0].cancelled
    assert inbound.stats["barge_ins_rejected"] == 1
    assert inbound.endpointer.state == "barge_in"
    await send(line, voiced(400))
    assert speaker.interrupts == 1 and inbound.barged


async def test_a_pitched_word_over_a_word_gated_prompt_cuts_it() -> None:
    """A word heard and a short vowel's pitch: the prompt is cut while the caller still
    talks (the same audio with no word heard does not cut it: see below)."""
    inbound, _, speaker, line = make(words=True, heard="support")
    await send(line, quiet(200) + cough_around_a_vowel(100))
    assert speaker.interrupts == 1 and inbound.barged
    assert inbound.stats["barge_ins"] == 1


def cough_around_a_vowel(vowel_ms: int) -> bytes:
    """Noise webrtcvad calls speech, with `vowel_ms` of pitch inside (20 ms more are
    counted: the pitch window straddles the joins)."""
    return cough()[:1600] + voiced(vowel_ms) + cough()[1600:]


async def test_a_short_vowel_without_a_word_heard_does_not_cut_a_word_gated_prompt() -> None:
    """120 ms of pitch (a grunt, say) that the recognizer made no word of, yet."""
    _, _, speaker, line = make(words=True, heard=None)
    await send(line, quiet(200) + cough_around_a_vowel(100))
    assert speaker.interrupts == 0


async def test_a_vowels_worth_of_pitch_cuts_a_word_gated_prompt_before_any_word() -> None:
    """A long word the recognizer has not finished: its pitch is enough."""
    _, _, speaker, line = make(words=True, heard=None)
    await send(line, quiet(200) + voiced(200))
    assert speaker.interrupts == 1


async def test_without_the_gate_a_cough_cuts_the_prompt() -> None:
    """`vad`: the same cough is speech enough."""
    _, _, speaker, line = make(words=False, heard="hours")
    await send(line, quiet(200) + cough())
    assert speaker.interrupts == 1


async def test_gated_speech_the_prompt_ends_under_is_the_answer() -> None:
    """The prompt ends normally while the gated speech goes on: it is the answer."""
    inbound, recognizer, speaker, line = make(words=True, heard="hours")
    await send(line, quiet(200) + cough()[:3200])
    assert len(recognizer.started) == 1
    speaker.playing = False  # the prompt played to its end
    inbound.arm(LISTEN)
    await send(line, cough()[3200:] + quiet(900))
    assert speaker.interrupts == 0
    assert isinstance(inbound.inputs.get_nowait(), SpeechDone)


async def test_a_key_cuts_a_word_gated_prompt_at_once() -> None:
    inbound, _, speaker, line = make(words=True, heard=None)
    """Even with gated speech under way (a cough, not yet judged)."""
    inbound.listen = dataclasses.replace(LISTEN, dtmf=engine.DtmfSpec(1, None, 3000))
    await send(line, quiet(200) + cough()[:3200])
    assert inbound.endpointer.in_speech and speaker.interrupts == 0
    inbound.on_dtmf(Dtmf(1, "MZ1", "inbound", "2"))
    assert speaker.interrupts == 1


def test_believable_is_a_vowels_pitch_or_less_with_a_real_word() -> None:
    assert _believable("support", 100)
    assert not _believable("support", 80)
    assert not _believable(None, 140)
    assert not _believable("<sil> [NOISE]", 140)
    assert _believable(None, 150)  # a word not ended yet, or a remote recognizer


async def test_speech_under_way_when_a_word_gated_prompt_starts_is_gated_over_it() -> None:
    """Speech begun between two prompts is not cut off by the next one's watch: it goes
    on, gated, and cuts the new prompt once it is a word."""
    inbound, recognizer, speaker, line = make(words=True, heard="support")
    speaker.playing = False  # between prompts
    await send(line, quiet(200) + voiced(200))
    assert inbound.endpointer.in_speech and len(recognizer.started) == 1
    speaker.playing = True  # the next prompt
    inbound.watch_barge_in(LISTEN, words=True)
    assert inbound.endpointer.in_speech
    await send(line, voiced(200))
    assert speaker.interrupts == 1 and len(recognizer.started) == 1


async def test_pitched_speech_whose_partials_lagged_cuts_the_prompt_at_its_end() -> None:
    """A short word the recognizer had not reported yet when it ended: its pitch is
    evidence enough; the prompt is cut then and the speech is the answer."""
    inbound, _, speaker, line = make(words=True, heard=None)
    await send(line, quiet(200) + cough_around_a_vowel(100))
    assert speaker.interrupts == 0
    await send(line, quiet(900))
    assert speaker.interrupts == 1
    assert isinstance(inbound.inputs.get_nowait(), SpeechDone)
