"""Grammar-aware endpointing: a turn whose answer so far is complete for the step's
grammar ends after a short silence; one that may go on ("twenty", waiting for "two")
waits the full end-of-speech time. Driven by synthetic frames on the caller's clock and
a fake utterance whose partial hypotheses the test sets: nothing here is timed."""

from __future__ import annotations

import asyncio
import datetime
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import structlog

from ivr.audio.codec import pcm16_to_ulaw
from ivr.audio.endpoint import EndpointConfig, Endpointer, SpeechEnded, SpeechStarted
from ivr.flows import engine
from ivr.flows.engine.collection import listen
from ivr.flows.model import AskStep, Choice, SlotDef
from ivr.flows.slots import grammar_for, parse_text
from ivr.grammar import Grammar
from ivr.session.inbound import Inbound, SpeechDone
from ivr.speech.base import Recognition, partial_text
from ivr.telephony.inbound import Media
from tests.unit.test_inbound import QuietSpeaker

FRAME_MS = 20
END_MS = 600  # EndpointConfig's end_silence_ms
COMPLETE_MS = 250


def voiced(ms: int) -> bytes:
    """8 kHz PCM16 that webrtcvad calls voice in every frame (as in test_inbound)."""
    t = np.arange(8 * ms) / 8000
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 25))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return bytes((x / np.max(np.abs(x)) * 8000).astype(np.int16).tobytes())


SILENCE = bytes(320)


# -- what is a complete answer -------------------------------------------------------------


def test_phrase_is_complete_unless_another_answer_goes_on_from_it() -> None:
    menu = Grammar(("sales", "support", "account", "account balance"),
                   answers=(("sales",), ("support",), ("account",), ("account balance",)))
    assert menu.complete("sales") and menu.complete("Support")
    assert not menu.complete("account")  # may become a different answer
    assert menu.complete("account balance")
    assert not menu.complete("") and not menu.complete("sal") and not menu.complete("tech")


def test_same_answer_extension_keeps_a_phrase_complete() -> None:
    yes_no = grammar_for(SlotDef(type="yes_no"))
    assert yes_no.complete("yes")  # beside "yes please": the same answer
    assert yes_no.complete("no") and yes_no.complete("that's right")
    assert not yes_no.complete("that's")
    # Without the grouping a prefix of another phrase is not complete.
    assert not Grammar(("yes", "yes please")).complete("yes")


def test_number_that_may_go_on_is_not_complete() -> None:
    number = grammar_for(SlotDef(type="number", min=1, max=99))
    assert number.jsgf is not None
    assert not number.complete("twenty")  # may yet be "twenty two"
    assert number.complete("twenty two")  # nothing goes on from it up to 99
    assert not number.complete("twenty five hundred")  # not an answer of this grammar
    digits = grammar_for(SlotDef(type="digits", length=4))
    assert not digits.complete("one two three")
    assert digits.complete("one two three four")
    assert not grammar_for(SlotDef(type="digits", min_length=2)).complete("one two")


def test_menu_grammar_groups_each_choices_words() -> None:
    step = AskStep(ask="Which one?", choices=(
        Choice(words=("account", "my account"), goto="a"),
        Choice(words=("account balance", "balance"), goto="b"),
        Choice(words=("Sales", "sales team"), goto="c"),
    ))
    grammar = listen("menu", step, None).grammar
    assert grammar is not None
    assert not grammar.complete("account")  # another choice goes on from it
    assert grammar.complete("balance") and grammar.complete("account balance")
    assert grammar.complete("sales")  # "sales team" is the same choice


# -- the endpointer ------------------------------------------------------------------------


def silence_until_end(ep: Endpointer, complete: bool) -> int:
    """Speak 600 ms, then send silence until the turn ends: how much silence it took."""
    ep.arm(EndpointConfig(complete_silence_ms=COMPLETE_MS), 0)
    ts, started = 0, False
    for i in range(0, len(voiced(600)), 320):
        event = ep.process(voiced(600)[i : i + 320], ts)
        started = started or isinstance(event, SpeechStarted)
        ts += FRAME_MS
    assert started and ep.in_speech
    ep.answer_complete = complete
    for n in range(1, 100):
        event = ep.process(SILENCE, ts)
        ts += FRAME_MS
        if isinstance(event, SpeechEnded):
            return n * FRAME_MS
    raise AssertionError("the turn never ended")


