"""Personal data in text we keep: digit runs masked (`IVR_REDACT_DIGITS=1`).

A leaf: the store masks the turns it writes, the log configuration masks log events, and
both must mask the same way. What a caller says or keys that is worth hiding (an order,
account, card or phone number) is a run of digits, written as figures ("4567", keyed or
in a prompt) or as words ("four five six seven", as recognized or read back). Runs of
fewer than 4 digits (a menu choice, "press 2", a time, a price) stay readable.
"""

from __future__ import annotations

import re
from typing import Final

from ivr.grammar import ONES

__all__ = ["MIN_RUN", "redact_digits"]

MIN_RUN: Final = 4

# "oh" is how callers (and recognizers) say zero inside a number: "four oh six one".
_WORDS = "|".join([*ONES[:10], "oh"])
_DIGIT = rf"(?:[0-9]|\b(?:{_WORDS})\b)"
# Figures run together ("4567") or apart ("4 5 6 7", "4-5-6-7"); words are apart anyway.
_RUN = re.compile(rf"{_DIGIT}(?:[ \t\-]*{_DIGIT}){{{MIN_RUN - 1},}}", re.IGNORECASE)
_ONE = re.compile(_DIGIT, re.IGNORECASE)


def redact_digits(text: str) -> str:
    """`text` with every run of 4+ digits (figures or words) replaced by one `*` a digit:
    "order 4567" -> "order ****", "four five six seven" -> "****"."""
    return _RUN.sub(lambda m: "*" * len(_ONE.findall(m.group())), text)
