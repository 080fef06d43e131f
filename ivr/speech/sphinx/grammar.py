"""A step's `Grammar` as pocketsphinx hears it: JSGF over the words its dictionary knows.

Phrases are normalized to dictionary spelling (digits as words, through the one spelling
of numbers in `ivr.grammar`); a phrase with a word the dictionary cannot pronounce is left
out rather than trimmed, and `CompiledGrammar.match` maps a hypothesis back to the phrase
as the flow wrote it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import Final

from ivr.config import grammar_flags
from ivr.errors import InvalidValue
from ivr.grammar import Grammar, digit_words, number_words

__all__ = [
    "GARBAGE_PHONES",
    "GARBAGE_PREFIX",
    "LEAD_FILLERS",
    "TRAIL_FILLERS",
    "CompiledGrammar",
    "compile_grammar",
    "grammar_to_jsgf",
    "is_garbage",
    "normalize_phrase",
]

# Carrier words a caller wraps an answer in ("I'd like to book", "a cleaning please");
# `CompiledGrammar.match` strips them again. Off unless `IVR_GRAMMAR_CARRIERS=1`, and then
# only around short lists (`is_short`) that do not spell carriers themselves: through the
# phone path a decode that cannot finish a phrase ends inside a filler ("hours" heard as
# "i would", a no-match), whatever the weight (`CARRIER_ODDS` 20, 200 and 2000 measured
# alike). `ivr bench accuracy` (README, "Measured"): this set keeps dental_booking's own
# words (113/134) and takes its people's phrasings from 74/105 to 84/105, but costs
# flows/demo.yaml 22/24 -> 19/24 and flows/main_menu.yaml 20/20 -> 19/20; the set the
# issue names ("a", "on", "at", "it's", "thanks" ...) cost dental 109/134 and demo 14/24.
# What is on by default instead are carriers per answer type (`Grammar.lead`/`trail`, set
# by `ivr.flows.slots.grammars` and `ivr.flows.text.menu_grammar`), compiled the same way
# and always heard; these generic fillers are added to them under the setting.
LEAD_FILLERS: Final[tuple[str, ...]] = (
    "i'd like", "i'd like to", "i would like", "i would like to", "i want to", "i need to",
)
TRAIL_FILLERS: Final[tuple[str, ...]] = ("please",)
CARRIER_ODDS: Final = 20
SHORT_LIST: Final = 12

# Out-of-grammar rejection (`IVR_OOG_REJECT=1`, off by default). A grammar decoder always
# ends on some phrase, so "pizza" or a cough became the nearest choice. Beside the phrases
# the grammar offers a loop of single-phone "words" (the en-us model's 39 phones as
# `gbg_<phone>`), each phone after the first weighted `GARBAGE_PHONE_WEIGHT`: speech that
# fits no phrase is cheaper as phones. A hypothesis with a garbage word is no answer
# (`CompiledGrammar.match` gives None). It rejects out-of-grammar answers but steals real
# ones ("book", "today", "correct" came back empty: dental_booking's own words 113/134 ->
# 92/134, demo 22/24 -> 10/24), and weights below ~1e-20 change nothing (a
# floor in pocketsphinx's log maths); on short lists only, dental's own words were 100/134.
GARBAGE_PREFIX: Final = "gbg_"
GARBAGE_PHONES: Final[tuple[str, ...]] = tuple(
    "aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh t th uh "
    "uw v w y z zh".split()
)
GARBAGE_PHONE_WEIGHT: Final = "1e-30"

_ORDINALS: Final = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_SYMBOLS: Final = {"&": " and ", "%": " percent ", "@": " at ", "\u2019": "'"}
_TOKEN: Final = re.compile(r"[a-z0-9']+")
_THOUSANDS: Final = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # "1,000" is one number
_PIECE: Final = re.compile(r"\d+(?:(?:st|nd|rd|th)(?![a-z]))?|[a-z']+")


def _spell_digits(digits: str, ordinal: bool) -> list[str]:
    # Codes ("007", account numbers) are read digit by digit; quantities as numbers.
    if len(digits) > 6 or (len(digits) > 1 and digits[0] == "0"):
        return digit_words(digits)
    words = number_words(int(digits))
    if ordinal:
        last = words[-1]
        if last in _ORDINALS:
            last = _ORDINALS[last]
        elif last.endswith("y"):
            last = last[:-1] + "ieth"
        else:
            last += "th"
        words[-1] = last
    return words


def normalize_phrase(text: str) -> list[str]:
    """Words as the dictionary spells them: lower case, no punctuation, digits as words."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    for symbol, spoken in _SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = _THOUSANDS.sub("", text)
    words: list[str] = []
    for token in _TOKEN.findall(text):
        for piece in _PIECE.findall(token):
            if piece[0].isdigit():
                digits = piece.rstrip("stndrh")
                words.extend(_spell_digits(digits, ordinal=len(digits) < len(piece)))
            else:
                word = piece.strip("'")
                if word:
                    words.append(word)
    return words


