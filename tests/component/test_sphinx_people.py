"""Answers as people say them (issue 15), through the phone path and the real recognizer:
carrier words around an answer are understood, an answer outside the grammar is a
no-match rather than the nearest choice, and a result carries its margin."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.audio.codec import to_ulaw8k
from ivr.bench.accuracy import endpointed
from ivr.flows.load import load_flow
from ivr.flows.model import AskStep, SlotDef
from ivr.flows.slots import commit_yes_no_grammar, grammar_for, parse_text
from ivr.flows.text import menu_grammar
from ivr.grammar import Grammar
from ivr.speech.base import Recognition
from ivr.speech.espeak import synthesize_blocking
from ivr.speech.sphinx.pool import RecognizerPool
from tests.component.test_sphinx import feed_all

# The booking menu and service question of flows/dental_booking.yaml.
MENU = Grammar(
    ("book", "booking", "new appointment", "cancel", "reschedule", "change", "move"),
    answers=(("book", "booking", "new appointment"), ("cancel",),
             ("reschedule", "change", "move")),
)
SERVICE = SlotDef(type="choice", choices=[
    {"value": "cleaning", "words": ["cleaning", "clean"]},
    {"value": "checkup", "words": ["checkup", "check up", "exam"]},
    {"value": "whitening", "words": ["whitening"]},
    {"value": "filling", "words": ["filling"]},
])
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("America/New_York"))


@functools.cache
def phone(text: str, voice: str = "en-us") -> bytes:
    """`text` as a call delivers it to the recognizer: 8 kHz µ-law, endpointed, 16 kHz."""
    pcm, rate = synthesize_blocking(text, voice)
    return endpointed(to_ulaw8k(pcm, rate))


@pytest.fixture
async def pool() -> AsyncIterator[RecognizerPool]:
    async with RecognizerPool(1, timeout=20) as p:
        yield p


async def heard(pool: RecognizerPool, text: str, grammar: Grammar,
                voice: str = "en-us") -> Recognition:
    utterance = await pool.start(grammar)
    feed_all(utterance, phone(text, voice))
    return await utterance.finish()


@pytest.mark.parametrize("said", ["pizza", "hello"])
async def test_an_out_of_grammar_answer_is_a_no_match(
    pool: RecognizerPool, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the nearest menu choice: nothing, so the flow says it did not get that. Needs
    the garbage path, off by default (IVR_OOG_REJECT: it also rejects real answers)."""
    monkeypatch.setenv("IVR_OOG_REJECT", "1")
    result = await heard(pool, said, MENU)
    assert result.text == "", result.extra
    assert result.extra.get("no_match") is True


@pytest.mark.parametrize(
    ("slot", "said", "meant"),
    [
        (SERVICE, "a cleaning please", "cleaning"),
        (SlotDef(type="date"), "on wednesday", "2026-11-25"),
        (SlotDef(type="time"), "at two p m", "14:00"),
        (SlotDef(type="yes_no"), "yes please", "yes"),
        (SlotDef(type="yes_no"), "that's right", "yes"),
    ],
)
async def test_carrier_words_around_an_answer_are_understood(
    pool: RecognizerPool, slot: SlotDef, said: str, meant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With IVR_GRAMMAR_CARRIERS=1 (off by default: it costs other flows' bare answers)."""
    monkeypatch.setenv("IVR_GRAMMAR_CARRIERS", "1")
    result = await heard(pool, said, grammar_for(slot))
    value = parse_text(slot, result.text, now=NOW)
    assert value is not None and value.text == meant, result


async def test_a_decode_with_rivals_reports_its_margin(pool: RecognizerPool) -> None:
    """The N-best list gives how far the answer leads the best other one, in [0, 1]."""
    result = await heard(pool, "cancel", MENU)
    assert result.text == "cancel"
    assert result.margin is not None and 0.0 <= result.margin <= 1.0


@pytest.mark.parametrize("said", ["no that is wrong", "that is wrong"])
async def test_a_caller_who_says_the_read_back_is_wrong_is_heard_saying_no(
    pool: RecognizerPool, said: str,
) -> None:
    """`ivr bench conversation` saw "no that is wrong" heard as "go ahead" at a booking's
    read-back (8 wrong bookings in 100 calls) and "that is wrong" as "that is right": the
    yes/no grammar now holds them, and they parse as no."""
    slot = SlotDef(type="yes_no")
    rec = await heard(pool, said, grammar_for(slot))
    value = parse_text(slot, rec.text, now=NOW)
    assert value is not None and value.value is False, rec.text


@functools.cache
def _dental_menu() -> Grammar:
    flow = load_flow(Path("flows/dental_booking.yaml"))
    step = flow.steps["menu"]
    assert isinstance(step, AskStep)
    grammar = menu_grammar(step)
    assert grammar is not None
    return grammar


@pytest.mark.parametrize(
    ("slot", "said", "voice", "meant"),
    [
        # each was misheard by the plain grammars (`ivr bench accuracy --phrasings people`)
        (SlotDef(type="yes_no"), "that is right", "en-gb", "yes"),  # was "not really"
        (SlotDef(type="digits", length=4), "my order number is one two three four", "en-us",
         "1234"),  # was "four two eight one"
        (None, "i need to reschedule", "en-gb", "reschedule"),  # was nothing
    ],
)
async def test_answers_as_people_say_them_are_understood_by_default(
    pool: RecognizerPool, slot: SlotDef | None, said: str, voice: str, meant: str
) -> None:
    """Per answer type carrier words (issue 15), with no setting: "it is" or "my order
    number is" before digits, "i need to" before a menu of actions; and the yes/no grammar
    without "not really", which took "that is right"."""
    grammar = _dental_menu() if slot is None else grammar_for(slot)
    utterance = await pool.start(grammar)
    feed_all(utterance, phone(said, voice))
    result = await utterance.finish()
    if slot is None:
        assert _answer_of(grammar, result.text) == meant, result
    else:
        value = parse_text(slot, result.text, now=NOW)
        assert value is not None and value.text == meant, result


def _answer_of(grammar: Grammar, text: str) -> str | None:
    return next((group[0] for group in grammar.answers if text in group), None)


@pytest.mark.parametrize(("said", "voice"), [("hold on", "en-us+m3"), ("hold on", "en-us+f3"),
                                            ("pizza", "en-us+f3"),
                                            ("i want a refund for my shoes", "en-us+m3")])
async def test_at_a_booking_confirmation_other_speech_is_no_yes(
    pool: RecognizerPool, said: str, voice: str
) -> None:
    """By the plain yes/no grammar each of these was heard as a yes or a no in its voice
    ("hold on" as "go ahead", "pizza" as "yep", the refund as "please do"; all 4 fail
    with it); the grammar of a question whose yes commits rejects them: a no-match, by
    default."""
    rec = await heard(pool, said, commit_yes_no_grammar(), voice)
    assert parse_text(SlotDef(type="yes_no"), rec.text, now=NOW) is None, rec.text


@pytest.mark.parametrize(("said", "yes"), [("yes", True), ("no that is wrong", False)])
async def test_at_a_booking_confirmation_yes_and_no_are_still_heard(
    pool: RecognizerPool, said: str, yes: bool
) -> None:
    rec = await heard(pool, said, commit_yes_no_grammar())
    value = parse_text(SlotDef(type="yes_no"), rec.text, now=NOW)
    assert value is not None and value.value is yes, rec.text
