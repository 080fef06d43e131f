"""Values read back the way the bot says them: the Jinja filters `spoken_date`,
`spoken_time` and `spoken_digits`. Each takes a value or its text form, and hands text
it cannot read back unchanged, so a template never fails mid-call."""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Callable
from typing import Final

__all__ = ["FILTERS", "spoken_date", "spoken_digits", "spoken_time"]



def _ordinal_suffix(n: int) -> str:
    if 11 <= n % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def spoken_date(d: datetime.date | str, year: bool = False) -> str:
    """ "Tuesday, November 24th" (with `year`: ", 2026"). Jinja filter; a string that is
    not an ISO date comes back unchanged, so a template never fails mid-call."""
    if isinstance(d, str):
        try:
            day = datetime.date.fromisoformat(d.strip())
        except ValueError:
            return d
    else:
        day = d
    text = (
        f"{calendar.day_name[day.weekday()]}, {calendar.month_name[day.month]} "
        f"{day.day}{_ordinal_suffix(day.day)}"
    )
    return f"{text}, {day.year}" if year else text


def spoken_time(t: datetime.time | str) -> str:
    """ "3 PM", "9:30 AM", "noon", "midnight". Jinja filter; a string that is not HH:MM
    comes back unchanged."""
    if isinstance(t, str):
        try:
            return _spoken_clock(datetime.time.fromisoformat(t.strip()))
        except ValueError:
            return t
    return _spoken_clock(t)


def _spoken_clock(t: datetime.time) -> str:
    if t.minute == 0 and t.hour in (0, 12):
        return "midnight" if t.hour == 0 else "noon"
    hour = t.hour % 12 or 12
    suffix = "AM" if t.hour < 12 else "PM"
    return f"{hour} {suffix}" if t.minute == 0 else f"{hour}:{t.minute:02d} {suffix}"


def spoken_digits(s: str) -> str:
    """ "4567" -> "4 5 6 7": a synthesizer reads each digit instead of "four thousand...".
    Jinja filter; characters other than digits and "+" are dropped."""
    return " ".join("plus" if c == "+" else c for c in str(s) if c.isdigit() or c == "+")


FILTERS: Final[dict[str, Callable[..., str]]] = {
    "spoken_date": spoken_date,
    "spoken_time": spoken_time,
    "spoken_digits": spoken_digits,
}
