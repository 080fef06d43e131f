"""Numbers in answers: cardinals and ordinals said in words, digit strings read one by
one ("four one five, double five"), and phone numbers made of them.

Spans are `(value, index after the last token used)`; every reader takes the token list
and the index to start at, and returns None when no number starts there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from ivr import grammar
from ivr.flows.slots.tokens import is_int

__all__ = [
    "SMALL",
    "TENS",
    "ZEROISH",
    "Span",
    "below_100",
    "cardinal_at",
    "digit_string",
    "numbers_said",
    "ordinal_at",
    "phone_number",
]

SMALL: Final[dict[str, int]] = {w: i for i, w in enumerate(grammar.ONES)}
TENS: Final[dict[str, int]] = {w: 10 * i for i, w in enumerate(grammar.TENS) if i >= 2}
_ORDINAL_WORDS: Final[dict[str, int]] = {
    w: i
    for i, w in enumerate(
        "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
        "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth".split(),
        1,
    )
} | {"twentieth": 20, "thirtieth": 30}
# "oh" is a zero only among other digits ("four oh two"); alone it is an interjection.
ZEROISH: Final = frozenset({"oh", "o"})

Span = tuple[int, int]  # (value, index after the last token used)


def below_100(toks: Sequence[str], i: int) -> Span | None:
    if i >= len(toks):
        return None
    tok = toks[i]
    if tok in TENS:
        if i + 1 < len(toks) and 1 <= SMALL.get(toks[i + 1], 0) <= 9:
            return TENS[tok] + SMALL[toks[i + 1]], i + 2
        return TENS[tok], i + 1
    if tok in SMALL:
        return SMALL[tok], i + 1
    return None


def _and_below_100(toks: Sequence[str], i: int) -> Span | None:
    # "one hundred and twenty": the "and" belongs to the number only if a number follows.
    if i < len(toks) and toks[i] == "and":
        return below_100(toks, i + 1)
    return below_100(toks, i)


def _below_1000(toks: Sequence[str], i: int) -> Span | None:
    if i + 1 < len(toks) and toks[i] == "a" and toks[i + 1] in ("hundred", "thousand"):
        first: Span | None = (1, i + 1)  # "a hundred", "a thousand"
    else:
        first = below_100(toks, i)
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


def cardinal_at(toks: Sequence[str], i: int) -> Span | None:
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


def ordinal_at(toks: Sequence[str], i: int) -> Span | None:
    """An ordinal at `toks[i]`: "fourth", "twenty fourth", "24th"."""
    if i >= len(toks):
        return None
    tok = toks[i]
    m = re.fullmatch(r"(\d{1,2})(st|nd|rd|th)", tok)
    if m:
        return int(m.group(1)), i + 1
    if tok in _ORDINAL_WORDS:
        return _ORDINAL_WORDS[tok], i + 1
    if tok in TENS and i + 1 < len(toks):
        unit = _ORDINAL_WORDS.get(toks[i + 1], 0)
        if 1 <= unit <= 9:
            return TENS[tok] + unit, i + 2
    return None


def _is_digitish(tok: str) -> bool:
    return is_int(tok) or tok in SMALL or tok in TENS or tok in ("double", "triple")


def _zero_positions(toks: Sequence[str]) -> set[int]:
    """Where "oh" is a zero: in a run of number words that has a real digit in it ("four
    oh oh seven"), or when the whole answer is "oh"s (a digits grammar said nothing else)."""
    if all(t in ZEROISH for t in toks):
        return set(range(len(toks)))
    zeros: set[int] = set()
    k = 0
    while k < len(toks):
        end = k
        while end < len(toks) and (_is_digitish(toks[end]) or toks[end] in ZEROISH):
            end += 1
        if end == k:
            k += 1
            continue
        if any(_is_digitish(toks[m]) for m in range(k, end)):
            zeros.update(m for m in range(k, end) if toks[m] in ZEROISH)
        k = end
    return zeros


def digit_string(toks: Sequence[str]) -> str:
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
        if is_int(tok):
            out.append(tok)
        elif i in zeros:
            out.append("0")
        elif tok in ("double", "triple") and i + 1 < len(toks) and toks[i + 1] in SMALL:
            n = SMALL[toks[i + 1]]
            if n <= 9:
                out.append(str(n) * (2 if tok == "double" else 3))
                i += 1
                word_number = True
        elif tok in ("hundred", "thousand") and prev_word_number:
            out.append("00" if tok == "hundred" else "000")
            word_number = True
        else:
            span = below_100(toks, i)
            if span is not None:
                value, end = span
                # "forty" alone is "40", and "forty five" is "45": two digits either way.
                out.append(str(value))
                i = end - 1
                word_number = True
        prev_word_number = word_number
        i += 1
    return "".join(out)


def numbers_said(toks: Sequence[str]) -> list[int]:
    """Every separate number in the phrase: "forty five" -> [45]; "one two zero" -> [120]
    (digits read one by one); "two or three" -> [2, 3]."""
    found: list[int] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if is_int(tok):
            found.append(int(tok))
            i += 1
            continue
        # A run of single digit words is a number read digit by digit.
        run = i
        while run < len(toks) and (
            SMALL.get(toks[run], 99) <= 9 or (toks[run] in ZEROISH and run > i)
        ):
            run += 1
        span = cardinal_at(toks, i)
        if run - i >= 2 and (span is None or span[1] <= i + 1):
            found.append(int(digit_string(toks[i:run])))
            i = run
        elif span is not None:
            found.append(span[0])
            i = span[1]
        else:
            i += 1
    return found


def phone_number(digits: str, international: bool) -> str | None:
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
        return phone_number(digits[3:], True)
    if len(digits) != 10:
        return None
    # NANP area codes and exchanges never start with 0 or 1.
    if digits[0] in "01" or digits[3] in "01":
        return None
    return "+1" + digits
