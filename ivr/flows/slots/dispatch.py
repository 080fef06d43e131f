"""Slot values by slot type: what an answer (words, keys, or a value a template or tool
produced) is as a value of the slot, how many keys to collect for it, how to say it back.

Each function looks at `slot.type` and hands the work to the module that knows that
kind of answer (numbers, dates, times, answers); this is the only place that switches
on slot types for parsing.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any, Final

from ivr.flows.model import SlotDef
from ivr.flows.slots.answers import parse_choice, parse_yes_no
from ivr.flows.slots.dates import next_month_day, parse_date, safe_date
from ivr.flows.slots.numbers import digit_string, numbers_said, phone_number
from ivr.flows.slots.spoken import spoken_date, spoken_digits, spoken_time
from ivr.flows.slots.times import clock, parse_time
from ivr.flows.slots.tokens import tokens
from ivr.flows.text import match_key, strip_terminator

__all__ = [
    "SlotValue",
    "coerce_value",
    "dtmf_max_digits",
    "parse_keys",
    "parse_text",
    "speak_value",
]


@dataclass(frozen=True, slots=True)
class SlotValue:
    """A parsed answer: the typed `value`, and `text`, its canonical form for templates and
    storage ("2026-11-24", "15:00", "4567", "yes", "+14155550123", "cleaning")."""

    value: str | int | bool | datetime.date | datetime.time
    text: str


def _digits_ok(slot: SlotDef, digits: str) -> bool:
    if not digits:
        return False
    if slot.length is not None:
        return len(digits) == slot.length
    if slot.min_length is not None and len(digits) < slot.min_length:
        return False
    return slot.max_length is None or len(digits) <= slot.max_length


def _number_ok(slot: SlotDef, value: int) -> bool:
    return (slot.min is None or value >= slot.min) and (slot.max is None or value <= slot.max)


def _number(slot: SlotDef, number: int) -> SlotValue | None:
    return SlotValue(number, str(number)) if _number_ok(slot, number) else None


def _date(date: datetime.date | None) -> SlotValue | None:
    return None if date is None else SlotValue(date, date.isoformat())


def _time(time: datetime.time | None) -> SlotValue | None:
    return None if time is None else SlotValue(time, time.strftime("%H:%M"))


def _text(text: str | None) -> SlotValue | None:
    return None if text is None else SlotValue(text, text)


# Words no answer ends with. A constrained decoder that runs out of audio before the end
# of its grammar returns the path so far ("two a" for "two a m", "sunday the ..."), and
# pocketsphinx passes that on for a raw JSGF grammar; a typed answer cut off the same way
# is just as unfinished. Either way the caller is asked again rather than guessed at.
_DANGLING: Final[dict[str, frozenset[str]]] = {
    "date": frozenset("the of next this on day after in from".split()),
    "time": frozenset("a p at half quarter past to oh".split()),
    "number": frozenset(("and", "a")),
    "phone": frozenset(("plus", "double", "triple")),
    "digits": frozenset(("double", "triple")),
}
_NEGATIVE: Final = re.compile(r"(?<![\w-])-\s*\d")


def parse_text(slot: SlotDef, text: str, *, now: datetime.datetime) -> SlotValue | None:
    """What the caller said or typed, as the slot's value; None if it is not one."""
    if not text.strip():
        return None
    kind = slot.type
    if kind == "text":
        return _text(text.strip())
    if kind == "choice":
        option = parse_choice(text, slot.choices)
        return None if option is None else _text(option.value)
    toks = tokens(text)
    if toks and toks[-1] in _DANGLING.get(kind, ()):
        return None
    if kind == "yes_no":
        answer = parse_yes_no(toks)
        return None if answer is None else SlotValue(answer, "yes" if answer else "no")
    if kind == "digits":
        digits = digit_string(toks)
        return _text(digits) if _digits_ok(slot, digits) else None
    if kind == "number":
        if "minus" in toks or "negative" in toks or _NEGATIVE.search(text):
            return None  # a quantity slot has no negatives; "5" would be a mishearing
        numbers = set(numbers_said(toks))
        if len(numbers) != 1:
            return None
        (number,) = numbers
        return _number(slot, number)
    if kind == "phone":
        international = "+" in toks or "plus" in toks
        return _text(phone_number(digit_string(toks), international))
    if kind == "date":
        return _date(parse_date(toks, now.date()))
    if kind == "time":
        return _time(parse_time(toks, now.date()))
    raise AssertionError(f"unhandled slot type {kind}")


