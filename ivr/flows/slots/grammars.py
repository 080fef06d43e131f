"""Recognizer grammars for slot types: what the embedded recognizer listens for.

The other side of parsing (the rest of this package reads what was heard): compact
phrase lists for dates and times by default, JSGF for digits, numbers, phone numbers
and the full date/time forms. Number words come from `ivr.grammar`, as the parsers' do.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from typing import Final

from ivr.flows.model import SlotDef
from ivr.grammar import ONES, TENS, Grammar, number_words

__all__ = ["COMPACT_DATE_PHRASES", "COMPACT_TIME_PHRASES", "commit_yes_no_grammar",
           "grammar_for"]

# The number grammar stops here when the slot gives no `max`: bigger spoken numbers are
# rare on a phone line and every extra level multiplies the decoder's search graph.
_DEFAULT_NUMBER_MAX: Final = 9999
_GRAMMAR_NUMBER_CAP: Final = 999_999

# -- vocabulary --------------------------------------------------------------------------------

_DIGIT_RULE: Final = f"<d> = zero | oh | {' | '.join(ONES[1:10])};"
_O19: Final = " | ".join(ONES[1:10])
_TEENS: Final = " | ".join(ONES[10:20])
_TENS_WORDS: Final = " | ".join(TENS[2:])
_ORD19: Final = "first | second | third | fourth | fifth | sixth | seventh | eighth | ninth"
_ORD_TEENS: Final = (
    "tenth | eleventh | twelfth | thirteenth | fourteenth | fifteenth | sixteenth | "
    "seventeenth | eighteenth | nineteenth"
)

# Words the yes_no grammar accepts. Short single words ("right", "fine") are left out:
# a constrained decoder maps any short noise onto the shortest phrase.
_YES_NO_PHRASES: Final = (
    "yes",
    "yeah",
    "yep",
    "yes please",
    "correct",
    "that's right",
    "that is right",
    "sure",
    "okay",
    "please do",
    "go ahead",
    "no",
    "nope",
    "no thanks",
    "that's wrong",
    "that is wrong",
    "no that's wrong",
    "no that is wrong",
    "that's not right",
    "that is not right",
    "incorrect",
    "cancel",
)
# The same phrases by meaning (yes up to "go ahead"): "yes" is a whole answer beside
# "yes please", for grammar-aware endpointing.
_YES_NO_ANSWERS: Final = (
    _YES_NO_PHRASES[: _YES_NO_PHRASES.index("no")],
    _YES_NO_PHRASES[_YES_NO_PHRASES.index("no") :],
)


# Carrier words people wrap an answer in, per answer type (issue 15): accepted around the
# phrases (weighted `_CARRIER_ODDS` against, so the bare words keep their lead) and
# dropped again by the parsers. Measured with `ivr bench accuracy` (README, "Measured").
DATE_LEAD: Final = ("on",)
TIME_LEAD: Final = ("at",)
CHOICE_LEAD: Final = ("a", "an")
CHOICE_TRAIL: Final = ("please",)
# Not "it's" (IH T S): through the phone band "six" (S IH K S) loses its /s/ and became
# "it's" (bare four-digit strings, 4 voices: 23/32 without it, 21/32 with it; spoken
# "it's ..." is still heard, as "it is").
DIGITS_LEAD: Final = ("it is", "the number is", "my number is", "my order number is")
_CARRIER_ODDS: Final = 20


def _led(lead: Iterable[str], answer: str) -> str:
    """`answer` optionally after one of `lead`, weighted against."""
    return f"( /{_CARRIER_ODDS}/ <NULL> | /1/ ( {' | '.join(lead)} ) ) ( {answer} )"


# A yes that commits (books, cancels: `ivr.flows.engine.verify`) is heard with a grammar
# that rejects what fits none of its phrases, and without the two phrases that other
# speech fell into most. Measured (`python -m tests.bench_commit_yes_no`: 4 espeak voices
# through the phone path, 11 real yes/no answers and 7 other utterances each): the plain
# yes/no grammar took 16 of 28 other utterances for a yes or a no ("hold on" as "go
# ahead", "i want a refund for my shoes" as "please do"); this one 0 of 28, at the cost of
# 7 of 44 real answers heard as nothing and asked again (keys offered), none wrong.
_COMMIT_DROPS: Final = ("go ahead", "please do")
_COMMIT_YES_NO_ANSWERS: Final = tuple(
    tuple(p for p in group if p not in _COMMIT_DROPS) for group in _YES_NO_ANSWERS)


_COMMIT_YES_NO: Final = Grammar(
    phrases=tuple(p for p in _YES_NO_PHRASES if p not in _COMMIT_DROPS),
    answers=_COMMIT_YES_NO_ANSWERS, reject=True)


def commit_yes_no_grammar() -> Grammar:
    """The yes/no grammar for a question whose yes commits an action: out-of-grammar
    speech is a no-match (`Grammar.reject`), never a guessed yes (one value, built once)."""
    return _COMMIT_YES_NO


def _jsgf(rules: Iterable[str], answer: str) -> str:
    lines = ["#JSGF V1.0;", "grammar slot;", *rules, f"public <answer> = {answer};"]
    return "\n".join(lines) + "\n"


def _repeat(rule: str, least: int, most: int | None) -> str:
    """`rule` between `least` and `most` times (None: no upper bound) in plain JSGF."""
    parts = [rule] * least
    if most is None:
        if least == 0:
            return f"[{rule}+]" if rule else ""
        parts[-1] = f"{rule}+"
        return " ".join(parts)
    optional = ""
    for _ in range(most - least):
        optional = f"[{rule} {optional}]".replace(" ]", "]")
    return " ".join([*parts, optional]).strip()


def _number_jsgf(slot: SlotDef) -> str:
    high = min(slot.max if slot.max is not None else _DEFAULT_NUMBER_MAX, _GRAMMAR_NUMBER_CAP)
    rules = [
        f"<o> = {_O19};",
        f"<u100> = <o> | {_TEENS} | ({_TENS_WORDS}) [<o>];",
        "<u1000> = <u100> | <o> hundred [[and] <u100>];",
    ]
    if high < 100:
        top = "<u100>"
    elif high < 1000:
        top = "<u1000>"
    else:
        # "twelve hundred" and "two thousand and five" are both how people say 1200-9999.
        rules.append(
            f"<u10k> = <u1000> | <o> thousand [[and] <u1000>] | ({_TEENS} | "
            f"({_TENS_WORDS}) [<o>]) hundred [[and] <u100>];"
        )
        top = "<u10k>"
        if high >= 10000:
            rules.append("<big> = <u10k> | <u1000> thousand [[and] <u1000>];")
            top = "<big>"
    low = slot.min or 0
    return _jsgf(rules, f"zero | {top}" if low == 0 else top)


def _date_jsgf() -> str:
    months = " | ".join(m.lower() for m in calendar.month_name if m)
    weekdays = " | ".join(d.lower() for d in calendar.day_name)
    return _jsgf(
        [
            f"<wd> = {weekdays};",
            f"<month> = {months};",
            f"<ord> = {_ORD19} | {_ORD_TEENS} | twentieth | twenty ({_ORD19}) | thirtieth "
            "| thirty first;",
        ],
        # A constrained decoder fills trailing noise with whatever words the grammar still
        # allows ("monday" -> "monday may eighth"), so a complete short answer is weighted
        # 20:1 against going on (47 -> 52 of 96 date answers right through the phone path).
        "today | tomorrow | [the] day after tomorrow "
        "| [next | this] <wd> (/20/ <NULL> | /1/ the <ord>) "
        "| <month> [the] <ord> | the <ord> (/20/ <NULL> | /1/ of <month>)",
    )


def _time_jsgf() -> str:
    return _jsgf(
        [
            f"<o> = {_O19};",
            "<h> = <o> | ten | eleven | twelve;",
            "<m> = oh five | ten | fifteen | (twenty | thirty | forty | fifty) [five];",
            "<h24> = thirteen | fourteen | fifteen | sixteen | seventeen | eighteen | nineteen "
            "| twenty [one | two | three];",
            "<ap> = a.m. | p.m.;",
            "<rel> = (half | quarter | five | ten | twenty | twenty five) past "
            "| (quarter | five | ten | twenty | twenty five) to;",
        ],
        "<h> [o'clock | <m>] [<ap>] | <rel> <h> [<ap>] | noon | midnight "
        "| (<h24> | <h> | oh <o>) hundred | <h24> <m>",
    )


def _digits_jsgf(slot: SlotDef) -> str:
    most: int | None
    if slot.length is not None:
        least, most = slot.length, slot.length
    else:
        least, most = slot.min_length or 1, slot.max_length
    return _jsgf([_DIGIT_RULE], _led(DIGITS_LEAD, _repeat("<d>", least, most)))


_WEEKDAY_WORDS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
COMPACT_DATE_PHRASES: tuple[str, ...] = (
    "today", "tomorrow", "the day after tomorrow",
    *_WEEKDAY_WORDS,
    *(f"next {d}" for d in _WEEKDAY_WORDS),
    *(f"this {d}" for d in _WEEKDAY_WORDS),
)
# "on" before a plain weekday only (issue 15: "on tuesday" was heard as "today"): as an
# optional lead before every compact phrase it cost the bare words ("next sunday" lost).
_ON_WEEKDAYS: tuple[str, ...] = tuple(f"{DATE_LEAD[0]} {d}" for d in _WEEKDAY_WORDS)


def _compact_times() -> tuple[str, ...]:
    out: list[str] = ["noon"]
    hours = ["eight", "nine", "ten", "eleven", "twelve", "one", "two", "three", "four", "five",
             "six"]
    for h in hours:
        half = "a.m." if h in ("eight", "nine", "ten", "eleven") else "p.m."
        for minutes in ("", " fifteen", " thirty", " forty five"):
            out.append(f"{h}{minutes}")
            out.append(f"{h}{minutes} {half}")
        out.append(f"{h} o'clock")
    return tuple(out)


COMPACT_TIME_PHRASES = _compact_times()


def grammar_for(slot: SlotDef) -> Grammar:
    """The recognizer grammar for a slot: JSGF (public rule `<answer>`) for structured
    types, with a few example `phrases` for engines that only take hints; a phrase list
    for choice and yes_no; an empty grammar (the language model) for text."""
    kind = slot.type
    if slot.phrases:
        return Grammar(phrases=slot.phrases)
    if kind == "date" and slot.grammar == "compact":
        return Grammar(phrases=COMPACT_DATE_PHRASES + _ON_WEEKDAYS)
    if kind == "time" and slot.grammar == "compact":
        return Grammar(phrases=COMPACT_TIME_PHRASES, lead=TIME_LEAD)
    if kind == "choice":
        phrases = dict.fromkeys(w for o in slot.choices for w in o.words)
        answers = tuple(tuple(o.words) for o in slot.choices)
        return Grammar(phrases=tuple(phrases), answers=answers, lead=CHOICE_LEAD,
                       trail=CHOICE_TRAIL)
    if kind == "yes_no":
        return Grammar(phrases=_YES_NO_PHRASES, answers=_YES_NO_ANSWERS)
    if kind == "digits":
        n = slot.length or slot.min_length or 4
        example = " ".join(ONES[1 + i % 9] for i in range(n))
        return Grammar((example,), _digits_jsgf(slot))
    if kind == "number":
        low = slot.min or 0
        high = slot.max if slot.max is not None else _DEFAULT_NUMBER_MAX
        said = [n for n in (low, (low + high) // 2, high) if n <= _GRAMMAR_NUMBER_CAP]
        examples = dict.fromkeys(" ".join(number_words(n)) for n in said)
        return Grammar(tuple(examples), _number_jsgf(slot))
    if kind == "phone":
        # The only 11-digit number a NANP caller says is "one" + 10 digits; an optional 11th
        # digit at the end would give trailing line noise somewhere to go.
        answer = f"[[plus] one] {_repeat('<d>', 10, 10)}"
        return Grammar(
            ("four one five five five five zero one two three",), _jsgf([_DIGIT_RULE], answer)
        )
    if kind == "date":
        return Grammar(("today", "tomorrow", "next monday", "november twenty fourth"), _date_jsgf())
    if kind == "time":
        return Grammar(("three p.m.", "ten thirty", "noon", "half past two"), _time_jsgf())
    return Grammar()


