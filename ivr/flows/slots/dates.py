"""Dates in answers: "tomorrow", "next friday", "november twenty fourth [twenty twenty
six]", "the 24th", "in three days", "11/24", "2026-11-24".

Dates never land in the past unless a year is said: a weekday is its next occurrence
(1-7 days ahead), "november twenty fourth" is this year's or next year's, "the twenty
fourth" is this month's or the next month that has that day. Two different dates in one
answer, or one that does not exist, are no answer.
"""

from __future__ import annotations

import calendar
import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ivr.flows.slots.numbers import (
    SMALL,
    ZEROISH,
    Span,
    below_100,
    cardinal_at,
    ordinal_at,
)
from ivr.flows.slots.tokens import is_int

__all__ = ["DateHit", "date_hits", "next_month_day", "parse_date", "safe_date"]

_MONTHS: Final[dict[str, int]] = {
    name.lower(): i for i, name in enumerate(calendar.month_name) if name
} | {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "sept": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}
_WEEKDAYS: Final[dict[str, int]] = {name.lower(): i for i, name in enumerate(calendar.day_name)} | {
    "mon": 0,
    "tue": 1,
    "tues": 1,
    "wed": 2,
    "thu": 3,
    "thur": 3,
    "thurs": 3,
    "fri": 4,
    "sat": 5,
    "sun": 6,
}

# Words after "the first" that make it a rank, not a day ("the first available slot").
_NOT_A_DAY_AFTER: Final = frozenset(
    "available thing one time option choice slot opening appointment step floor place "
    "person name number".split()
)


@dataclass(frozen=True, slots=True)
class DateHit:
    start: int
    end: int
    date: datetime.date | None  # None: said, but no such date (february thirtieth)
    weekday: int | None = None  # a bare weekday: checked against an explicit date if any


def safe_date(year: int, month: int, day: int) -> datetime.date | None:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def next_month_day(today: datetime.date, month: int, day: int) -> datetime.date | None:
    """`month`/`day` this year, or next year if that is past; None if no such day."""
    for year in (today.year, today.year + 1, today.year + 2, today.year + 3, today.year + 4):
        d = safe_date(year, month, day)
        if d is not None and d >= today:
            return d
        if d is None and not (month == 2 and day == 29):
            return None
    return None


def _next_day_of_month(today: datetime.date, day: int) -> datetime.date | None:
    """The next date (today included) whose day of month is `day`."""
    if not 1 <= day <= 31:
        return None
    year, month = today.year, today.month
    for _ in range(13):
        d = safe_date(year, month, day)
        if d is not None and d >= today:
            return d
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None


def _year(toks: Sequence[str], i: int) -> Span | None:
    """A year after a date: "2026", "twenty twenty six", "two thousand and six",
    "nineteen oh five", "nineteen eighty"."""
    if i >= len(toks):
        return None
    tok = toks[i]
    if is_int(tok) and len(tok) == 4 and 1900 <= int(tok) <= 2199:
        return int(tok), i + 1
    if tok in ("nineteen", "twenty") and i + 1 < len(toks):
        century = 1900 if tok == "nineteen" else 2000
        nxt = toks[i + 1]
        if nxt in ZEROISH and i + 2 < len(toks) and 1 <= SMALL.get(toks[i + 2], 0) <= 9:
            return century + SMALL[toks[i + 2]], i + 3
        if nxt == "hundred":
            return century, i + 2
        pair = below_100(toks, i + 1)
        if pair is not None and pair[0] >= 10:
            return century + pair[0], pair[1]
    if tok == "two":
        span = cardinal_at(toks, i)
        if span is not None and 2000 <= span[0] <= 2199:
            return span
    return None


def _with_year(
    toks: Sequence[str], end: int, today: datetime.date, month: int, day: int
) -> tuple[datetime.date | None, int]:
    year = _year(toks, end)
    if year is not None:
        return safe_date(year[0], month, day), year[1]
    return next_month_day(today, month, day), end


def _day_number(toks: Sequence[str], i: int) -> Span | None:
    """A day of month after or before a month name: ordinal, or cardinal 1-31."""
    span = ordinal_at(toks, i)
    if span is None and i < len(toks):
        if is_int(toks[i]) and len(toks[i]) <= 2:
            span = int(toks[i]), i + 1
        else:
            span = below_100(toks, i)
    if span is not None and 1 <= span[0] <= 31:
        return span
    return None


def _day_count(toks: Sequence[str], i: int) -> Span | None:
    """A span of days at `toks[i]`: "three days", "a week", "2 weeks" -> (days, end)."""
    if i >= len(toks):
        return None
    count: Span | None
    if toks[i] in ("a", "one"):
        count = 1, i + 1
    elif is_int(toks[i]):
        count = int(toks[i]), i + 1
    else:
        count = cardinal_at(toks, i)
    if count is None or count[1] >= len(toks):
        return None
    unit = {"day": 1, "days": 1, "week": 7, "weeks": 7}.get(toks[count[1]])
    return None if unit is None else (unit * count[0], count[1] + 1)