def parse_keys(
    slot: SlotDef, digits: str, *, now: datetime.datetime, terminator: str | None = "#"
) -> SlotValue | None:
    """Keys pressed as the slot's value; None if they are not one. A trailing
    `terminator` is ignored. date: MMDD (next occurrence) or MMDDYYYY; time: HHMM on the
    24-hour clock; yes_no: 1 = yes, 2 = no; choice: an option's `key`."""
    keys = strip_terminator(digits, terminator)
    if not keys:
        return None
    if slot.type == "choice":
        option = match_key(keys, slot.choices, None)
        return None if option is None else _text(option.value)
    if not keys.isdigit():
        return None
    kind = slot.type
    if kind == "yes_no":
        return {"1": SlotValue(True, "yes"), "2": SlotValue(False, "no")}.get(keys)
    if kind in ("digits", "text"):
        return _text(keys) if kind == "text" or _digits_ok(slot, keys) else None
    if kind == "number":
        return _number(slot, int(keys))
    if kind == "phone":
        return _text(phone_number(keys, international=False))
    if kind == "date":
        if len(keys) not in (4, 8):
            return None
        month, day = int(keys[:2]), int(keys[2:4])
        if len(keys) == 4:
            return _date(next_month_day(now.date(), month, day) if 1 <= month <= 12 else None)
        return _date(safe_date(int(keys[4:]), month, day))
    if kind == "time":
        if len(keys) not in (3, 4):
            return None
        return _time(clock(int(keys[:-2]), int(keys[-2:]), None, twenty_four=True))
    raise AssertionError(f"unhandled slot type {kind}")


def coerce_value(slot: SlotDef, value: Any, *, now: datetime.datetime) -> SlotValue | None:
    """`value` (text to parse, or an already typed value) as a value of `slot`, or None:
    what `set` steps and agents store, and what the checker tries a literal with."""
    kind = slot.type
    if isinstance(value, str):
        return parse_text(slot, value, now=now)
    if isinstance(value, bool):
        return SlotValue(value, "yes" if value else "no") if kind == "yes_no" else None
    if isinstance(value, int | float) and kind == "number":
        if isinstance(value, float) and not value.is_integer():
            return None
        return _number(slot, int(value))
    if isinstance(value, datetime.datetime):
        # A datetime (a tool's ISO timestamp, `now`) is a date or a time as the slot needs.
        if kind == "date":
            return _date(value.date())
        return _time(value.time()) if kind == "time" else None
    if isinstance(value, datetime.date):
        return _date(value) if kind == "date" else None
    if isinstance(value, datetime.time):
        return _time(value) if kind == "time" else None
    if isinstance(value, int | float):
        return parse_text(slot, str(value), now=now)
    return None


def dtmf_max_digits(slot: SlotDef) -> int | None:
    """How many keys to collect before answering; None: until the terminator or the
    inter-digit timeout (variable-length answers)."""
    kind = slot.type
    if kind == "digits":
        return slot.length if slot.length is not None else slot.max_length
    if kind == "number":
        return None if slot.max is None else len(str(slot.max))
    if kind == "yes_no":
        return 1
    if kind == "choice":
        keys = [len(o.key) for o in slot.choices if o.key is not None]
        return max(keys) if keys else None
    if kind in ("date", "time"):
        return 4  # MMDD / HHMM; a year (MMDDYYYY) needs "#" before the fourth key's timeout
    return None  # phone (10 or 11 digits, or international), text


def speak_value(slot: SlotDef, value: SlotValue) -> str:
    """How the bot reads a value back to the caller."""
    v = value.value
    kind = slot.type
    if kind == "date" and isinstance(v, datetime.date):
        return spoken_date(v)
    if kind == "time" and isinstance(v, datetime.time):
        return spoken_time(v)
    if kind == "yes_no":
        return "yes" if v else "no"
    if kind == "digits":
        return spoken_digits(value.text)
    if kind == "phone":
        text = value.text
        if text.startswith("+1") and len(text) == 12:
            # Grouped like a NANP number is written, the commas giving the synthesizer pauses.
            local = text[2:]
            return ", ".join(spoken_digits(g) for g in (local[:3], local[3:6], local[6:]))
        return spoken_digits(text)
    if kind == "choice":
        for option in slot.choices:
            if option.value == value.text:
                return option.words[0] if option.words else option.value
    return value.text
