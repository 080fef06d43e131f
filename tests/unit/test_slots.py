"""Slot types: table-driven parsing (spoken and typed), keys, grammars, read-back.

`now` is fixed at Monday 2026-11-23 10:00 in New York, so every relative date below is
absolute. The tables are the accuracy figure in docs/slots.md (`test_table_accuracy`); the
phone-path figure is a benchmark: `ivr bench slots`.
"""

from __future__ import annotations

import calendar
import datetime
import random
import re
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import pydantic
import pytest

from ivr.flows.model import SlotDef
from ivr.flows.slots import (
    FILTERS,
    SlotValue,
    dtmf_max_digits,
    grammar_for,
    parse_keys,
    parse_text,
    speak_value,
    spoken_date,
    spoken_digits,
    spoken_time,
)
from ivr.grammar import Grammar
from ivr.speech.sphinx.grammar import normalize_phrase
from ivr.speech.sphinx.model import load_vocabulary

NOW = datetime.datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("America/New_York"))
assert NOW.weekday() == 0  # Monday: the tables below count on it

SLOTS: dict[str, SlotDef] = {
    # The full grammars: what these tables exercise. (Compact ones are the default.)
    "date": SlotDef(type="date", grammar="full"),
    "time": SlotDef(type="time", grammar="full"),
    "digits": SlotDef(type="digits", length=4),
    "digits_any": SlotDef(type="digits"),
    "number": SlotDef(type="number", max=10000),
    "number_small": SlotDef(type="number", min=1, max=10),
    "yes_no": SlotDef(type="yes_no"),
    "phone": SlotDef(type="phone"),
    "choice": SlotDef.model_validate(
        {
            "type": "choice",
            "choices": [
                {"value": "cleaning", "words": ["cleaning", "teeth cleaning"], "key": "1"},
                {"value": "checkup", "words": ["checkup", "check up", "exam"], "key": "2"},
                {"value": "emergency", "key": "3"},
                {"value": "deep_clean", "words": ["deep clean", "deep cleaning"]},
            ],
        }
    ),
    "text": SlotDef(type="text"),
}

