"""Narrowed grammars: listen only for the values a step offers (an ask step's `expect`).

A dynamic grammar, the way mature IVRs ask for a time: after "we have 9:00, 9:30 ... free"
the recognizer listens for those times alone, each in the ways people say it (14:30 ->
"two thirty", "two thirty p.m.", "half past two"), not for every time of day. A smaller
grammar leaves the decoder fewer wrong answers to land on.

Every phrase made here is checked against the slot's own parser (`parse_text`) and kept
only when it reads back as the value it was made for, so what the recognizer hears is
always understood as an offered value ("two" is kept for 14:00, not for 02:00).
`expected_grammar` returns None when nothing usable is left (a slot type without a
narrowed form, values that are not values of the slot): the caller of it then listens
with the slot's normal grammar, never with an empty one.
"""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Iterable, Iterator
from typing import Final

from ivr.flows.model import SlotDef
from ivr.flows.slots.dispatch import SlotValue, coerce_value, parse_text
from ivr.flows.slots.grammars import CHOICE_LEAD, CHOICE_TRAIL, DATE_LEAD, DIGITS_LEAD, TIME_LEAD
from ivr.grammar import ONES, Grammar, number_words

__all__ = ["EXPECTABLE", "expected_grammar", "expected_phrases"]

EXPECTABLE: Final = frozenset({"time", "date", "choice", "digits", "number"})
"""Slot types `expect` narrows; for the others it changes nothing."""

_ORDINALS: Final = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
).split()


def _ordinal(n: int) -> str:
    """1..31 as an ordinal: 24 -> "twenty fourth"."""
    if n <= 20:
        return _ORDINALS[n - 1]
    tens, unit = divmod(n, 10)
    word = "twenty" if tens == 2 else "thirty"
    if unit == 0:
        return "thirtieth" if tens == 3 else "twentieth"
    return f"{word} {_ORDINALS[unit - 1]}"


def _words(n: int) -> str:
    return " ".join(number_words(n))


def _time_phrases(t: datetime.time) -> Iterator[str | tuple[str, ...]]:
    """Ways to say `t`; a tuple: the first of them that reads back as `t` (some read back
    as another time, and `expected_phrases` drops those)."""
    hour = _words(t.hour % 12 or 12)
    half = "a.m." if t.hour < 12 else "p.m."
    if t.minute == 0:
        if t.hour == 12:
            yield "noon"
        if t.hour == 0:
            yield "midnight"
        yield from (hour, f"{hour} o'clock", f"{hour} {half}")
        return
    minutes = f"oh {_words(t.minute)}" if t.minute < 10 else _words(t.minute)
    yield from (f"{hour} {minutes}", f"{hour} {minutes} {half}")
    relative = {30: ("half past", 0), 15: ("quarter past", 0), 45: ("quarter to", 1)}
    if t.minute in relative:
        words, ahead = relative[t.minute]
        said = _words((t.hour + ahead) % 12 or 12)
        # Bare when that reads back right ("half past two" is 2:30 p.m.), else with a.m./p.m.
        after = "a.m." if (t.hour + ahead) % 24 < 12 else "p.m."
        yield f"{words} {said}", f"{words} {said} {after}"


def _date_phrases(d: datetime.date, today: datetime.date) -> Iterator[str]:
    ahead = (d - today).days
    if 0 <= ahead <= 2:
        yield ("today", "tomorrow", "the day after tomorrow")[ahead]
    weekday = calendar.day_name[d.weekday()].lower()
    yield from (weekday, f"{DATE_LEAD[0]} {weekday}", f"next {weekday}", f"this {weekday}")
    month, nth = calendar.month_name[d.month].lower(), _ordinal(d.day)
    yield from (f"{month} {nth}", f"{month} the {nth}", f"the {nth}")


def _digit_phrases(digits: str) -> Iterator[str]:
    yield " ".join(ONES[int(c)] for c in digits)
    if "0" in digits:
        yield " ".join("oh" if c == "0" else ONES[int(c)] for c in digits)


def _candidates(
    slot: SlotDef, value: SlotValue, today: datetime.date
) -> Iterable[str | tuple[str, ...]]:
    said = value.value
    if slot.type == "time" and isinstance(said, datetime.time):
        return _time_phrases(said)
    if slot.type == "date" and isinstance(said, datetime.date):
        return _date_phrases(said, today)
    if slot.type == "choice":
        return next((o.words for o in slot.choices if o.value == value.text), ())
    if slot.type == "digits":
        return _digit_phrases(value.text)
    if slot.type == "number" and isinstance(said, int) and 0 <= said <= 999_999:
        return (_words(said),)
    return ()


def expected_phrases(
    slot: SlotDef, values: Iterable[object], *, now: datetime.datetime
) -> dict[str, tuple[str, ...]]:
    """Each of `values` that is a value of `slot` (its text: "14:30") -> the phrases that
    say it and read back as it, in the order people are likelier to say them."""
    out: dict[str, tuple[str, ...]] = {}
    if slot.type not in EXPECTABLE:
        return out
    for raw in values:
        value = coerce_value(slot, raw, now=now)
        if value is None or value.text in out:
            continue
        phrases: dict[str, None] = {}
        for candidate in _candidates(slot, value, now.date()):
            for phrase in (candidate,) if isinstance(candidate, str) else candidate:
                back = parse_text(slot, phrase, now=now)
                if back is not None and back.text == value.text:
                    phrases[phrase] = None
                    break
        if phrases:
            out[value.text] = tuple(phrases)
    return out


def expected_grammar(
    slot: SlotDef, values: Iterable[object], *, now: datetime.datetime
) -> Grammar | None:
    """The grammar for `slot` narrowed to `values` (texts or typed values: "14:30",
    "2026-11-24", a choice's value, "4567"); None when no phrase could be made (then
    listen with the slot's normal grammar). `now` dates "tomorrow" and "next tuesday"."""
    said = expected_phrases(slot, values, now=now)
    if not said:
        return None
    answers = tuple(said.values())
    phrases = tuple(dict.fromkeys(p for group in answers for p in group))
    if slot.type == "time":
        return Grammar(phrases=phrases, answers=answers, lead=TIME_LEAD)
    if slot.type == "choice":
        return Grammar(phrases=phrases, answers=answers, lead=CHOICE_LEAD, trail=CHOICE_TRAIL)
    if slot.type == "digits":
        return Grammar(phrases=phrases, answers=answers, lead=DIGITS_LEAD)
    return Grammar(phrases=phrases, answers=answers)
