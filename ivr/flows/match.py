"""Understanding a caller's answer to an ask step, from text alone.

Two normal forms, one per direction:
- `normalize` is for *matching*: lowercase, accents and punctuation gone, number words
  as digits, so "One!" and "1" and typed "ONE" compare equal.
- `speakable` is for *recognizer grammars*: the same, but digits spelled out, because
  a pronouncing dictionary has "one" and not "1".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from ivr.flows.model import AskStep, Choice

DIGIT_WORDS: dict[str, str] = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_WORD_FOR_DIGIT: dict[str, str] = {digit: word for word, digit in DIGIT_WORDS.items()}

# Apostrophes join rather than split so "didn't" stays one token.
_APOSTROPHES = re.compile(r"['\u2019\u02bc]")
_NON_WORD = re.compile(r"[\W_]+")


def _tokens(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    folded = _APOSTROPHES.sub("", folded)
    return [DIGIT_WORDS.get(tok, tok) for tok in _NON_WORD.sub(" ", folded).split()]


def normalize(text: str) -> str:
    """Matching form: `"Press ONE, please!"` -> `"press 1 please"`."""
    return " ".join(_tokens(text))


def speakable(text: str) -> str:
    """Grammar form: `"Option 12"` -> `"option one two"` (digits read one by one)."""
    words: list[str] = []
    for tok in _tokens(text):
        if tok.isdigit():
            words.extend(_WORD_FOR_DIGIT.get(d, d) for d in tok)
        else:
            words.append(tok)
    return " ".join(words)


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


def _unique_best(scored: Sequence[tuple[float, Choice]]) -> Choice | None:
    if not scored:
        return None
    best = max(score for score, _ in scored)
    winners = {id(choice): choice for score, choice in scored if score == best}
    # A tie between different choices means the caller named two of them: asking
    # again beats guessing.
    return next(iter(winners.values())) if len(winners) == 1 else None


def match_choice(text: str, choices: Sequence[Choice]) -> Choice | None:
    """The choice the caller named, or None when nothing or more than one matches.

    A choice scores the token length of its longest phrase found in the utterance, so
    "opening hours" beats "hours". When no phrase matches, a spoken key ("press one")
    is accepted if it names exactly one choice.
    """
    heard = _tokens(text)
    if not heard:
        return None
    scored: list[tuple[float, Choice]] = []
    for choice in choices:
        lengths = [len(p) for p in map(_tokens, choice.words) if _contains(heard, p)]
        if lengths:
            scored.append((float(max(lengths)), choice))
    if scored:
        return _unique_best(scored)
    spoken_keys = [
        (1.0, choice)
        for choice in choices
        if choice.key is not None and _contains(heard, _tokens(choice.key))
    ]
    return _unique_best(spoken_keys)


def match_key(
    digits: str, choices: Sequence[Choice], terminator: str | None = "#"
) -> Choice | None:
    """The choice whose `key` equals the pressed digits (a trailing terminator ignored)."""
    pressed = digits.strip()
    if terminator and pressed.endswith(terminator) and len(pressed) > 1:
        pressed = pressed[: -len(terminator)]
    for choice in choices:
        if choice.key is not None and choice.key == pressed:
            return choice
    return None


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
