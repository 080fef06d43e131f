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
  MMDD (or MMDDYYYY); time HHMM on the 24-hour clock. A trailing "#" is ignored.

This module imports nothing from the rest of `ivr.flows` (the flow model imports it, and
`match` imports the model), so it carries its own small text normaliser.
"""

from __future__ import annotations

import calendar
import datetime
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ivr.errors import InvalidValue

__all__ = [
    "FILTERS",
    "SLOT_TYPES",
    "ChoiceOption",
    "SlotDef",
    "SlotType",
    "SlotValue",
    "dtmf_max_digits",

    "parse_keys",
    "parse_text",
    "speak_value",
    "spoken_date",
    "spoken_digits",
    "spoken_time",
]

SlotType = Literal["choice", "yes_no", "digits", "number", "date", "time", "phone", "text"]
SLOT_TYPES: Final[tuple[str, ...]] = get_args(SlotType)

# The number grammar stops here when the slot gives no `max`: bigger spoken numbers are
# rare on a phone line and every extra level multiplies the decoder's search graph.
_DEFAULT_NUMBER_MAX: Final = 9999
_GRAMMAR_NUMBER_CAP: Final = 999_999

_Text = Annotated[str, Field(min_length=1)]


# -- models ----------------------------------------------------------------------------------


class ChoiceOption(BaseModel):
    """One allowed answer of a choice slot: stored as `value`, said as any of `words`."""

    # Numbers as text because YAML turns `key: 1` into an int behind the author's back.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    value: _Text
    words: tuple[_Text, ...] = ()
    key: str | None = Field(default=None, pattern=r"^[0-9*]{1,4}$")

    @model_validator(mode="before")
    @classmethod
    def _words_default_to_value(cls, data: Any) -> Any:
        # Most options are said as they are stored ("cleaning"); only synonyms need listing.
        if isinstance(data, dict) and not data.get("words") and data.get("value") is not None:
            return {**data, "words": (str(data["value"]),)}
        return data


class SlotDef(BaseModel):
    """A slot's type and constraints, as written in a flow."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    type: SlotType
    choices: tuple[ChoiceOption, ...] = ()
    length: int | None = Field(default=None, ge=1, le=32)
    min_length: int | None = Field(default=None, ge=1, le=32)
    max_length: int | None = Field(default=None, ge=1, le=32)
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)
    description: str = ""
    # What the embedded recognizer listens for. `phrases`: exactly these answers (parsing
    # still by type). Dates and times default to a compact grammar of what callers of a
    # booking line say (relative days and weekdays; business hours), which the phone path
    # recognizes far better than the full grammar (`grammar: full`) of every date and time.
    phrases: tuple[str, ...] = ()
    grammar: Literal["compact", "full"] = "compact"

    @field_validator("choices", mode="before")
    @classmethod
    def _bare_choices(cls, value: Any) -> Any:
        # `choices: [cleaning, repair]` is the common case; spell it out for the model.
        if isinstance(value, list | tuple):
            return tuple({"value": v} if isinstance(v, str | int) else v for v in value)
        return value

    @model_validator(mode="after")
    def _check(self) -> SlotDef:
        def misplaced(field: str, owner: str) -> ValueError:
            return ValueError(f"`{field}` applies to {owner} slots, not {self.type}")

        if self.type == "choice":
            if not self.choices:
                raise InvalidValue("a choice slot needs at least one entry in `choices`")
            values = [c.value for c in self.choices]
            if len(set(values)) != len(values):
                raise InvalidValue(f"choice values must be unique: {values}")
            keys = [c.key for c in self.choices if c.key is not None]
            if len(set(keys)) != len(keys):
                raise InvalidValue(f"choice keys must be unique: {keys}")
        elif self.choices:
            raise misplaced("choices", "choice")
        if self.type != "digits":
            for name in ("length", "min_length", "max_length"):
                if getattr(self, name) is not None:
                    raise misplaced(name, "digits")
        elif self.length is not None and (
            self.min_length is not None or self.max_length is not None
        ):
            raise InvalidValue("give either `length` or `min_length`/`max_length`, not both")
        elif (
            self.min_length is not None
            and self.max_length is not None
            and self.min_length > self.max_length
        ):
            raise InvalidValue("`min_length` is greater than `max_length`")
        if self.grammar != "compact" and self.type not in ("date", "time"):
            raise misplaced("grammar", "date and time")
        if self.type != "number":
            for name in ("min", "max"):
                if getattr(self, name) is not None:
                    raise misplaced(name, "number")
        elif self.min is not None and self.max is not None and self.min > self.max:
            raise InvalidValue("`min` is greater than `max`")
        return self