def _date_at(toks: Sequence[str], i: int, today: datetime.date) -> DateHit | None:
    tok = toks[i]
    n = len(toks)

    def word(k: int) -> str:
        return toks[k] if 0 <= k < n else ""

    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", tok)
    if m:
        return DateHit(i, i + 1, safe_date(int(m[1]), int(m[2]), int(m[3])))
    m = re.fullmatch(r"(\d{1,2})/(\d{1,2})(?:/(\d{2,4}))?", tok)
    if m:
        first, second = int(m[1]), int(m[2])
        # US order; a first number over 12 can only be a day ("24/11").
        month, day = (second, first) if first > 12 >= second else (first, second)
        if m[3] is None:
            return DateHit(i, i + 1, next_month_day(today, month, day))
        year = int(m[3]) + (2000 if len(m[3]) == 2 else 0)
        return DateHit(i, i + 1, safe_date(year, month, day))
    if tok in ("today", "tonight"):
        return DateHit(i, i + 1, today)
    if tok in ("tomorrow", "tmrw", "tmr"):
        return DateHit(i, i + 1, today + datetime.timedelta(days=1))
    if tok == "yesterday":
        return DateHit(i, i + 1, today - datetime.timedelta(days=1))
    if tok == "day" and word(i + 1) == "after":
        start = i - 1 if word(i - 1) == "the" else i
        if word(i + 2) == "tomorrow":
            return DateHit(start, i + 3, today + datetime.timedelta(days=2))
        return DateHit(start, i + 2, None)  # "the day after" what? ask again
    if tok == "in":
        # "in three days", "in a week", "in 2 weeks"
        span = _day_count(toks, i + 1)
        if span is None:
            return None
        return DateHit(i, span[1], today + datetime.timedelta(days=span[0]))
    span = _day_count(toks, i)
    if span is not None and word(span[1]) == "from":
        # "a week from today", "two days from tomorrow", "3 days from now"
        base = {"today": 0, "now": 0, "tomorrow": 1}.get(word(span[1] + 1))
        if base is None:
            return DateHit(i, span[1] + 1, None)  # "a week from friday": not worth a guess
        return DateHit(i, span[1] + 2, today + datetime.timedelta(days=base + span[0]))
    if tok in _WEEKDAYS:
        weekday = _WEEKDAYS[tok]
        start = i - 1 if word(i - 1) in ("next", "this", "coming") else i
        ahead = (weekday - today.weekday()) % 7 or 7  # the named day today means next week
        return DateHit(start, i + 1, today + datetime.timedelta(days=ahead), weekday=weekday)
    if tok in _MONTHS:
        # "november twenty fourth [twenty twenty six]", "nov 24", "november the 24th"
        j = i + 2 if word(i + 1) == "the" else i + 1
        named = _day_number(toks, j)
        if named is not None:
            date, end = _with_year(toks, named[1], today, _MONTHS[tok], named[0])
            return DateHit(i, end, date)
        return None
    # "[the] twenty fourth [of november]", "24 november", "the 24th"
    start = i - 1 if word(i - 1) == "the" else i
    ordinal = ordinal_at(toks, i)
    said = ordinal if ordinal is not None else _day_number(toks, i)
    if said is None:
        return None
    j = said[1]
    k = j + 1 if word(j) == "of" else j
    if word(k) in _MONTHS:
        date, end = _with_year(toks, k + 1, today, _MONTHS[word(k)], said[0])
        return DateHit(start, end, date)
    # Without a month only an ordinal after "the"/"on", or alone, is a day of the month:
    # "the twenty fourth" yes, "twenty four" or "the first available" no.
    if ordinal is None or word(j) in _NOT_A_DAY_AFTER:
        return None
    if start == i and word(i - 1) != "on" and not (i == 0 and j == n):
        return None
    return DateHit(start, j, _next_day_of_month(today, said[0]))


def date_hits(toks: Sequence[str], today: datetime.date) -> list[DateHit]:
    hits: list[DateHit] = []
    i = 0
    while i < len(toks):
        hit = _date_at(toks, i, today)
        if hit is None:
            i += 1
        else:
            hits.append(hit)
            i = max(hit.end, i + 1)
    return hits


def parse_date(toks: Sequence[str], today: datetime.date) -> datetime.date | None:
    hits = date_hits(toks, today)
    explicit = [h for h in hits if h.weekday is None]
    weekdays = [h for h in hits if h.weekday is not None]
    if any(h.date is None for h in explicit):
        return None  # a date that does not exist is a mishearing, not a cue to guess
    dates = {h.date for h in explicit}
    if len(dates) > 1:
        return None
    if dates:
        (date,) = dates
        assert date is not None
        # "friday the twenty seventh": the weekday must agree with the date.
        if any(h.weekday != date.weekday() for h in weekdays):
            return None
        return date
    weekday_dates = {h.date for h in weekdays}
    if len(weekday_dates) == 1:
        return weekday_dates.pop()
    return None