# slot -> [(what was said or typed, canonical text expected or None)]
TABLE: dict[str, list[tuple[str, str | None]]] = {
    "date": [
        ("today", "2026-11-23"),
        ("tomorrow", "2026-11-24"),
        ("Tomorrow please", "2026-11-24"),
        ("day after tomorrow", "2026-11-25"),
        ("the day after tomorrow", "2026-11-25"),
        ("friday", "2026-11-27"),
        ("next friday", "2026-11-27"),
        ("this friday", "2026-11-27"),
        ("on wednesday", "2026-11-25"),
        ("monday", "2026-11-30"),  # said on a Monday: a caller meaning today says "today"
        ("next monday", "2026-11-30"),
        ("sunday", "2026-11-29"),
        ("november twenty fourth", "2026-11-24"),
        ("november the twenty fourth", "2026-11-24"),
        ("november twenty four", "2026-11-24"),
        ("november twenty third", "2026-11-23"),
        ("november twenty second", "2027-11-22"),  # past this year: next year's
        ("the twenty fourth", "2026-11-24"),
        ("the twenty second", "2026-12-22"),  # past this month: next month's
        ("the thirty first", "2026-12-31"),  # November has no 31st
        ("on the 3rd", "2026-12-03"),
        ("24th", "2026-11-24"),
        ("24th of november", "2026-11-24"),
        ("the 24th of November", "2026-11-24"),
        ("the first of december", "2026-12-01"),
        ("24 november", "2026-11-24"),
        ("Nov 24", "2026-11-24"),
        ("Nov. 24th", "2026-11-24"),
        ("december 1st", "2026-12-01"),
        ("january fifteenth", "2027-01-15"),
        ("2026-11-24", "2026-11-24"),
        ("11/24", "2026-11-24"),
        ("12/25/2026", "2026-12-25"),
        ("1/5/27", "2027-01-05"),
        ("november twenty fourth twenty twenty six", "2026-11-24"),
        ("march fifth nineteen eighty", "1980-03-05"),  # a year given: the past is allowed
        ("july fourth two thousand and five", "2005-07-04"),
        ("nov 24 2025", "2025-11-24"),
        ("tomorrow at three p m", "2026-11-24"),
        ("the twenty fourth at 3pm", "2026-11-24"),
        ("friday the twenty seventh", "2026-11-27"),
        ("monday november thirtieth", "2026-11-30"),
        ("in three days", "2026-11-26"),
        ("in a week", "2026-11-30"),
        ("a week from today", "2026-11-30"),
        ("a week from tomorrow", "2026-12-01"),
        ("two days from now", "2026-11-25"),
        ("this coming friday", "2026-11-27"),
        ("Thursday, Nov. 26", "2026-11-26"),
        ("24/11/2026", "2026-11-24"),
        ("on the twenty-fourth", "2026-11-24"),
        ("can i come in tomorrow morning", "2026-11-24"),
        # no answer
        ("friday the twenty eighth", None),  # the 28th is a Saturday
        ("tuesday or wednesday", None),
        ("tomorrow or the day after", None),
        ("a week from friday", None),
        ("february thirtieth", None),
        ("the thirty second", None),
        ("next week", None),
        ("three p m", None),
        ("the first available", None),
        ("twenty four", None),
        ("november", None),
        ("may i call back", None),
        ("13/13", None),
        ("", None),
    ],
    "time": [
        ("three p m", "15:00"),
        ("three a m", "03:00"),
        ("3pm", "15:00"),
        ("3 PM", "15:00"),
        ("3 p.m.", "15:00"),
        ("3:30pm", "15:30"),
        ("three o'clock", "15:00"),  # 1-7 without a.m./p.m.: business hours, p.m.
        ("three", "15:00"),
        ("eight", "08:00"),  # 8-11: a.m.
        ("at ten", "10:00"),
        ("nine thirty", "09:30"),
        ("two thirty", "14:30"),
        ("eleven fifteen", "11:15"),
        ("three oh five", "15:05"),
        ("ten oh five a m", "10:05"),
        ("twelve thirty", "12:30"),
        ("half past two", "14:30"),
        ("quarter past ten", "10:15"),
        ("quarter to three", "14:45"),
        ("ten past nine", "09:10"),
        ("twenty five to four", "15:35"),
        ("half past twelve", "12:30"),
        ("quarter to noon", "11:45"),
        ("fifteen hundred", "15:00"),
        ("fifteen hundred hours", "15:00"),
        ("fifteen thirty", "15:30"),
        ("oh nine hundred", "09:00"),
        ("twenty one fifteen", "21:15"),
        ("noon", "12:00"),
        ("twelve noon", "12:00"),
        ("midnight", "00:00"),
        ("twelve a m", "00:00"),
        ("twelve p m", "12:00"),
        ("15:00", "15:00"),
        ("09:00", "09:00"),
        ("9:30", "09:30"),
        ("1500", "15:00"),
        ("0930", "09:30"),
        ("ten in the morning", "10:00"),
        ("seven in the evening", "19:00"),
        ("nine o'clock a m", "09:00"),
        ("tomorrow at three p m", "15:00"),
        ("3pm tomorrow", "15:00"),
        ("november twenty fourth at three p m", "15:00"),
        ("nov 12 at 3pm", "15:00"),
        ("around four thirty if that works", "16:30"),
        ("half two", "14:30"),
        ("eight o'clock tonight", "20:00"),
        ("a quarter after three", "15:15"),
        ("quarter of five", "16:45"),
        ("4.30pm", "16:30"),
        ("four-thirty", "16:30"),
        ("3 o'clock in the afternoon", "15:00"),
        ("1:00", "13:00"),
        # no answer
        ("two or three", None),
        ("between two and four", None),
        ("fifteen p m", None),
        ("tomorrow morning", None),
        ("in three days", None),
        ("november twenty fourth twenty twenty six", None),
        ("25:00", None),
        ("ten sixty", None),
        ("whenever", None),
    ],
    "digits": [
        ("four five six seven", "4567"),
        ("4567", "4567"),
        ("45 67", "4567"),
        ("4-5-6-7", "4567"),
        ("forty five sixty seven", "4567"),
        ("my pin is four five six seven", "4567"),
        ("oh one two three", "0123"),
        ("zero one two three", "0123"),
        ("four oh oh seven", "4007"),
        ("double five one two", "5512"),
        ("oh, it's four five six seven", "4567"),  # "oh" alone is no zero
        ("Four Five Six Seven.", "4567"),
        # no answer
        ("four five six", None),
        ("four five six seven eight", None),
        ("45678", None),
        ("hello", None),
        ("", None),
    ],
    "digits_any": [
        ("one two three", "123"),
        ("oh", "0"),
        ("nine eight seven six five four three two one", "987654321"),
        ("no idea", None),
    ],
    "number": [
        ("forty five", "45"),
        ("forty-five", "45"),
        ("one hundred and twenty", "120"),
        ("one hundred twenty", "120"),
        ("a hundred", "100"),
        ("120", "120"),
        ("1,200", "1200"),
        ("twelve hundred", "1200"),
        ("two thousand five hundred", "2500"),
        ("two thousand and twenty six", "2026"),
        ("nine thousand nine hundred ninety nine", "9999"),
        ("zero", "0"),
        ("twenty", "20"),
        ("nineteen", "19"),
        ("four tickets please", "4"),
        ("one two zero", "120"),  # read digit by digit
        ("about 45 I think", "45"),
        ("twenty-one", "21"),
        # no answer
        ("two or three", None),
        ("minus five", None),
        ("three point five", None),
        ("5 or 6", None),
        ("-5", None),
        ("twenty thousand", None),  # over max
        ("hello", None),
        ("fourth", None),
    ],
    "number_small": [
        ("seven", "7"),
        ("10", "10"),
        ("zero", None),
        ("eleven", None),
    ],
    "yes_no": [
        ("yes", "yes"),
        ("Yes!", "yes"),
        ("yeah", "yes"),
        ("yep", "yes"),
        ("yup", "yes"),
        ("that's right", "yes"),
        ("that is right", "yes"),
        ("correct", "yes"),
        ("sure", "yes"),
        ("ok", "yes"),
        ("okay", "yes"),
        ("please do", "yes"),
        ("yes please", "yes"),
        ("go ahead", "yes"),
        ("absolutely", "yes"),
        ("uh huh", "yes"),
        ("sure, why not", "yes"),
        ("i think so", "yes"),
        ("yes, that's correct", "yes"),
        ("no", "no"),
        ("No.", "no"),
        ("nope", "no"),
        ("nah", "no"),
        ("that's wrong", "no"),
        ("not really", "no"),
        ("cancel", "no"),
        ("no thanks", "no"),
        ("that's not right", "no"),
        ("not correct", "no"),
        ("incorrect", "no"),
        ("don't do it", "no"),
        ("definitely not", "no"),
        ("of course not", "no"),
        ("i don't think so", "no"),
        # no answer
        ("yes no", None),
        ("yes that's wrong", None),
        ("I'm not sure", None),
        ("maybe", None),
        ("I don't know", None),
        ("hello", None),
        ("", None),
    ],
    "phone": [
        ("four one five five five five oh one two three", "+14155550123"),
        ("four one five five five five zero one two three", "+14155550123"),
        ("4155550123", "+14155550123"),
        ("(415) 555-0123", "+14155550123"),
        ("415.555.0123", "+14155550123"),
        ("+1 415 555 0123", "+14155550123"),
        ("1-415-555-0123", "+14155550123"),
        ("plus one four one five five five five zero one two three", "+14155550123"),
        ("one four one five five five five zero one two three", "+14155550123"),
        ("my number is 415-555-0123", "+14155550123"),
        ("four one five, five five five, oh one two three", "+14155550123"),
        ("one eight hundred five five five one two one two", "+18005551212"),
        ("four one five double five five oh one two three", "+14155550123"),
        ("+44 20 7946 0958", "+442079460958"),
        ("plus four four two zero seven nine four six zero nine five eight", "+442079460958"),
        ("011 44 20 7946 0958", "+442079460958"),
        # no answer
        ("four one five five five five oh one two", None),  # 9 digits
        ("0155550123", None),  # no NANP area code starts with 0
        ("4150550123", None),  # nor an exchange
        ("555 0123", None),
        ("hello", None),
    ],
    "choice": [
        ("cleaning", "cleaning"),
        ("a cleaning please", "cleaning"),
        ("Cleanings", "cleaning"),
        ("teeth cleaning", "cleaning"),
        ("I need a check up", "checkup"),
        ("checkup", "checkup"),
        ("exam", "checkup"),
        ("emergency!", "emergency"),
        ("it's an emergency", "emergency"),
        ("deep cleaning", "deep_clean"),  # the longer phrase wins over "cleaning"
        ("deep_clean", "deep_clean"),
        ("press one", "cleaning"),  # a key said aloud
        ("two", "checkup"),
        # no answer
        ("cleaning or exam", None),
        ("nothing", None),
        ("four", None),
        ("", None),
    ],
    "text": [
        ("anything at all", "anything at all"),
        ("  padded  ", "padded"),
        ("   ", None),
    ],
}


