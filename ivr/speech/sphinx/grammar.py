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
from dataclasses import dataclass
from typing import Final

from ivr.errors import InvalidValue
from ivr.grammar import Grammar, digit_words, number_words

__all__ = [
    "LEAD_FILLERS",
    "TRAIL_FILLERS",
    "CompiledGrammar",
    "compile_grammar",
    "grammar_to_jsgf",
    "normalize_phrase",
]

# Fillers a caller may wrap around an answer. Measured with espeak voices: short optional
# fillers ("the", "um", "uh") get matched to a breath or to the first syllable of the answer
# and steal the utterance ("billing" -> "the"), while the acoustic model's own noise/filler
# models already absorb hesitations. Through the phone path (8 kHz µ-law) even carrier
# phrases cost accuracy: `ivr bench accuracy --voices en-us,en-gb,en-us+m3,en-us+f3` went
# from 18/24 with ("i'd like", "i would like") / ("please",) to 22/24 with none, because a
# decode that cannot finish a phrase ends inside a filler. So none by default; the grammar
# compiler still takes them for engines and callers where they pay off.
LEAD_FILLERS: Final[tuple[str, ...]] = ()
TRAIL_FILLERS: Final[tuple[str, ...]] = ()

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

    def match(self, hypothesis: str) -> str | None:
        """The grammar phrase a hypothesis stands for, fillers removed; None if partial."""
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
    lead_fillers: Iterable[str] = LEAD_FILLERS,
    trail_fillers: Iterable[str] = TRAIL_FILLERS,
) -> CompiledGrammar:
    """Compile `grammar` to JSGF; raises InvalidValue (a ValueError) if no phrase is
    speakable."""
    if grammar.jsgf is not None:
        return CompiledGrammar(grammar.jsgf, {}, (), (), (), raw=True)
    phrases, skipped = _speakable(grammar.phrases, vocabulary)
    if not phrases:
        raise InvalidValue(f"no speakable phrase in grammar {list(grammar.phrases)!r}")
    lead = tuple(_speakable(lead_fillers, vocabulary)[0])
    trail = tuple(_speakable(trail_fillers, vocabulary)[0])
    lines = ["#JSGF V1.0;", "grammar ivr;"]
    body = "( " + " | ".join(" ".join(words) for words in phrases) + " )"
    if lead:
        lines.append("<lead> = " + " | ".join(" ".join(f) for f in lead) + ";")
        body = "[ <lead> ] " + body
    if trail:
        lines.append("<trail> = " + " | ".join(" ".join(f) for f in trail) + ";")
        body += " [ <trail> ]"
    lines.append(f"public <answer> = {body};")
    return CompiledGrammar("\n".join(lines) + "\n", phrases, tuple(skipped), lead, trail)


def grammar_to_jsgf(
    grammar: Grammar,
    vocabulary: Set[str],
    *,
    lead_fillers: Iterable[str] = LEAD_FILLERS,
    trail_fillers: Iterable[str] = TRAIL_FILLERS,
) -> str:
    """JSGF for `grammar`: `[<lead>] ( phrase | ... ) [<trail>]`; InvalidValue if none is
    speakable (every phrase has a word outside `vocabulary`)."""
    return compile_grammar(
        grammar, vocabulary, lead_fillers=lead_fillers, trail_fillers=trail_fillers
    ).jsgf
