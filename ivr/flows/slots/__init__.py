"""Slot types: what an ask step collects when the answer is a value rather than a choice.

Each slot type turns what the caller said (a recognizer hypothesis: lowercase words,
numbers as words) or typed (a web or test caller: "3pm", "Nov 24", "4567"), or the keys
they pressed, into a typed `SlotValue`; compiles to a recognizer `Grammar`; and reads a
value back the way the bot should say it.

Rules worth knowing (docs/slots.md has the full list):
- Parsing picks what the slot needs out of a longer phrase: "tomorrow at three p m" is a
  date for a date slot and 15:00 for a time slot. Two different answers in one phrase
  ("tuesday or wednesday", "two or three") are no answer: asking again beats guessing.
- Dates never land in the past unless a year is said: a weekday is its next occurrence
  (1-7 days ahead), "november twenty fourth" is this year's or next year's, "the
  twenty fourth" is this month's or the next month that has that day.
- An hour said without a.m./p.m. is read for business hours: 1-7 -> p.m., 8-11 -> a.m.,
  12 -> noon. An hour over 12, a leading "oh"/zero, "hundred" ("fifteen hundred") and
  four-digit "1500" are 24-hour clock.
- Keys: digits/number/phone as pressed; choice by `key`; yes_no 1 = yes, 2 = no; date
  MMDD (or MMDDYYYY); time HHMM on the 24-hour clock. A trailing terminator ("#") is ignored.

Slot definitions (`SlotDef`) are part of the flow model (`ivr.flows.model`). Here:
`tokens` (an answer as tokens), `numbers`, `dates`, `times`, `answers` (yes/no and
choice options), `spoken` (reading values back), `grammars` (what the recognizer listens
for), `expected` (that narrowed to the values a step offers: its `expect`), and
`dispatch`, which picks among them by slot type. Import from `ivr.flows.slots`.
"""

from __future__ import annotations

from ivr.flows.slots.dispatch import (
    SlotValue,
    coerce_value,
    dtmf_max_digits,
    parse_keys,
    parse_text,
    speak_value,
)
from ivr.flows.slots.expected import EXPECTABLE, expected_grammar, expected_phrases
from ivr.flows.slots.grammars import (
    COMPACT_DATE_PHRASES,
    COMPACT_TIME_PHRASES,
    commit_yes_no_grammar,
    grammar_for,
)
from ivr.flows.slots.spoken import FILTERS, spoken_date, spoken_digits, spoken_time

__all__ = [
    "COMPACT_DATE_PHRASES",
    "COMPACT_TIME_PHRASES",
    "EXPECTABLE",
    "FILTERS",
    "SlotValue",
    "coerce_value",
    "commit_yes_no_grammar",
    "dtmf_max_digits",
    "expected_grammar",
    "expected_phrases",
    "grammar_for",
    "parse_keys",
    "parse_text",
    "speak_value",
    "spoken_date",
    "spoken_digits",
    "spoken_time",
]
