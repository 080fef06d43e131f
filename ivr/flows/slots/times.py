"""Times in answers: "three p m", "half past two", "quarter to nine", "fifteen hundred",
"10:30", "noon", "eight o'clock tonight".

An hour said without a.m./p.m. is read for business hours: 1-7 -> p.m., 8-11 -> a.m.,
12 -> noon. An hour over 12, a leading "oh"/zero, "hundred" ("fifteen hundred") and
four-digit "1500" are 24-hour clock. Words that belong to a date ("in three days",
"november twenty fourth") are not read as times.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ivr.flows.slots.dates import date_hits
from ivr.flows.slots.numbers import SMALL, ZEROISH, Span, below_100
from ivr.flows.slots.tokens import is_int

__all__ = ["clock", "parse_time"]

_AFTER_HOUR_UNITS: Final = frozenset(
    "day days week weeks month months year years minute minutes hour hours people person "
    "times percent dollars".split()
)
_BEFORE_TIME: Final = frozenset("at by around about until till before after from".split())


@dataclass(frozen=True, slots=True)
class _TimeHit:
    start: int
    end: int
    time: datetime.time | None  # None: said, but not a valid time ("twenty five p m")
    strong: bool  # has a marker (a.m./p.m., o'clock, minutes, "at"...) beyond a bare number


def _meridiem(toks: Sequence[str], i: int) -> tuple[str | None, int]:
    """a.m./p.m. or a part of day after an hour: ("am" | "pm" | None, next index)."""
    n = len(toks)

    def word(k: int) -> str:
        return toks[k] if k < n else ""

    tok = word(i)
    if tok in ("am", "pm"):
        return tok, i + 1
    if tok in ("a", "p") and word(i + 1) == "m":
        return tok + "m", i + 2
    # "in the morning", "this afternoon", "evening"
    k = i + 2 if tok == "in" and word(i + 1) == "the" else i + 1 if tok == "this" else i
    if word(k) == "morning":
        return "am", k + 1
    if word(k) in ("afternoon", "evening"):
        return "pm", k + 1
    if tok == "at" and word(i + 1) == "night":
        return "pm", i + 2
    if tok == "tonight":
        return "pm", i + 1
    return None, i


def clock(hour: int, minute: int, meridiem: str | None, twenty_four: bool) -> datetime.time | None:
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    if meridiem is not None:
        if not 1 <= hour <= 12:
            return None  # "fifteen p m", "0 am"
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    elif not twenty_four and 1 <= hour <= 7:
        hour += 12  # business hours: "three" is 3 p.m.
    return datetime.time(hour, minute)


def _hour_word(toks: Sequence[str], i: int) -> tuple[int, int, bool] | None:
    """An hour at `toks[i]`: (hour, next index, said on the 24-hour clock)."""
    if i >= len(toks):
        return None
    tok = toks[i]
    if is_int(tok) and len(tok) <= 2:
        return int(tok), i + 1, len(tok) == 2 and tok[0] == "0"
    if tok in ("oh", "zero") and i + 1 < len(toks) and 1 <= SMALL.get(toks[i + 1], 0) <= 9:
        return SMALL[toks[i + 1]], i + 2, True  # "oh nine hundred"
    span = below_100(toks, i)
    if span is None or span[0] > 24:
        return None
    return span[0], span[1], False


def _minute_word(toks: Sequence[str], i: int) -> Span | None:
    """Minutes after an hour: "thirty", "oh five", "05", "fifteen"."""
    if i >= len(toks):
        return None
    tok = toks[i]
    if is_int(tok) and len(tok) == 2:
        return int(tok), i + 1
    if tok in (*ZEROISH, "zero") and i + 1 < len(toks) and 1 <= SMALL.get(toks[i + 1], 0) <= 9:
        return SMALL[toks[i + 1]], i + 2
    span = below_100(toks, i)
    if span is not None and 10 <= span[0] <= 59:
        return span
    return None


def _relative_minutes(toks: Sequence[str], i: int) -> Span | None:
    """The minutes of "half past", "quarter to", "twenty five past", "10 minutes to"."""
    tok = toks[i]
    if tok == "half":
        return 30, i + 1
    if tok == "quarter":
        return 15, i + 1
    if tok == "a" and i + 1 < len(toks) and toks[i + 1] == "quarter":
        return 15, i + 2
    span: Span | None
    if is_int(tok) and len(tok) <= 2:
        span = int(tok), i + 1
    else:
        span = below_100(toks, i)
    if span is None or not 1 <= span[0] <= 59:
        return None
    value, j = span
    if j < len(toks) and toks[j] in ("minute", "minutes"):
        j += 1
    return value, j


def _time_at(toks: Sequence[str], i: int) -> _TimeHit | None:
    n = len(toks)
    tok = toks[i]
    before = toks[i - 1] if i > 0 else ""
    if tok in ("noon", "midday"):
        return _TimeHit(i, i + 1, datetime.time(12, 0), True)
    if tok == "midnight":
        return _TimeHit(i, i + 1, datetime.time(0, 0), True)
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", tok)
    if m:
        meridiem, end = _meridiem(toks, i + 1)
        time = clock(int(m[1]), int(m[2]), meridiem, twenty_four=m[1][0] == "0")
        return _TimeHit(i, end, time, True)
    if tok == "half":
        # British "half two" is 2:30, not 2:00
        said = _hour_word(toks, i + 1)
        if said is not None and 1 <= said[0] <= 12:
            meridiem, end = _meridiem(toks, said[1])
            return _TimeHit(i, end, clock(said[0], 30, meridiem, twenty_four=False), True)
    # "half past two", "quarter to three", "ten past nine", "twenty five after four"
    rel = _relative_minutes(toks, i)
    if (
        rel is not None
        and rel[1] < n
        and toks[rel[1]]
        in (
            "past",
            "after",
            "to",
            "before",
            "till",
            "til",
            "of",
        )
    ):
        direction = toks[rel[1]]
        j = rel[1] + 1
        target: datetime.time | None = None
        if j < n and toks[j] in ("noon", "midnight"):
            target, end = datetime.time(12 if toks[j] == "noon" else 0, 0), j + 1
        else:
            said = _hour_word(toks, j)
            if said is not None and 1 <= said[0] <= 12:
                end = said[1] + 1 if said[1] < n and toks[said[1]] == "oclock" else said[1]
                meridiem, end = _meridiem(toks, end)
                target = clock(said[0], 0, meridiem, twenty_four=False)
        if target is not None:
            base = datetime.datetime.combine(datetime.date(2000, 1, 3), target)
            delta = datetime.timedelta(minutes=rel[0])
            moved = base + delta if direction in ("past", "after") else base - delta
            return _TimeHit(i, end, moved.time(), True)
    if is_int(tok) and len(tok) in (3, 4):
        # "1500", "0930", "930": the 24-hour clock as typed
        hour, minute = int(tok[:-2]), int(tok[-2:])
        end = i + 2 if i + 1 < n and toks[i + 1] == "hours" else i + 1
        return _TimeHit(i, end, clock(hour, minute, None, twenty_four=True), end > i + 1)
    hour_span = _hour_word(toks, i)
    if hour_span is None:
        return None
    hour, j, twenty_four = hour_span
    strong = before in _BEFORE_TIME or twenty_four
    minute = 0
    if j < n and toks[j] == "hundred":
        # "fifteen hundred [hours]": military time
        j += 1
        if j < n and toks[j] == "hours":
            j += 1
        return _TimeHit(i, j, clock(hour, 0, None, twenty_four=True), True)
    if j < n and toks[j] == "oclock":
        j, strong = j + 1, True
    else:
        minutes = _minute_word(toks, j)
        if minutes is not None:
            minute, j, strong = minutes[0], minutes[1], True
    if j < n and toks[j] == "noon" and hour == 12:
        return _TimeHit(i, j + 1, datetime.time(12, minute), True)
    meridiem, j = _meridiem(toks, j)
    if meridiem is not None:
        strong = True
    elif j < n and toks[j] in _AFTER_HOUR_UNITS:
        return None  # "in three days", "two people"
    elif j < n and (is_int(toks[j]) or below_100(toks, j) is not None):
        return _TimeHit(i, j + 1, None, True)  # "ten sixty": no minute we know, no guess
    twenty_four = twenty_four or hour > 12 or hour == 0
    return _TimeHit(i, j, clock(hour, minute, meridiem, twenty_four), strong)


def parse_time(toks: Sequence[str], today: datetime.date) -> datetime.time | None:
    # Tokens that belong to a date ("november twenty fourth twenty twenty six", "in three
    # days") are not times, so they are masked before looking for one.
    masked = list(toks)
    for date_hit in date_hits(toks, today):
        for k in range(date_hit.start, date_hit.end):
            if toks[k] != "tonight":  # also a time of day: "eight o'clock tonight"
                masked[k] = ""
    hits: list[_TimeHit] = []
    i = 0
    while i < len(masked):
        hit = _time_at(masked, i) if masked[i] else None
        if hit is None:
            i += 1
        else:
            hits.append(hit)
            i = max(hit.end, i + 1)
    strong = [h for h in hits if h.strong]
    chosen = strong or hits
    if any(h.time is None for h in chosen):
        return None
    times = {h.time for h in chosen}
    return times.pop() if len(times) == 1 else None