@dataclass(frozen=True, slots=True)
class CompiledGrammar:
    """A `Grammar` as JSGF, plus what is needed to map a hypothesis back to a phrase."""

    jsgf: str
    phrases: dict[tuple[str, ...], str]  # normalized words -> the phrase as given
    skipped: tuple[str, ...]  # phrases with words the dictionary cannot pronounce
    lead: tuple[tuple[str, ...], ...]
    trail: tuple[tuple[str, ...], ...]
    raw: bool = False  # a caller-written JSGF grammar: the hypothesis is the answer
    # phrase -> the first phrase of its answer group (`Grammar.answers`): "yeah" -> "yes"
    meaning: dict[str, str] = field(default_factory=dict)

    def answer(self, hypothesis: str) -> str | None:
        """What a hypothesis means: its phrase's answer group (or the phrase); None as
        `match`."""
        phrase = self.match(hypothesis)
        return self.meaning.get(phrase, phrase) if phrase is not None else None

    def match(self, hypothesis: str) -> str | None:
        """The grammar phrase a hypothesis stands for, fillers removed; None if partial
        or out of grammar (the garbage path)."""
        if is_garbage(hypothesis):
            return None
        if self.raw:
            return hypothesis or None
        words = tuple(hypothesis.split())
        n = len(words)
        starts = [0] + [len(f) for f in self.lead if words[: len(f)] == f]
        ends = [n] + [n - len(f) for f in self.trail if len(f) <= n and words[n - len(f) :] == f]
        for start in starts:
            for end in ends:
                phrase = self.phrases.get(words[start:end])
                if phrase is not None:
                    return phrase
        return None


def is_short(grammar: Grammar) -> bool:
    """A list of at most `SHORT_LIST` answers (a menu, a choice, yes/no), where carrier
    words pay; not the long compact date and time lists, where they steal answers."""
    return len(grammar.answers or grammar.phrases) <= SHORT_LIST


def _spells_carriers(phrases: Iterable[tuple[str, ...]], lead: Iterable[tuple[str, ...]],
                     trail: Iterable[tuple[str, ...]]) -> bool:
    """Does a phrase already wrap an answer in carrier words ("yes please", "no thanks")?
    Such a grammar (yes/no) is left as its author wrote it: measured, adding more there
    lost "okay" and "that's right" to a partial carrier path."""
    phrases, lead, trail = list(phrases), list(lead), list(trail)
    return any(p[: len(f)] == f for p in phrases for f in lead) or any(
        p[-len(f):] == f for p in phrases for f in trail
    )


def is_garbage(hypothesis: str) -> bool:
    """Did the decoder take the garbage path (speech that fits no phrase)?"""
    return any(w.startswith(GARBAGE_PREFIX) for w in hypothesis.split())


def garbage_rules() -> list[str]:
    """JSGF rules for `<garbage>`: one phone, then more at `GARBAGE_PHONE_WEIGHT` each."""
    phones = " | ".join(GARBAGE_PREFIX + p for p in GARBAGE_PHONES)
    return [
        f"<gbg_phone> = {phones};",
        f"<garbage> = <gbg_phone> ( /1/ <NULL> | /{GARBAGE_PHONE_WEIGHT}/ <garbage> );",
    ]


def _optional(rule: str) -> str:
    return f"( /{CARRIER_ODDS}/ <NULL> | /1/ {rule} )"


def _speakable(
    phrases: Iterable[str], vocabulary: Set[str]
) -> tuple[dict[tuple[str, ...], str], list[str]]:
    kept: dict[tuple[str, ...], str] = {}
    skipped: list[str] = []
    for phrase in phrases:
        words = tuple(normalize_phrase(phrase))
        # Dropping an unknown word could change the meaning ("not X"), so skip the phrase.
        if not words or any(w not in vocabulary for w in words):
            skipped.append(phrase)
        else:
            kept.setdefault(words, phrase)
    return kept, skipped