def _cases() -> list[Any]:
    return [
        pytest.param(slot, said, expected, id=f"{slot}:{said}")
        for slot, rows in TABLE.items()
        for said, expected in rows
    ]


def _check(slot: str, said: str, expected: str | None) -> bool:
    value = parse_text(SLOTS[slot], said, now=NOW)
    return (value.text if value is not None else None) == expected


@pytest.mark.parametrize(("slot", "said", "expected"), _cases())
def test_parse_text(slot: str, said: str, expected: str | None) -> None:
    value = parse_text(SLOTS[slot], said, now=NOW)
    assert (value.text if value is not None else None) == expected


def test_table_accuracy() -> None:
    """The figure in docs/slots.md: every phrasing of every type parses as expected."""
    lines = []
    total = passed = 0
    for slot, rows in TABLE.items():
        ok = sum(_check(slot, said, expected) for said, expected in rows)
        negatives = sum(expected is None for _, expected in rows)
        lines.append(f"{slot:13} {ok:3}/{len(rows):3} ({negatives} must be rejected)")
        total, passed = total + len(rows), passed + ok
    assert passed == total, "\n".join(lines)


def test_values_are_typed() -> None:
    def value(slot: str, said: str) -> object:
        parsed = parse_text(SLOTS[slot], said, now=NOW)
        assert parsed is not None
        return parsed.value

    assert value("date", "tomorrow") == datetime.date(2026, 11, 24)
    assert value("time", "three p m") == datetime.time(15, 0)
    assert value("digits", "oh one two three") == "0123"  # a string: leading zeros matter
    assert value("number", "one hundred and twenty") == 120
    assert value("yes_no", "yep") is True
    assert value("yes_no", "nope") is False
    assert value("phone", "4155550123") == "+14155550123"
    assert value("choice", "exam") == "checkup"


