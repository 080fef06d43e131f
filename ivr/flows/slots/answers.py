"""Answers that are not numbers: yes/no ("that's not right", "why not", "sure") and the
options of a choice slot (matched as a menu's choices are, by `ivr.flows.text`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from ivr.flows.model import ChoiceOption
from ivr.flows.text import match_choice

__all__ = ["parse_choice", "parse_yes_no"]

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


def parse_yes_no(toks: Sequence[str]) -> bool | None:
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



def _option_phrases(option: ChoiceOption) -> Iterable[str]:
    # The stored value is always an answer too: "deep_clean" is said "deep clean".
    return (*option.words, option.value)


def parse_choice(text: str, options: Sequence[ChoiceOption]) -> ChoiceOption | None:
    """The option named: longest phrase found wins, a tie is no answer; failing that,
    a key said aloud ("press one")."""
    return match_choice(text, options, _option_phrases)
