"""An ask step's `expect`: the recognizer listens only for the values offered."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from ivr.flows.engine import FlowRunner, Listen, ToolDone
from ivr.flows.engine.collection import narrowed
from ivr.flows.load import load_flow_text
from ivr.flows.model import SlotDef
from ivr.flows.slots import expected_grammar, expected_phrases, grammar_for, parse_text
from ivr.speech.sphinx.grammar import normalize_phrase

NY = ZoneInfo("America/New_York")
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=NY)
TIME = SlotDef(type="time")
EVERY_QUARTER = [f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 15, 30, 45)]


def test_offered_times_are_said_the_ways_people_say_them() -> None:
    said = expected_phrases(TIME, ["14:30", "14:00", "12:00", "09:00"], now=MONDAY)
    assert said["14:30"] == ("two thirty", "two thirty p.m.", "half past two")
    assert said["14:00"] == ("two", "two o'clock", "two p.m.")
    assert said["12:00"] == ("noon", "twelve", "twelve o'clock", "twelve p.m.")
    assert said["09:00"] == ("nine", "nine o'clock", "nine a.m.")


def test_a_bare_hour_is_left_out_where_it_means_another_time() -> None:
    said = expected_phrases(TIME, ["20:00", "07:30", "02:05"], now=MONDAY)
    assert said["20:00"] == ("eight p.m.",)  # "eight" alone is 8 a.m.
    assert said["07:30"] == ("seven thirty a.m.", "half past seven a.m.")
    assert said["02:05"] == ("two oh five a.m.",)


def test_every_phrase_made_parses_back_to_its_time() -> None:
    said = expected_phrases(TIME, EVERY_QUARTER, now=MONDAY)
    assert set(said) == set(EVERY_QUARTER)  # every time of day can be said somehow
    for text, phrases in said.items():
        for phrase in phrases:
            # as written, and as the recognizer spells it ("p.m." -> "p m")
            for heard in (phrase, " ".join(normalize_phrase(phrase)), f"at {phrase}"):
                value = parse_text(TIME, heard, now=MONDAY)
                assert value is not None and value.text == text, (heard, text)


def test_the_grammar_holds_only_the_offered_times() -> None:
    offered = ["09:00", "09:30", "14:30"]
    grammar = expected_grammar(TIME, offered, now=MONDAY)
    assert grammar is not None
    heard = {parse_text(TIME, p, now=MONDAY).text for p in grammar.phrases}  # type: ignore[union-attr]
    assert heard == set(offered)
    assert "three" not in grammar.phrases and "at" in grammar.lead
    assert len(grammar.phrases) < len(grammar_for(TIME).phrases)
    assert grammar.answers[0] == ("nine", "nine o'clock", "nine a.m.")


@pytest.mark.parametrize("raw", [None, [], "", ["not a time"], {"a": 1}, [""]])
def test_nothing_offered_is_no_narrowed_grammar(raw: object) -> None:
    assert narrowed(TIME, raw, now=MONDAY) is None


def test_expect_as_typed_values_or_comma_text() -> None:
    grammar = narrowed(TIME, [time(9, 0), "14:30"], now=MONDAY)
    assert grammar is not None and "half past two" in grammar.phrases
    grammar = narrowed(TIME, "09:00, 14:30", now=MONDAY)
    assert grammar is not None and "nine a.m." in grammar.phrases


def test_dates_choices_digits_and_numbers_narrow_too() -> None:
    day = SlotDef(type="date")
    tuesday = (MONDAY + timedelta(days=1)).date().isoformat()
    said = expected_phrases(day, [tuesday, "2026-12-10"], now=MONDAY)
    assert said[tuesday][:3] == ("tomorrow", "tuesday", "on tuesday")
    assert "december tenth" in said["2026-12-10"]
    for text, phrases in said.items():
        for phrase in phrases:
            assert parse_text(day, phrase, now=MONDAY).text == text  # type: ignore[union-attr]
    choice = SlotDef.model_validate({"type": "choice", "choices": [
        {"value": "cleaning", "words": ["cleaning", "clean"]}, {"value": "filling"}]})
    grammar = expected_grammar(choice, ["filling"], now=MONDAY)
    assert grammar is not None and grammar.phrases == ("filling",)
    digits = expected_grammar(SlotDef(type="digits", length=4), ["4507"], now=MONDAY)
    assert digits is not None and "four five oh seven" in digits.phrases
    assert expected_grammar(SlotDef(type="yes_no"), ["yes"], now=MONDAY) is None


FLOW = """
name: times
start: free
tools: [bookings.check_availability]
slots:
  time: {type: time}
steps:
  free:
    call: bookings.check_availability
    result: free
    next: ask_time
  ask_time:
    ask: What time?
    slot: time
    expect: "{{ vars.free.available }}"
    next: done
  done: {hangup: Bye.}
"""


def _listen(available: object) -> tuple[Listen, FlowRunner]:
    run = FlowRunner(load_flow_text(FLOW), now=lambda: MONDAY)
    run.start()
    actions = run.handle(ToolDone(True, {"available": available}))
    listens = [a for a in actions if isinstance(a, Listen)]
    assert len(listens) == 1
    return listens[0], run


def test_the_listen_of_a_step_with_expect_carries_only_the_offered_times() -> None:
    listen, run = _listen(["10:00", "14:30"])
    assert listen.grammar is not None
    assert set(listen.phrases) == set(listen.grammar.phrases)
    heard = {parse_text(TIME, p, now=MONDAY).text for p in listen.phrases}  # type: ignore[union-attr]
    assert heard == {"10:00", "14:30"}
    assert not [t for t in run.trace if t.kind == "expect_fallback"]
    assert listen.dtmf is not None and listen.dtmf.max_digits == 4  # keys as before


@pytest.mark.parametrize("available", [[], "", ["nonsense"]])
def test_an_empty_expect_listens_for_any_time_and_says_so(available: object) -> None:
    listen, run = _listen(available)
    assert listen.grammar == grammar_for(TIME)
    assert [t.kind for t in run.trace if t.step == "ask_time"] == ["expect_fallback"]


def test_a_failing_expect_listens_for_any_time() -> None:
    run = FlowRunner(load_flow_text(FLOW), now=lambda: MONDAY)
    run.start()
    actions = run.handle(ToolDone(True, {"other": 1}))  # no `available`: the template fails
    listens = [a for a in actions if isinstance(a, Listen)]
    assert listens and listens[0].grammar == grammar_for(TIME)
    assert any(t.kind == "expect_fallback" for t in run.trace)