def test_now_decides_relative_dates() -> None:
    # The caller's "today" is whatever `now` says, time zone included.
    late = datetime.datetime(2026, 12, 31, 23, 30, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert parse_text(SLOTS["date"], "tomorrow", now=late) == SlotValue(
        datetime.date(2027, 1, 1), "2027-01-01"
    )
    assert parse_text(SLOTS["date"], "the first", now=late) == SlotValue(
        datetime.date(2027, 1, 1), "2027-01-01"
    )


# -- keys ------------------------------------------------------------------------------------

KEYS: list[tuple[str, str, str | None]] = [
    ("digits", "4567", "4567"),
    ("digits", "4567#", "4567"),
    ("digits", "456", None),
    ("digits", "45*7", None),
    ("number", "120#", "120"),
    ("number", "007", "7"),
    ("number", "10001", None),
    ("number_small", "0", None),
    ("phone", "4155550123", "+14155550123"),
    ("phone", "14155550123#", "+14155550123"),
    ("phone", "415555012", None),
    ("yes_no", "1", "yes"),
    ("yes_no", "2", "no"),
    ("yes_no", "3", None),
    ("choice", "1", "cleaning"),
    ("choice", "3#", "emergency"),
    ("choice", "4", None),
    ("date", "1124", "2026-11-24"),
    ("date", "1122", "2027-11-22"),  # MMDD: the next occurrence
    ("date", "03051980", "1980-03-05"),  # MMDDYYYY
    ("date", "1324", None),
    ("date", "0230", None),
    ("date", "12", None),  # too short for MMDD: no answer (this used to raise)
    ("date", "112#", None),
    ("time", "1500", "15:00"),
    ("time", "0930", "09:30"),
    ("time", "930", "09:30"),
    ("time", "2460", None),
    ("time", "15", None),
    ("text", "123", "123"),
    ("digits", "", None),
    ("digits", "#", None),
]


@pytest.mark.parametrize(("slot", "keys", "expected"), KEYS, ids=[f"{s}:{k}" for s, k, _ in KEYS])
def test_parse_keys(slot: str, keys: str, expected: str | None) -> None:
    value = parse_keys(SLOTS[slot], keys, now=NOW)
    assert (value.text if value is not None else None) == expected


def test_parse_keys_strips_the_step_terminator_only() -> None:
    assert parse_keys(SLOTS["number"], "120*", now=NOW, terminator="*") == SlotValue(120, "120")
    assert parse_keys(SLOTS["number"], "120#", now=NOW, terminator="*") is None
    assert parse_keys(SLOTS["number"], "120#", now=NOW, terminator=None) is None


def test_dtmf_max_digits() -> None:
    assert dtmf_max_digits(SLOTS["digits"]) == 4
    assert dtmf_max_digits(SlotDef(type="digits", min_length=3, max_length=6)) == 6
    assert dtmf_max_digits(SLOTS["digits_any"]) is None
    assert dtmf_max_digits(SLOTS["number"]) == 5
    assert dtmf_max_digits(SlotDef(type="number")) is None
    assert dtmf_max_digits(SLOTS["yes_no"]) == 1
    assert dtmf_max_digits(SLOTS["choice"]) == 1
    assert dtmf_max_digits(SLOTS["date"]) == 4
    assert dtmf_max_digits(SLOTS["time"]) == 4
    assert dtmf_max_digits(SLOTS["phone"]) is None
    assert dtmf_max_digits(SLOTS["text"]) is None


# -- the model -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "choice"},  # a choice needs choices
        {"type": "choice", "choices": [{"value": "a"}, {"value": "a"}]},
        {"type": "choice", "choices": [{"value": "a", "key": 1}, {"value": "b", "key": 1}]},
        {"type": "choice", "choices": [{"value": "a", "key": "#"}]},
        {"type": "choice", "choices": [{"value": ""}]},
        {"type": "date", "choices": ["a"]},
        {"type": "number", "length": 4},
        {"type": "digits", "min": 1},
        {"type": "digits", "length": 4, "max_length": 6},
        {"type": "digits", "min_length": 6, "max_length": 4},
        {"type": "number", "min": 10, "max": 5},
        {"type": "number", "min": -1},
        {"type": "date", "format": "us"},  # unknown keys are refused
        {"type": "email"},
    ],
)
def test_slotdef_refuses(raw: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SlotDef.model_validate(raw)


def test_slotdef_shorthand_and_yaml_numbers() -> None:
    slot = SlotDef.model_validate(
        {"type": "choice", "choices": ["cleaning", {"value": "exam", "key": 2}]}
    )
    assert slot.choices[0].words == ("cleaning",)  # words default to the value
    assert slot.choices[1].key == "2"  # YAML `key: 2` is an int
    with pytest.raises(pydantic.ValidationError):
        slot.choices[0].model_copy().__setattr__("value", "x")  # frozen: flows are shared


# -- reading back ----------------------------------------------------------------------------


def test_speak_value() -> None:
    def spoken(slot: str, said: str) -> str:
        value = parse_text(SLOTS[slot], said, now=NOW)
        assert value is not None
        return speak_value(SLOTS[slot], value)

    assert spoken("date", "tomorrow") == "Tuesday, November 24th"
    assert spoken("date", "the first of december") == "Tuesday, December 1st"
    assert spoken("time", "three p m") == "3 PM"
    assert spoken("time", "nine thirty") == "9:30 AM"
    assert spoken("time", "noon") == "noon"
    assert spoken("time", "midnight") == "midnight"
    assert spoken("time", "twelve fifteen a m") == "12:15 AM"
    assert spoken("digits", "4567") == "4 5 6 7"
    assert spoken("number", "one hundred and twenty") == "120"
    assert spoken("yes_no", "yeah") == "yes"
    assert spoken("phone", "4155550123") == "4 1 5, 5 5 5, 0 1 2 3"
    assert spoken("phone", "+44 20 7946 0958") == "plus 4 4 2 0 7 9 4 6 0 9 5 8"
    assert spoken("choice", "deep_clean") == "deep clean"
    assert spoken("text", "hello there") == "hello there"


def test_filters() -> None:
    assert spoken_date(datetime.date(2026, 11, 22)) == "Sunday, November 22nd"
    assert spoken_date("2026-11-23") == "Monday, November 23rd"
    assert spoken_date("2026-12-11") == "Friday, December 11th"
    assert spoken_date("2026-11-24", year=True) == "Tuesday, November 24th, 2026"
    assert spoken_date("soon") == "soon"  # a template never fails mid-call
    assert spoken_time(datetime.time(15, 0)) == "3 PM"
    assert spoken_time("09:05") == "9:05 AM"
    assert spoken_time("later") == "later"
    assert spoken_digits("4567") == "4 5 6 7"
    env = jinja2.Environment(autoescape=False)
    env.filters.update(FILTERS)
    rendered = env.from_string(
        "{{ d | spoken_date }} at {{ t | spoken_time }}, code {{ c | spoken_digits }}"
    ).render(d="2026-11-24", t="15:00", c="0123")
    assert rendered == "Tuesday, November 24th at 3 PM, code 0 1 2 3"


# -- grammars --------------------------------------------------------------------------------
#
# A tiny reader for the JSGF subset grammar_for writes (rules, |, [], (), +), so the tests can
# check the words against the dictionary, decide whether a phrase is in a grammar, and
# sample phrases from it.

_Node = tuple[Any, ...]
_JSGF_TOKEN = re.compile(r"/[\d.]+/|<[^>]+>|[|\[\]()+*]|[^\s|\[\]()+*<>;/]+")


def _read_jsgf(jsgf: str) -> dict[str, _Node]:
    rules: dict[str, _Node] = {}
    for m in re.finditer(r"(?:public\s+)?<([^>]+)>\s*=\s*([^;]*);", jsgf):
        tokens = _JSGF_TOKEN.findall(m.group(2))
        node, end = _alternatives(tokens, 0)
        assert end == len(tokens), m.group(0)
        rules[m.group(1)] = node
    assert "answer" in rules
    return rules


def _alternatives(tokens: list[str], i: int) -> tuple[_Node, int]:
    options = []
    seq, i = _sequence(tokens, i)
    options.append(seq)
    while i < len(tokens) and tokens[i] == "|":
        seq, i = _sequence(tokens, i + 1)
        options.append(seq)
    return ("alt", *options), i


def _sequence(tokens: list[str], i: int) -> tuple[_Node, int]:
    items: list[_Node] = []
    while i < len(tokens) and tokens[i] not in ("|", ")", "]"):
        tok = tokens[i]
        if tok.startswith("/"):  # a weight: the tests treat alternatives alike
            i += 1
            continue
        if tok == "<NULL>":
            i += 1
            continue
        if tok in ("(", "["):
            inner, i = _alternatives(tokens, i + 1)
            assert tokens[i] == (")" if tok == "(" else "]")
            item: _Node = inner if tok == "(" else ("opt", inner)
        elif tok.startswith("<"):
            item = ("ref", tok[1:-1])
        else:
            item = ("word", tok)
        i += 1
        if i < len(tokens) and tokens[i] == "+":
            item, i = ("plus", item), i + 1
        items.append(item)
    return ("seq", *items), i


def _regex(node: _Node, rules: dict[str, _Node]) -> str:
    kind = node[0]
    if kind == "word":
        return re.escape(str(node[1])) + " "
    if kind == "ref":
        return _regex(rules[node[1]], rules)
    if kind == "seq":
        return "".join(_regex(n, rules) for n in node[1:])
    if kind == "alt":
        return "(?:" + "|".join(_regex(n, rules) for n in node[1:]) + ")"
    if kind == "opt":
        return "(?:" + _regex(node[1], rules) + ")?"
    return "(?:" + _regex(node[1], rules) + ")+"


def _words(node: _Node, rules: dict[str, _Node]) -> set[str]:
    if node[0] == "word":
        return {node[1]}
    if node[0] == "ref":
        return _words(rules[node[1]], rules)
    return set().union(*(_words(n, rules) for n in node[1:]))


def _sample(node: _Node, rules: dict[str, _Node], rng: random.Random) -> list[str]:
    kind = node[0]
    if kind == "word":
        return [node[1]]
    if kind == "ref":
        return _sample(rules[node[1]], rules, rng)
    if kind == "seq":
        return [w for n in node[1:] for w in _sample(n, rules, rng)]
    if kind == "alt":
        return _sample(rng.choice(node[1:]), rules, rng)
    if kind == "opt":
        return _sample(node[1], rules, rng) if rng.random() < 0.5 else []
    return [w for _ in range(rng.randint(1, 3)) for w in _sample(node[1], rules, rng)]


def _accepts(grammar: Grammar, phrase: str) -> bool:
    assert grammar.jsgf is not None
    rules = _read_jsgf(grammar.jsgf)
    return (
        re.fullmatch(_regex(rules["answer"], rules), " ".join(phrase.lower().split()) + " ")
        is not None
    )


GRAMMAR_SLOTS = {
    **SLOTS,
    "digits_range": SlotDef(type="digits", min_length=3, max_length=6),
    "digits_min": SlotDef(type="digits", min_length=5),
    "number_default": SlotDef(type="number"),
    "number_big": SlotDef(type="number", max=999999),
}


@pytest.mark.parametrize("slot", sorted(GRAMMAR_SLOTS))
def test_grammar_words_are_in_the_dictionary(slot: str) -> None:
    grammar = grammar_for(GRAMMAR_SLOTS[slot])
    vocabulary = load_vocabulary()
    if grammar.jsgf is None:
        words = {w for p in grammar.phrases for w in normalize_phrase(p)}
        assert slot in ("yes_no", "choice", "text")
    else:
        rules = _read_jsgf(grammar.jsgf)
        words = _words(rules["answer"], rules)
        assert all(w == w.lower() for w in words)  # pocketsphinx grammars are lowercase
        assert len(grammar.jsgf) < 2000  # compact: the FSG pocketsphinx builds stays small
        assert all(_accepts(grammar, p) for p in grammar.phrases)  # hints are in the grammar
    assert words - vocabulary == set()
    if slot == "text":
        assert grammar == Grammar()


SPOKEN = {
    "date": [
        "today",
        "tomorrow",
        "the day after tomorrow",
        "next friday",
        "this friday",
        "monday",
        "november twenty fourth",
        "november the twenty fourth",
        "the twenty fourth",
        "the twenty fourth of november",
        "friday the twenty seventh",
        "the thirty first",
    ],
    "time": [
        "three p.m.",
        "three o'clock",
        "half past two",
        "quarter to three",
        "two thirty",
        "three oh five",
        "fifteen hundred",
        "oh nine hundred",
        "twenty one fifteen",
        "noon",
        "midnight",
        "twelve a.m.",
        "ten past nine",
        "twenty five to four",
        "nine o'clock a.m.",
    ],
    "digits": ["four five six seven", "oh one two three", "zero zero zero zero"],
    "number": [
        "forty five",
        "one hundred and twenty",
        "one hundred twenty",
        "twelve hundred",
        "two thousand five hundred",
        "two thousand and twenty six",
        "zero",
        "twenty",
        "nine thousand nine hundred ninety nine",
    ],
    "phone": [
        "four one five five five five oh one two three",
        "one four one five five five five zero one two three",
        "plus one four one five five five five zero one two three",
    ],
}


@pytest.mark.parametrize(
    ("slot", "said"), [(s, p) for s, phrases in SPOKEN.items() for p in phrases]
)
def test_grammar_accepts_what_the_parser_reads(slot: str, said: str) -> None:
    assert _accepts(grammar_for(SLOTS[slot]), said)
    assert parse_text(SLOTS[slot], said, now=NOW) is not None


def test_grammar_refuses() -> None:
    assert not _accepts(grammar_for(SLOTS["digits"]), "four five six")
    assert not _accepts(grammar_for(SLOTS["number_small"]), "one hundred")
    assert not _accepts(grammar_for(SLOTS["date"]), "tomorrow at three p m")
    assert not _accepts(grammar_for(SLOTS["time"]), "thirteen")
    assert not _accepts(grammar_for(SLOTS["time"]), "two thirty eight")  # 5-minute steps
    assert not _accepts(grammar_for(SLOTS["time"]), "three p m")  # "p.m." is one word


def _spoken_number(n: int, rng: random.Random) -> str:
    """`n` in words the way people say it, with or without "and"."""
    ones = (
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen".split()
    )
    tens = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()

    def below_100(k: int) -> str:
        return ones[k] if k < 20 else tens[k // 10] + (f" {ones[k % 10]}" if k % 10 else "")

    def below_1000(k: int) -> str:
        if k < 100:
            return below_100(k)
        rest = k % 100
        joiner = rng.choice([" and ", " "])
        return f"{ones[k // 100]} hundred" + (joiner + below_100(rest) if rest else "")

    if n < 1000:
        return below_1000(n)
    rest = n % 1000
    return f"{ones[n // 1000]} thousand" + (" " + below_1000(rest) if rest else "")


def test_number_words_round_trip() -> None:
    """Every 7th number up to 9999, said in words, is in the grammar and parses back."""
    rng = random.Random(7)
    grammar = grammar_for(SlotDef(type="number"))
    slot = SlotDef(type="number")
    for n in range(0, 10000, 7):
        said = _spoken_number(n, rng)
        assert _accepts(grammar, said), said
        value = parse_text(slot, said, now=NOW)
        assert value is not None and value.value == n, said


WEEKDAYS = {d.lower() for d in calendar.day_name}


@pytest.mark.parametrize("slot", ["date", "time", "digits", "digits_range", "number_big", "phone"])
def test_grammar_samples_parse(slot: str) -> None:
    """Whatever the grammar lets the recognizer say, the parser reads (300 random phrases).

    Dates may legitimately be refused: a month/day that does not exist ("february
    thirtieth") or a weekday that disagrees with the date; phones whose area code or
    exchange starts with 0 or 1."""
    definition = GRAMMAR_SLOTS[slot]
    grammar = grammar_for(definition)
    assert grammar.jsgf is not None
    rules = _read_jsgf(grammar.jsgf)
    rng = random.Random(slot)
    digit = {
        w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine".split())
    } | {"oh": "0"}
    for _ in range(300):
        words = _sample(rules["answer"], rules, rng)
        said = " ".join(words)
        value = parse_text(definition, said, now=NOW)
        if value is not None:
            continue
        if slot == "date":
            days = [w for w in words if w not in WEEKDAYS]
            plain = parse_text(definition, " ".join(days), now=NOW)
            conflict = plain is not None and any(w in WEEKDAYS for w in words)
            assert conflict or not _month_day_exists(days), said
        elif slot == "phone":
            # Refused only when no reading makes it a number: NANP area codes and exchanges
            # never start with 0 or 1, and 11 digits need a leading 1, "plus" or "011".
            digits = "".join(digit[w] for w in words if w != "plus")
            local = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
            nanp = len(local) == 10 and local[0] not in "01" and local[3] not in "01"
            if "plus" in words:
                country = digits
            elif len(digits) == 11 and digits.startswith("011"):
                country = digits[3:]
            else:
                country = ""
            # E.164 country codes never start with 0 (a leading "00" is a dialling prefix).
            country = country[2:] if country.startswith("00") else country
            assert not nanp and not (country and country[0] != "0"), said
        else:
            pytest.fail(f"{slot}: grammar phrase {said!r} does not parse")


def _month_day_exists(words: list[str]) -> bool:
    months = [m.lower() for m in calendar.month_name]
    month = next((months.index(w) for w in words if w in months), None)
    rest = [w for w in words if w not in months and w not in ("the", "of")]
    day = parse_text(SLOTS["date"], "the " + " ".join(rest), now=NOW)
    if day is None:  # "the thirty first" always resolves, so this is no day at all
        return False
    assert isinstance(day.value, datetime.date)
    return month is None or day.value.day <= calendar.monthrange(2028, month)[1]


# -- the real recognizer ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["date", "time"])
def test_compact_grammar_is_the_default_and_every_phrase_parses(kind: str) -> None:
    """Dates and times listen for a booking line's answers by default; each one parses."""
    slot = SlotDef(type=kind)  # type: ignore[arg-type]
    grammar = grammar_for(slot)
    assert grammar.jsgf is None and len(grammar.phrases) >= 20
    vocabulary = load_vocabulary()
    for phrase in grammar.phrases:
        assert parse_text(slot, phrase, now=NOW) is not None, phrase
        assert set(phrase.split()) <= vocabulary, phrase


def test_author_phrases_replace_the_grammar() -> None:
    slot = SlotDef(type="date", phrases=("today", "tomorrow"))
    assert grammar_for(slot).phrases == ("today", "tomorrow")
    with pytest.raises(ValueError, match="grammar"):
        SlotDef(type="number", grammar="full")
