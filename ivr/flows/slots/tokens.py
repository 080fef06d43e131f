"""What the slot parsers read: an answer as lowercase tokens.

A recognizer hypothesis is lowercase words with numbers as words; a typed answer may
have "3pm", "Nov 24", "2026-11-24", "4,500". Both become one token list: accents,
apostrophes and punctuation gone (`ivr.flows.text.fold`), typed dates, clock times and
ordinals kept whole, "3pm" / "p.m." split into "3", "pm".
"""

from __future__ import annotations

import re
from typing import Final

from ivr.flows.text import fold

__all__ = ["is_int", "tokens"]

_AMPM: Final = re.compile(r"\b([ap])\.\s*m\b\.?|(?<=\d)\s*([ap])\.?\s*m\b\.?")
_THOUSANDS: Final = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TOKEN: Final = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}"  # ISO date
    r"|\d{1,2}/\d{1,2}(?:/\d{2,4})?"  # US month/day[/year]
    r"|\d{1,2}:\d{2}"  # clock time
    r"|\d+(?:st|nd|rd|th)?"  # number, or ordinal ("24th")
    r"|[a-z]+"
    r"|\+"
)


def tokens(text: str) -> list[str]:
    """Lowercase tokens ("o'clock" -> "oclock", "3pm" -> "3", "pm")."""
    text = _AMPM.sub(lambda m: f" {m.group(1) or m.group(2)}m ", fold(text))
    text = _THOUSANDS.sub("", text)
    return _TOKEN.findall(text)


def is_int(tok: str) -> bool:
    return tok.isdigit()
