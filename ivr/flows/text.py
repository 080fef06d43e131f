"""Understanding words and keys: the one text matcher of the flows.

Two normal forms, one per direction:
- `normalize` is for *matching*: lowercase, accents and punctuation gone, number words
  as digits, so "One!" and "1" and typed "ONE" compare equal.
- `speakable` is for *recognizer grammars*: the same, but digits spelled out, because
  a pronouncing dictionary has "one" and not "1".

Choosing among answers (a menu's choices, a choice slot's options) is `match_choice`:
the longest phrase found wins, a tie is no answer, a key said aloud counts when no
phrase matched. Keys pressed are `match_key`, after `strip_terminator`, the one place a
DTMF terminator is taken off. `fold` is the lowercasing every parser starts from
(slot parsers too, which then tokenise their own way).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from ivr.flows.model import AskStep
from ivr.grammar import ONES, Grammar

__all__ = [
    "DIGIT_WORDS",
    "expected_phrases",
    "fold",
    "looks_like_number",
    "match_choice",
    "match_key",
    "menu_grammar",
    "normalize",
    "speakable",
    "strip_terminator",
    "tokens",
]

DIGIT_WORDS: dict[str, str] = {ONES[d]: str(d) for d in range(10)}
_WORD_FOR_DIGIT: dict[str, str] = {digit: word for word, digit in DIGIT_WORDS.items()}

# Apostrophes join rather than split so "didn't" stays one token.
_APOSTROPHES = re.compile(r"['\u2019\u02bc]")
_NON_WORD = re.compile(r"[\W_]+")


def fold(text: str) -> str:
    """Casefolded, accents and apostrophes gone: `"Didn't Café"` -> `"didnt cafe"`."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return _APOSTROPHES.sub("", folded)


def tokens(text: str) -> list[str]:
    """The words of `text` in matching form; underscores and hyphens split words, so a
    value like "deep_clean" matches "deep clean"."""
    return [DIGIT_WORDS.get(tok, tok) for tok in _NON_WORD.sub(" ", fold(text)).split()]


def normalize(text: str) -> str:
    """Matching form: `"Press ONE, please!"` -> `"press 1 please"`."""
    return " ".join(tokens(text))


def speakable(text: str) -> str:
    """Grammar form: `"Option 12"` -> `"option one two"` (digits read one by one)."""
    words: list[str] = []
    for tok in tokens(text):
        if tok.isdigit():
            words.extend(_WORD_FOR_DIGIT.get(d, d) for d in tok)
        else:
            words.append(tok)
    return " ".join(words)


# ------------------------------------------------------------------ choices


class Answer(Protocol):
    """What a caller can pick: a menu's `Choice` or a choice slot's `ChoiceOption`."""

    @property
    def words(self) -> tuple[str, ...]: ...

    @property
    def key(self) -> str | None: ...


A = TypeVar("A", bound=Answer)


def _same_word(a: str, b: str) -> bool:
    # Plural tolerance: typed "hour" should find "hours" and vice versa, which keeps
    # authors from listing both forms.
    if a == b:
        return True
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return len(short) >= 3 and long_ in (short + "s", short + "es")


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    if n == 0 or n > len(haystack):
        return False
    return any(
        all(_same_word(haystack[i + j], needle[j]) for j in range(n))
        for i in range(len(haystack) - n + 1)
    )


def _unique_best(scored: Sequence[tuple[int, A]]) -> A | None:
    if not scored:
        return None
    best = max(score for score, _ in scored)
    winners = {id(answer): answer for score, answer in scored if score == best}
    # A tie between different answers means the caller named two of them: asking
    # again beats guessing.
    return next(iter(winners.values())) if len(winners) == 1 else None


def _words(answer: Answer) -> Iterable[str]:
    return answer.words