def test_endpointer_ends_a_complete_answer_after_the_short_silence() -> None:
    short = silence_until_end(Endpointer(), complete=True)
    full = silence_until_end(Endpointer(), complete=False)
    assert COMPLETE_MS <= short < END_MS <= full


def test_a_new_start_of_speech_forgets_completeness() -> None:
    ep = Endpointer()
    ep.arm(EndpointConfig(complete_silence_ms=COMPLETE_MS), 0)
    ep.answer_complete = True
    ep.arm(EndpointConfig(complete_silence_ms=COMPLETE_MS), 0)
    assert not ep.answer_complete


# -- the session's inbound side, with partial hypotheses -----------------------------------


@dataclass
class PartialUtterance:
    """A recognizer utterance whose partial hypothesis the test sets."""

    heard: str | None = None
    audio: int = 0

    def feed(self, pcm16_16k: bytes) -> None:
        self.audio += len(pcm16_16k)

    def partial(self) -> str | None:
        return self.heard

    async def finish(self) -> Recognition:
        return Recognition(self.heard or "")

    async def cancel(self) -> None:
        pass


@dataclass
class Recognizer:
    name: str = "fake"
    started: list[PartialUtterance] = field(default_factory=list)
    grammars: list[Grammar | None] = field(default_factory=list)

    async def start(self, grammar: Grammar | None) -> PartialUtterance:
        self.grammars.append(grammar)
        self.started.append(PartialUtterance())
        return self.started[-1]


def listen_with(grammar: Grammar) -> engine.Listen:
    return engine.Listen(step="ask", phrases=grammar.phrases if grammar.jsgf is None else (),
                         dtmf=None, timeout_ms=5000, end_silence_ms=None,
                         max_utterance_ms=15000, speech=True, barge_in=False, grammar=grammar)


class Caller:
    def __init__(self, grammar: Grammar, complete_ms: int = COMPLETE_MS) -> None:
        self.recognizer = Recognizer()
        self.inbound = Inbound(self.recognizer, QuietSpeaker(), Counter(),  # type: ignore[arg-type]
                               structlog.get_logger(), complete_ms=complete_ms)
        self.inbound.listen = listen_with(grammar)
        self.inbound.arm(self.inbound.listen)
        self.ts = 0

    def send(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), 320):
            payload = pcm16_to_ulaw(pcm[i : i + 320])
            self.inbound.on_media(Media(self.ts // FRAME_MS, "MZ1", "inbound", 1, self.ts,
                                        payload))
            self.ts += FRAME_MS

    async def says(self, partial: str) -> PartialUtterance:
        """Talk until the utterance has started, then let it hear `partial`."""
        for _ in range(30):
            self.send(voiced(FRAME_MS))
            await asyncio.sleep(0)
        assert self.recognizer.started, "speech never started an utterance"
        utt = self.recognizer.started[-1]
        utt.heard = partial
        self.send(voiced(200))  # the caller is still talking when the partial arrives
        return utt

    def silence_until_turn_ends(self) -> int:
        for n in range(1, 100):
            self.send(SILENCE)
            if not self.inbound.inputs.empty():
                assert isinstance(self.inbound.inputs.get_nowait(), SpeechDone)
                return n * FRAME_MS
        raise AssertionError("the turn never ended")


async def test_partial_number_waits_the_full_end_of_speech_time() -> None:
    """"twenty" may yet be "twenty two": the turn does not end early."""
    caller = Caller(grammar_for(SlotDef(type="number", min=1, max=99)))
    await caller.says("twenty")
    assert caller.silence_until_turn_ends() >= END_MS
    assert caller.inbound.stats["turns_ended_complete"] == 0