def compile_grammar(
    grammar: Grammar,
    vocabulary: Set[str],
    *,
    lead_fillers: Iterable[str] | None = None,
    trail_fillers: Iterable[str] | None = None,
    garbage: bool | None = None,
) -> CompiledGrammar:
    """Compile `grammar` to JSGF: `[<lead>] ( phrase | ... ) [<trail>] | <garbage>`, the
    carrier words weighted against, the garbage path there to reject what fits no phrase.
    Fillers and garbage left as None follow `IVR_GRAMMAR_CARRIERS` and `IVR_OOG_REJECT`
    (both off by default: see `LEAD_FILLERS`); a grammar's own `reject` turns the garbage
    path on for it. Raises InvalidValue (a ValueError) if no
    phrase is speakable."""
    carriers, reject = grammar_flags()
    garbage = (reject or grammar.reject) if garbage is None else garbage
    carriers = carriers and is_short(grammar)
    if lead_fillers is None:
        lead_fillers = LEAD_FILLERS if carriers else ()
    if trail_fillers is None:
        trail_fillers = TRAIL_FILLERS if carriers else ()
    # The answer type's own carriers ("on" a day, "a" service "please") are always heard.
    own_lead, own_trail = grammar.lead, grammar.trail
    if grammar.jsgf is not None:
        jsgf = _with_garbage(grammar.jsgf) if garbage else grammar.jsgf
        return CompiledGrammar(jsgf, {}, (), (), (), raw=True)
    phrases, skipped = _speakable(grammar.phrases, vocabulary)
    if not phrases:
        raise InvalidValue(f"no speakable phrase in grammar {list(grammar.phrases)!r}")
    lead = tuple(_speakable(lead_fillers, vocabulary)[0])
    trail = tuple(_speakable(trail_fillers, vocabulary)[0])
    if carriers and _spells_carriers(phrases, lead, trail):
        lead, trail = (), ()
    lead = tuple(dict.fromkeys([*_speakable(own_lead, vocabulary)[0], *lead]))
    trail = tuple(dict.fromkeys([*_speakable(own_trail, vocabulary)[0], *trail]))
    lines = ["#JSGF V1.0;", "grammar ivr;"]
    body = "( " + " | ".join(" ".join(words) for words in phrases) + " )"
    if lead:
        lines.append("<lead> = " + " | ".join(" ".join(f) for f in lead) + ";")
        body = _optional("<lead>") + " " + body
    if trail:
        lines.append("<trail> = " + " | ".join(" ".join(f) for f in trail) + ";")
        body += " " + _optional("<trail>")
    if garbage:
        lines.extend(garbage_rules())
        # Each phrase gets 1/len(phrases) of its branch: the garbage branch is scaled the
        # same way, or a long list (the compact times) loses its answers to it.
        body = f"/{len(phrases)}/ {body} | /1/ <garbage>"
    lines.append(f"public <answer> = {body};")
    meaning = {p: group[0] for group in grammar.answers for p in group}
    return CompiledGrammar(
        "\n".join(lines) + "\n", phrases, tuple(skipped), lead, trail, meaning=meaning
    )


def grammar_to_jsgf(
    grammar: Grammar,
    vocabulary: Set[str],
    *,
    lead_fillers: Iterable[str] | None = None,
    trail_fillers: Iterable[str] | None = None,
    garbage: bool | None = None,
) -> str:
    """JSGF for `grammar` (see `compile_grammar`); InvalidValue if no phrase is speakable
    (every phrase has a word outside `vocabulary`)."""
    return compile_grammar(
        grammar, vocabulary, lead_fillers=lead_fillers, trail_fillers=trail_fillers,
        garbage=garbage,
    ).jsgf


_PUBLIC_ANSWER: Final = re.compile(r"^\s*public\s+<answer>\s*=", re.MULTILINE)


def _with_garbage(jsgf: str) -> str:
    """A caller-written grammar with the garbage path beside its public `<answer>` (left as
    written when it has no such rule or already names `<garbage>`)."""
    if "<garbage>" in jsgf or len(_PUBLIC_ANSWER.findall(jsgf)) != 1:
        return jsgf
    body = _PUBLIC_ANSWER.sub("<gbg_said> =", jsgf).rstrip() + "\n"
    rules = "\n".join([*garbage_rules(), "public <answer> = /1/ <gbg_said> | /1/ <garbage>;"])
    return body + rules + "\n"