def match_choice(
    text: str, choices: Sequence[A], phrases: Callable[[A], Iterable[str]] = _words
) -> A | None:
    """The answer the caller named, or None when nothing or more than one matches.

    An answer scores the token length of its longest phrase (`phrases`, by default its
    `words`) found in the utterance, so "opening hours" beats "hours". When no phrase
    matches, a spoken key ("press one") is accepted if it names exactly one answer.
    """
    heard = tokens(text)
    if not heard:
        return None
    scored: list[tuple[int, A]] = []
    for choice in choices:
        lengths = [len(p) for p in map(tokens, phrases(choice)) if _contains(heard, p)]
        if lengths:
            scored.append((max(lengths), choice))
    if scored:
        return _unique_best(scored)
    spoken_keys = [
        (1, choice)
        for choice in choices
        if choice.key is not None and _contains(heard, tokens(choice.key))
    ]
    return _unique_best(spoken_keys)


def strip_terminator(keys: str, terminator: str | None = "#") -> str:
    """Keys as pressed, without surrounding blanks and one trailing `terminator`. A lone
    terminator is kept: it may be a choice's own key (`key: "*"`)."""
    pressed = keys.strip()
    if terminator and len(pressed) > 1 and pressed.endswith(terminator):
        pressed = pressed[: -len(terminator)]
    return pressed


def match_key(digits: str, choices: Sequence[A], terminator: str | None = "#") -> A | None:
    """The answer whose `key` equals the pressed digits (a trailing terminator ignored)."""
    pressed = strip_terminator(digits, terminator)
    for choice in choices:
        if choice.key is not None and choice.key == pressed:
            return choice
    return None


# What callers say before a menu's answer ("i'd like to cancel", issue 15): accepted by
# the embedded recognizer around the choices (weighted against) and ignored by
# `match_choice`, which finds the choice's words inside the utterance.
# Only on a menu of actions (each choice has a word that is a verb): around nouns
# ("sales", "hours") the lead cost flows/demo.yaml 22/24 -> 19/24 (short words ended
# inside "i'd like to").
MENU_LEAD: tuple[str, ...] = ("i'd like to", "i want to", "i need to")
MENU_TRAIL: tuple[str, ...] = ("please",)
ACTION_VERBS: frozenset[str] = frozenset(
    "add book buy cancel change check close hear leave make move open order pay renew "
    "repeat report reschedule return schedule speak start stop talk track transfer "
    "update upgrade".split()
)


def menu_grammar(step: AskStep) -> Grammar | None:
    """The recognizer grammar for a menu step (None without speakable choices): its
    choices' words, grouped by choice, with `MENU_LEAD` and `MENU_TRAIL` carriers."""
    phrases = expected_phrases(step)
    if not phrases:
        return None
    # Each choice's words mean one answer: a caller who said one of them has answered
    # unless it begins another choice's words (grammar-aware endpointing).
    answers = tuple(
        tuple(dict.fromkeys(s for s in map(speakable, c.words) if s)) for c in step.choices
    )
    actions = all(any(w.split()[0] in ACTION_VERBS for w in ws) for ws in answers if ws)
    return Grammar(phrases, answers=answers, lead=MENU_LEAD if actions else (),
                   trail=MENU_TRAIL)


def expected_phrases(step: AskStep, *, include_keys: bool = False) -> tuple[str, ...]:
    """Phrases a recognizer grammar for `step` should accept, in speakable form, deduplicated.

    `include_keys` adds each key read aloud ("one") for callers who say the number
    they were told to press; off by default because every extra phrase is one more
    thing a constrained recognizer can confuse.
    """
    phrases: dict[str, None] = {}
    for choice in step.choices:
        for word in choice.words:
            spoken = speakable(word)
            if spoken:
                phrases[spoken] = None
        if include_keys and choice.key is not None:
            spoken = speakable(choice.key)
            if spoken:
                phrases[spoken] = None
    return tuple(phrases)


# ------------------------------------------------------------------ numbers

_PHONE_RE = re.compile(r"^\+?[0-9][0-9 ().\-]*$")


def looks_like_number(text: str) -> bool:
    """A number a transfer can dial: 3 to 15 digits (`+` and separators allowed), or sip:."""
    text = text.strip()
    if text.startswith("sip:"):
        return len(text) > 4
    digits = sum(ch.isdigit() for ch in text)
    return bool(_PHONE_RE.match(text)) and 3 <= digits <= 15