@dataclass(frozen=True, slots=True)
class SlotValue:
    """A parsed answer: the typed `value`, and `text`, its canonical form for templates and
    storage ("2026-11-24", "15:00", "4567", "yes", "+14155550123", "cleaning")."""

    value: str | int | bool | datetime.date | datetime.time
    text: str


# -- tokens ----------------------------------------------------------------------------------

_SMALL: Final[dict[str, int]] = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS: Final[dict[str, int]] = {
    w: 10 * i
    for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)
}
_ORDINAL_WORDS: Final[dict[str, int]] = {
    w: i
    for i, w in enumerate(
        "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
        "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth".split(),
        1,
    )
} | {"twentieth": 20, "thirtieth": 30}
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
# "oh" is a zero only among other digits ("four oh two"); alone it is an interjection.
_ZEROISH: Final = frozenset({"oh", "o"})

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


def _tokens(text: str) -> list[str]:
    """Lowercase tokens: accents, apostrophes and punctuation gone; typed dates, clock
    times and ordinals kept whole; "3pm" / "p.m." -> "3", "pm"."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = _AMPM.sub(lambda m: f" {m.group(1) or m.group(2)}m ", text)
    text = re.sub(r"['\u2019\u02bc]", "", text)  # "o'clock" -> "oclock", "that's" -> "thats"
    text = _THOUSANDS.sub("", text)
    return _TOKEN.findall(text)


def _is_int(tok: str) -> bool:
    return tok.isdigit()


# -- numbers ---------------------------------------------------------------------------------

_Span = tuple[int, int]  # (value, index after the last token used)


def _below_100(toks: Sequence[str], i: int) -> _Span | None:
    if i >= len(toks):
        return None
    tok = toks[i]
    if tok in _TENS:
        if i + 1 < len(toks) and 1 <= _SMALL.get(toks[i + 1], 0) <= 9:
            return _TENS[tok] + _SMALL[toks[i + 1]], i + 2
        return _TENS[tok], i + 1
    if tok in _SMALL:
        return _SMALL[tok], i + 1
    return None


def _say_number(n: int) -> str:
    """`n` (under a million) in words, as the number grammar spells it."""
    names = {v: w for w, v in (*_SMALL.items(), *_TENS.items())}
    if n < 100:
        return names[n] if n in names else f"{names[n - n % 10]} {names[n % 10]}"
    if n < 1000:
        rest = n % 100
        return f"{names[n // 100]} hundred" + (f" {_say_number(rest)}" if rest else "")
    rest = n % 1000
    return f"{_say_number(n // 1000)} thousand" + (f" {_say_number(rest)}" if rest else "")


def _and_below_100(toks: Sequence[str], i: int) -> _Span | None:
    # "one hundred and twenty": the "and" belongs to the number only if a number follows.
    if i < len(toks) and toks[i] == "and":
        return _below_100(toks, i + 1)
    return _below_100(toks, i)


def _below_1000(toks: Sequence[str], i: int) -> _Span | None:
    if i + 1 < len(toks) and toks[i] == "a" and toks[i + 1] in ("hundred", "thousand"):
        first: _Span | None = (1, i + 1)  # "a hundred", "a thousand"
    else:
        first = _below_100(toks, i)
    if first is None:
        return None
    value, j = first
    # "fifteen hundred" (1500) as well as "one hundred": any 1-99 may precede "hundred".
    if 1 <= value and j < len(toks) and toks[j] == "hundred":
        value, j = value * 100, j + 1
        rest = _and_below_100(toks, j)
        if rest is not None:
            value, j = value + rest[0], rest[1]
    return value, j


def _cardinal(toks: Sequence[str], i: int) -> _Span | None:
    """A number said in words at `toks[i]` (up to 999,999), longest reading."""
    first = _below_1000(toks, i)
    if first is None:
        return None
    value, j = first
    if 1 <= value < 1000 and j < len(toks) and toks[j] == "thousand":
        value, j = value * 1000, j + 1
        rest = _below_1000(toks, j + 1 if j < len(toks) and toks[j] == "and" else j)
        if rest is not None and rest[0] < 1000:
            value, j = value + rest[0], rest[1]
    return value, j


def _ordinal(toks: Sequence[str], i: int) -> _Span | None:
    """An ordinal at `toks[i]`: "fourth", "twenty fourth", "24th"."""
    if i >= len(toks):
        return None
    tok = toks[i]
    m = re.fullmatch(r"(\d{1,2})(st|nd|rd|th)", tok)
    if m:
        return int(m.group(1)), i + 1
    if tok in _ORDINAL_WORDS:
        return _ORDINAL_WORDS[tok], i + 1
    if tok in _TENS and i + 1 < len(toks):
        unit = _ORDINAL_WORDS.get(toks[i + 1], 0)
        if 1 <= unit <= 9:
            return _TENS[tok] + unit, i + 2
    return None


def _is_digitish(tok: str) -> bool:
    return _is_int(tok) or tok in _SMALL or tok in _TENS or tok in ("double", "triple")


def _zero_positions(toks: Sequence[str]) -> set[int]:
    """Where "oh" is a zero: in a run of number words that has a real digit in it ("four
    oh oh seven"), or when the whole answer is "oh"s (a digits grammar said nothing else)."""
    if all(t in _ZEROISH for t in toks):
        return set(range(len(toks)))
    zeros: set[int] = set()
    k = 0
    while k < len(toks):
        end = k
        while end < len(toks) and (_is_digitish(toks[end]) or toks[end] in _ZEROISH):
            end += 1
        if end == k:
            k += 1
            continue
        if any(_is_digitish(toks[m]) for m in range(k, end)):
            zeros.update(m for m in range(k, end) if toks[m] in _ZEROISH)
        k = end
    return zeros


def _digit_string(toks: Sequence[str]) -> str:
    """Every digit said or typed, in order: "four one five, five five five oh one two
    three" -> "4155550123"; "forty five sixty seven" -> "4567"; "double five" -> "55";
    "eight hundred" -> "800". Other words are skipped (fillers around the number)."""
    out: list[str] = []
    zeros = _zero_positions(toks)
    prev_word_number = False
    i = 0
    while i < len(toks):
        tok = toks[i]
        word_number = False
        if _is_int(tok):
            out.append(tok)
        elif i in zeros:
            out.append("0")
        elif tok in ("double", "triple") and i + 1 < len(toks) and toks[i + 1] in _SMALL:
            n = _SMALL[toks[i + 1]]
            if n <= 9:
                out.append(str(n) * (2 if tok == "double" else 3))
                i += 1
                word_number = True
        elif tok in ("hundred", "thousand") and prev_word_number:
            out.append("00" if tok == "hundred" else "000")
            word_number = True
        else:
            span = _below_100(toks, i)
            if span is not None:
                value, end = span
                # "forty" alone is "40", and "forty five" is "45": two digits either way.
                out.append(str(value))
                i = end - 1
                word_number = True
        prev_word_number = word_number
        i += 1
    return "".join(out)


# -- dates -----------------------------------------------------------------------------------

# Words after "the first" that make it a rank, not a day ("the first available slot").
_NOT_A_DAY_AFTER: Final = frozenset(
    "available thing one time option choice slot opening appointment step floor place "
    "person name number".split()
)


@dataclass(frozen=True, slots=True)
class _DateHit:
    start: int
    end: int
    date: datetime.date | None  # None: said, but no such date (february thirtieth)
    weekday: int | None = None  # a bare weekday: checked against an explicit date if any


def _safe_date(year: int, month: int, day: int) -> datetime.date | None:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def _next_month_day(today: datetime.date, month: int, day: int) -> datetime.date | None:
    """`month`/`day` this year, or next year if that is past; None if no such day."""
    for year in (today.year, today.year + 1, today.year + 2, today.year + 3, today.year + 4):
        d = _safe_date(year, month, day)
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
        d = _safe_date(year, month, day)
        if d is not None and d >= today:
            return d
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None


def _year(toks: Sequence[str], i: int) -> _Span | None:
    """A year after a date: "2026", "twenty twenty six", "two thousand and six",
    "nineteen oh five", "nineteen eighty"."""
    if i >= len(toks):
        return None
    tok = toks[i]
    if _is_int(tok) and len(tok) == 4 and 1900 <= int(tok) <= 2199:
        return int(tok), i + 1
    if tok in ("nineteen", "twenty") and i + 1 < len(toks):
        century = 1900 if tok == "nineteen" else 2000
        nxt = toks[i + 1]
        if nxt in _ZEROISH and i + 2 < len(toks) and 1 <= _SMALL.get(toks[i + 2], 0) <= 9:
            return century + _SMALL[toks[i + 2]], i + 3
        if nxt == "hundred":
            return century, i + 2
        pair = _below_100(toks, i + 1)
        if pair is not None and pair[0] >= 10:
            return century + pair[0], pair[1]
    if tok == "two":
        span = _cardinal(toks, i)
        if span is not None and 2000 <= span[0] <= 2199:
            return span
    return None


def _with_year(
    toks: Sequence[str], end: int, today: datetime.date, month: int, day: int
) -> tuple[datetime.date | None, int]:
    year = _year(toks, end)
    if year is not None:
        return _safe_date(year[0], month, day), year[1]
    return _next_month_day(today, month, day), end


def _day_number(toks: Sequence[str], i: int) -> _Span | None:
    """A day of month after or before a month name: ordinal, or cardinal 1-31."""
    span = _ordinal(toks, i)
    if span is None and i < len(toks):
        if _is_int(toks[i]) and len(toks[i]) <= 2:
            span = int(toks[i]), i + 1
        else:
            span = _below_100(toks, i)
    if span is not None and 1 <= span[0] <= 31:
        return span
    return None


def _day_count(toks: Sequence[str], i: int) -> _Span | None:
    """A span of days at `toks[i]`: "three days", "a week", "2 weeks" -> (days, end)."""
    if i >= len(toks):
        return None
    count: _Span | None
    if toks[i] in ("a", "one"):
        count = 1, i + 1
    elif _is_int(toks[i]):
        count = int(toks[i]), i + 1
    else:
        count = _cardinal(toks, i)
    if count is None or count[1] >= len(toks):
        return None
    unit = {"day": 1, "days": 1, "week": 7, "weeks": 7}.get(toks[count[1]])
    return None if unit is None else (unit * count[0], count[1] + 1)


def _date_at(toks: Sequence[str], i: int, today: datetime.date) -> _DateHit | None:
    tok = toks[i]
    n = len(toks)

    def word(k: int) -> str:
        return toks[k] if 0 <= k < n else ""

    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", tok)
    if m:
        return _DateHit(i, i + 1, _safe_date(int(m[1]), int(m[2]), int(m[3])))
    m = re.fullmatch(r"(\d{1,2})/(\d{1,2})(?:/(\d{2,4}))?", tok)
    if m:
        first, second = int(m[1]), int(m[2])
        # US order; a first number over 12 can only be a day ("24/11").
        month, day = (second, first) if first > 12 >= second else (first, second)
        if m[3] is None:
            return _DateHit(i, i + 1, _next_month_day(today, month, day))
        year = int(m[3]) + (2000 if len(m[3]) == 2 else 0)
        return _DateHit(i, i + 1, _safe_date(year, month, day))
    if tok in ("today", "tonight"):
        return _DateHit(i, i + 1, today)
    if tok in ("tomorrow", "tmrw", "tmr"):
        return _DateHit(i, i + 1, today + datetime.timedelta(days=1))
    if tok == "yesterday":
        return _DateHit(i, i + 1, today - datetime.timedelta(days=1))
    if tok == "day" and word(i + 1) == "after":
        start = i - 1 if word(i - 1) == "the" else i
        if word(i + 2) == "tomorrow":
            return _DateHit(start, i + 3, today + datetime.timedelta(days=2))
        return _DateHit(start, i + 2, None)  # "the day after" what? ask again
    if tok == "in":
        # "in three days", "in a week", "in 2 weeks"
        span = _day_count(toks, i + 1)
        if span is None:
            return None
        return _DateHit(i, span[1], today + datetime.timedelta(days=span[0]))
    span = _day_count(toks, i)
    if span is not None and word(span[1]) == "from":
        # "a week from today", "two days from tomorrow", "3 days from now"
        base = {"today": 0, "now": 0, "tomorrow": 1}.get(word(span[1] + 1))
        if base is None:
            return _DateHit(i, span[1] + 1, None)  # "a week from friday": not worth a guess
        return _DateHit(i, span[1] + 2, today + datetime.timedelta(days=base + span[0]))
    if tok in _WEEKDAYS:
        weekday = _WEEKDAYS[tok]
        start = i - 1 if word(i - 1) in ("next", "this", "coming") else i
        ahead = (weekday - today.weekday()) % 7 or 7  # the named day today means next week
        return _DateHit(start, i + 1, today + datetime.timedelta(days=ahead), weekday=weekday)
    if tok in _MONTHS:
        # "november twenty fourth [twenty twenty six]", "nov 24", "november the 24th"
        j = i + 2 if word(i + 1) == "the" else i + 1
        named = _day_number(toks, j)
        if named is not None:
            date, end = _with_year(toks, named[1], today, _MONTHS[tok], named[0])
            return _DateHit(i, end, date)
        return None
    # "[the] twenty fourth [of november]", "24 november", "the 24th"
    start = i - 1 if word(i - 1) == "the" else i
    ordinal = _ordinal(toks, i)
    said = ordinal if ordinal is not None else _day_number(toks, i)
    if said is None:
        return None
    j = said[1]
    k = j + 1 if word(j) == "of" else j
    if word(k) in _MONTHS:
        date, end = _with_year(toks, k + 1, today, _MONTHS[word(k)], said[0])
        return _DateHit(start, end, date)
    # Without a month only an ordinal after "the"/"on", or alone, is a day of the month:
    # "the twenty fourth" yes, "twenty four" or "the first available" no.
    if ordinal is None or word(j) in _NOT_A_DAY_AFTER:
        return None
    if start == i and word(i - 1) != "on" and not (i == 0 and j == n):
        return None
    return _DateHit(start, j, _next_day_of_month(today, said[0]))


def _date_hits(toks: Sequence[str], today: datetime.date) -> list[_DateHit]:
    hits: list[_DateHit] = []
    i = 0
    while i < len(toks):
        hit = _date_at(toks, i, today)
        if hit is None:
            i += 1
        else:
            hits.append(hit)
            i = max(hit.end, i + 1)
    return hits


def _parse_date(toks: Sequence[str], today: datetime.date) -> datetime.date | None:
    hits = _date_hits(toks, today)
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


# -- times -----------------------------------------------------------------------------------

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


def _clock(hour: int, minute: int, meridiem: str | None, twenty_four: bool) -> datetime.time | None:
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
    if _is_int(tok) and len(tok) <= 2:
        return int(tok), i + 1, len(tok) == 2 and tok[0] == "0"
    if tok in ("oh", "zero") and i + 1 < len(toks) and 1 <= _SMALL.get(toks[i + 1], 0) <= 9:
        return _SMALL[toks[i + 1]], i + 2, True  # "oh nine hundred"
    span = _below_100(toks, i)
    if span is None or span[0] > 24:
        return None
    return span[0], span[1], False


def _minute_word(toks: Sequence[str], i: int) -> _Span | None:
    """Minutes after an hour: "thirty", "oh five", "05", "fifteen"."""
    if i >= len(toks):
        return None
    tok = toks[i]
    if _is_int(tok) and len(tok) == 2:
        return int(tok), i + 1
    if tok in (*_ZEROISH, "zero") and i + 1 < len(toks) and 1 <= _SMALL.get(toks[i + 1], 0) <= 9:
        return _SMALL[toks[i + 1]], i + 2
    span = _below_100(toks, i)
    if span is not None and 10 <= span[0] <= 59:
        return span
    return None


def _relative_minutes(toks: Sequence[str], i: int) -> _Span | None:
    """The minutes of "half past", "quarter to", "twenty five past", "10 minutes to"."""
    tok = toks[i]
    if tok == "half":
        return 30, i + 1
    if tok == "quarter":
        return 15, i + 1
    if tok == "a" and i + 1 < len(toks) and toks[i + 1] == "quarter":
        return 15, i + 2
    span: _Span | None
    if _is_int(tok) and len(tok) <= 2:
        span = int(tok), i + 1
    else:
        span = _below_100(toks, i)
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
        time = _clock(int(m[1]), int(m[2]), meridiem, twenty_four=m[1][0] == "0")
        return _TimeHit(i, end, time, True)
    if tok == "half":
        # British "half two" is 2:30, not 2:00
        said = _hour_word(toks, i + 1)
        if said is not None and 1 <= said[0] <= 12:
            meridiem, end = _meridiem(toks, said[1])
            return _TimeHit(i, end, _clock(said[0], 30, meridiem, twenty_four=False), True)
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
                target = _clock(said[0], 0, meridiem, twenty_four=False)
        if target is not None:
            base = datetime.datetime.combine(datetime.date(2000, 1, 3), target)
            delta = datetime.timedelta(minutes=rel[0])
            moved = base + delta if direction in ("past", "after") else base - delta
            return _TimeHit(i, end, moved.time(), True)
    if _is_int(tok) and len(tok) in (3, 4):
        # "1500", "0930", "930": the 24-hour clock as typed
        hour, minute = int(tok[:-2]), int(tok[-2:])
        end = i + 2 if i + 1 < n and toks[i + 1] == "hours" else i + 1
        return _TimeHit(i, end, _clock(hour, minute, None, twenty_four=True), end > i + 1)
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
        return _TimeHit(i, j, _clock(hour, 0, None, twenty_four=True), True)
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
    elif j < n and (_is_int(toks[j]) or _below_100(toks, j) is not None):
        return _TimeHit(i, j + 1, None, True)  # "ten sixty": no minute we know, no guess
    twenty_four = twenty_four or hour > 12 or hour == 0
    return _TimeHit(i, j, _clock(hour, minute, meridiem, twenty_four), strong)


def _parse_time(toks: Sequence[str], today: datetime.date) -> datetime.time | None:
    # Tokens that belong to a date ("november twenty fourth twenty twenty six", "in three
    # days") are not times, so they are masked before looking for one.
    masked = list(toks)
    for date_hit in _date_hits(toks, today):
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


# -- yes / no --------------------------------------------------------------------------------

_YES_WORDS: Final = frozenset(
    "yes yeah yea yep yup ya yah correct right sure ok okay affirmative absolutely "
    "definitely exactly certainly perfect great fine alright mhm".split()
)
_NO_WORDS: Final = frozenset("no nope nah wrong incorrect cancel negative".split())
_NEGATORS: Final = frozenset("not dont isnt never wasnt".split())
_YES_PHRASES: Final[tuple[tuple[str, ...], ...]] = (
    ("please", "do"),
    ("go", "ahead"),
    ("of", "course"),
    ("sounds", "good"),
    ("uh", "huh"),
    ("that", "works"),
    ("do", "it"),
    ("thats", "it"),
    ("think", "so"),
    ("guess", "so"),
)
_UNSURE_PHRASES: Final[tuple[tuple[str, ...], ...]] = (
    ("not", "sure"),
    ("dont", "know"),
    ("no", "idea"),
    ("maybe",),
    ("perhaps",),
    ("not", "certain"),
)


def _occurrences(toks: Sequence[str], phrase: Sequence[str]) -> list[int]:
    n = len(phrase)
    return [k for k in range(len(toks) - n + 1) if tuple(toks[k : k + n]) == tuple(phrase)]


def _parse_yes_no(toks: Sequence[str]) -> bool | None:
    if any(_occurrences(toks, p) for p in _UNSURE_PHRASES):
        return None
    if _occurrences(toks, ("why", "not")):
        return True  # the one "not" that agrees
    # A negator turns the next two words around ("that's not right", "don't do it") and
    # the word just before it ("definitely not", "of course not").
    negated = [
        any(t in _NEGATORS for t in toks[max(0, k - 2) : k]) or toks[k + 1 : k + 2] == ["not"]
        for k in range(len(toks))
    ]
    negative = any(t in _NEGATORS for t in toks)
    positive = False
    for k, tok in enumerate(toks):
        if tok in _YES_WORDS and not negated[k]:
            positive = True
        elif tok in _NO_WORDS:
            negative = True
    for phrase in _YES_PHRASES:
        n = len(phrase)
        if any(not any(negated[k : k + n]) for k in _occurrences(toks, phrase)):
            positive = True
    if positive == negative:
        return None  # neither, or both ("yes no", "yes that's wrong")
    return positive


# -- choice ----------------------------------------------------------------------------------

_DIGIT_NAMES: Final[dict[str, str]] = {w: str(v) for w, v in _SMALL.items() if v <= 9}


def _match_tokens(text: str) -> list[str]:
    # Same normal form as ivr.flows.match: number words as digits ("one" == "1"),
    # underscores and hyphens as spaces so a value like "deep_clean" matches "deep clean".
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    folded = re.sub(r"['\u2019\u02bc]", "", folded)
    return [_DIGIT_NAMES.get(t, t) for t in re.sub(r"[\W_]+", " ", folded).split()]


def _same_word(a: str, b: str) -> bool:
    if a == b:
        return True
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return len(short) >= 3 and long_ in (short + "s", short + "es")


def _phrase_in(heard: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(
        all(_same_word(heard[k + j], phrase[j]) for j in range(n))
        for k in range(len(heard) - n + 1)
    )


def _unique(scored: Iterable[tuple[int, ChoiceOption]]) -> ChoiceOption | None:
    ranked = list(scored)
    if not ranked:
        return None
    best = max(score for score, _ in ranked)
    winners = {o.value: o for score, o in ranked if score == best}
    return next(iter(winners.values())) if len(winners) == 1 else None


def _parse_choice(text: str, options: Sequence[ChoiceOption]) -> ChoiceOption | None:
    """The option named: longest phrase found wins, a tie is no answer; failing that,
    a key said aloud ("press one")."""
    heard = _match_tokens(text)
    if not heard:
        return None
    scored = []
    for option in options:
        phrases = map(_match_tokens, (*option.words, option.value))
        lengths = [len(p) for p in phrases if _phrase_in(heard, p)]
        if lengths:
            scored.append((max(lengths), option))
    if scored:
        return _unique(scored)
    return _unique(
        (1, o) for o in options if o.key is not None and _phrase_in(heard, _match_tokens(o.key))
    )


# -- phone -----------------------------------------------------------------------------------


def _phone(digits: str, international: bool) -> str | None:
    """E.164 from the digits said or typed; 10 digits are a NANP number."""
    if international:
        if digits.startswith("00"):
            digits = digits[2:]
        elif digits.startswith("011"):
            digits = digits[3:]
        return "+" + digits if 8 <= len(digits) <= 15 and digits[0] != "0" else None
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    elif digits.startswith("011") and 11 <= len(digits) <= 18:
        return _phone(digits[3:], True)
    if len(digits) != 10:
        return None
    # NANP area codes and exchanges never start with 0 or 1.
    if digits[0] in "01" or digits[3] in "01":
        return None
    return "+1" + digits


# -- parsing ---------------------------------------------------------------------------------


def _today(now: datetime.datetime) -> datetime.date:
    return now.date()


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


def _numbers(toks: Sequence[str]) -> list[int]:
    """Every separate number in the phrase: "forty five" -> [45]; "one two zero" -> [120]
    (digits read one by one); "two or three" -> [2, 3]."""
    found: list[int] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if _is_int(tok):
            found.append(int(tok))
            i += 1
            continue
        # A run of single digit words is a number read digit by digit.
        run = i
        while run < len(toks) and (
            _SMALL.get(toks[run], 99) <= 9 or (toks[run] in _ZEROISH and run > i)
        ):
            run += 1
        span = _cardinal(toks, i)
        if run - i >= 2 and (span is None or span[1] <= i + 1):
            found.append(int(_digit_string(toks[i:run])))
            i = run
        elif span is not None:
            found.append(span[0])
            i = span[1]
        else:
            i += 1
    return found


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
        stripped = text.strip()
        return SlotValue(stripped, stripped)
    if kind == "choice":
        option = _parse_choice(text, slot.choices)
        return None if option is None else SlotValue(option.value, option.value)
    toks = _tokens(text)
    if toks and toks[-1] in _DANGLING.get(kind, ()):
        return None
    if kind == "yes_no":
        answer = _parse_yes_no(toks)
        return None if answer is None else SlotValue(answer, "yes" if answer else "no")
    if kind == "digits":
        digits = _digit_string(toks)
        return SlotValue(digits, digits) if _digits_ok(slot, digits) else None
    if kind == "number":
        if "minus" in toks or "negative" in toks or _NEGATIVE.search(text):
            return None  # a quantity slot has no negatives; "5" would be a mishearing
        numbers = set(_numbers(toks))
        if len(numbers) != 1:
            return None
        (number,) = numbers
        return SlotValue(number, str(number)) if _number_ok(slot, number) else None
    if kind == "phone":
        international = "+" in toks or "plus" in toks
        phone = _phone(_digit_string(toks), international)
        return None if phone is None else SlotValue(phone, phone)
    if kind == "date":
        date = _parse_date(toks, _today(now))
        return None if date is None else SlotValue(date, date.isoformat())
    if kind == "time":
        time = _parse_time(toks, _today(now))
        return None if time is None else SlotValue(time, time.strftime("%H:%M"))
    raise AssertionError(f"unhandled slot type {kind}")


def parse_keys(slot: SlotDef, digits: str, *, now: datetime.datetime) -> SlotValue | None:
    """Keys pressed as the slot's value; None if they are not one. A trailing "#" (the
    usual terminator) is ignored. date: MMDD (next occurrence) or MMDDYYYY; time: HHMM
    on the 24-hour clock; yes_no: 1 = yes, 2 = no; choice: an option's `key`."""
    keys = digits.strip()
    if keys.endswith("#"):
        keys = keys[:-1]
    if not keys:
        return None
    if slot.type == "choice":
        for option in slot.choices:
            if option.key == keys:
                return SlotValue(option.value, option.value)
        return None
    if not keys.isdigit():
        return None
    kind = slot.type
    if kind == "yes_no":
        return {"1": SlotValue(True, "yes"), "2": SlotValue(False, "no")}.get(keys)
    if kind in ("digits", "text"):
        return SlotValue(keys, keys) if kind == "text" or _digits_ok(slot, keys) else None
    if kind == "number":
        number = int(keys)
        return SlotValue(number, str(number)) if _number_ok(slot, number) else None
    if kind == "phone":
        phone = _phone(keys, international=False)
        return None if phone is None else SlotValue(phone, phone)
    if kind == "date":
        today = _today(now)
        month, day = int(keys[:2]), int(keys[2:4])
        if len(keys) == 4:
            date = _next_month_day(today, month, day) if 1 <= month <= 12 else None
        elif len(keys) == 8:
            date = _safe_date(int(keys[4:]), month, day)
        else:
            date = None
        return None if date is None else SlotValue(date, date.isoformat())
    if kind == "time":
        if len(keys) not in (3, 4):
            return None
        time = _clock(int(keys[:-2]), int(keys[-2:]), None, twenty_four=True)
        return None if time is None else SlotValue(time, time.strftime("%H:%M"))
    raise AssertionError(f"unhandled slot type {kind}")


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


# -- reading values back ---------------------------------------------------------------------


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


FILTERS: Final[dict[str, Callable[..., str]]] = {
    "spoken_date": spoken_date,
    "spoken_time": spoken_time,
    "spoken_digits": spoken_digits,
}