async def test_complete_answers_end_after_the_short_silence() -> None:
    for grammar, said in (
        (grammar_for(SlotDef(type="yes_no")), "yes"),
        (Grammar(("Sales", "Support", "Billing"), answers=(("Sales",), ("Support",),
                                                           ("Billing",))), "Billing"),
    ):
        caller = Caller(grammar)
        utt = await caller.says(said)
        assert partial_text(utt) == said
        assert caller.silence_until_turn_ends() < END_MS
        assert caller.inbound.stats["turns_ended_complete"] == 1


async def test_complete_answer_waits_the_full_time_when_the_setting_is_off() -> None:
    caller = Caller(grammar_for(SlotDef(type="yes_no")), complete_ms=0)
    await caller.says("yes")
    assert caller.silence_until_turn_ends() >= END_MS


async def test_partial_that_becomes_complete_while_silent_ends_the_turn_then() -> None:
    """The recognizer lags the audio: a partial that turns complete during the silence
    ends the turn from then on (already past the short silence: at once)."""
    caller = Caller(grammar_for(SlotDef(type="yes_no")))
    utt = await caller.says("that's")
    # 440 ms of silence: past the short silence (the VAD's ~120 ms hangover included),
    # short of the full end of speech.
    for _ in range(22):
        caller.send(SILENCE)
    assert caller.inbound.inputs.empty()
    utt.heard = "that's right"
    caller.send(SILENCE)
    assert isinstance(caller.inbound.inputs.get_nowait(), SpeechDone)


def test_remote_utterances_without_partials_give_none() -> None:
    class Remote:
        def feed(self, pcm16_16k: bytes) -> None: ...
        async def finish(self) -> Recognition:
            return Recognition("")
        async def cancel(self) -> None: ...

    assert partial_text(Remote()) is None


# -- acceptance (issue #12): "twenty", a pause, "two" is twenty two ------------------------

PAUSE_FRAMES = 22  # 440 ms: past the short silence (VAD hangover included), short of END_MS


async def pause_then_go_on(grammar: Grammar) -> tuple[bool, str, int]:
    """The caller says "twenty", pauses, then "two", then is silent: (whether the turn
    ended during the pause, what the ended turn's utterance recognized, the silence that
    ended it after "two")."""
    caller = Caller(grammar)
    utt = await caller.says("twenty")
    for _ in range(PAUSE_FRAMES):
        caller.send(SILENCE)
    ended_in_pause = not caller.inbound.inputs.empty()
    silence_ms = 0
    if not ended_in_pause:
        caller.send(voiced(100))
        utt.heard = "twenty two"
        caller.send(voiced(200))
        silence_ms = caller.silence_until_turn_ends()
    task = caller.inbound.claim_utterance()
    assert task is not None
    recognized = await task
    caller.inbound.release(task)
    assert caller.recognizer.started == [utt]  # one turn, one utterance
    return ended_in_pause, (await recognized.finish()).text, silence_ms


async def test_twenty_pause_two_is_twenty_two() -> None:
    """A number slot (1-99): "twenty" may go on, so the pause does not end the turn; the
    answer heard to its end is 22, not 20, and it ends after the short silence."""
    slot = SlotDef(type="number", min=1, max=99)
    grammar = grammar_for(slot)
    ended_in_pause, text, silence_ms = await pause_then_go_on(grammar)
    assert not ended_in_pause
    assert text == "twenty two"
    value = parse_text(slot, text, now=datetime.datetime(2026, 1, 5, 9, 0))
    assert value is not None and value.value == 22
    assert silence_ms < END_MS  # "twenty two" is complete up to 99: the short silence


async def test_a_complete_twenty_ends_in_the_pause() -> None:
    """The control: where "twenty" is a whole answer, the same pause ends the turn."""
    grammar = Grammar(("twenty",), "#JSGF V1.0;\ngrammar g;\npublic <answer> = twenty | thirty;\n")
    ended_in_pause, text, _ = await pause_then_go_on(grammar)
    assert ended_in_pause and text == "twenty"
