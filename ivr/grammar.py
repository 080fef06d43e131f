"""What a caller is expected to say, and the words numbers are spoken with.

A leaf shared by `flows` (which builds grammars from a step's answers) and `speech`
(which constrains decoding to them), so neither imports the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from ivr.jsgf import compile_jsgf

ONES: Final[tuple[str, ...]] = tuple(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen".split()
)
TENS: Final[tuple[str, ...]] = tuple(
    "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
)


@dataclass(frozen=True, slots=True)
class Grammar:
    """What the caller is expected to say; recognizers may constrain decoding to it.

    Either a list of `phrases`, or (for structured answers such as dates, times and digit
    strings) a complete JSGF grammar in `jsgf` whose public rule is `<answer>`; `phrases`
    then lists a few examples for engines that only take hints (remote prompts).
    """

    phrases: tuple[str, ...] = ()
    jsgf: str | None = None
    # For `complete()`: `phrases` grouped by the answer they mean ("yes", "yes please").
    # It does not change what a recognizer listens for.
    answers: tuple[tuple[str, ...], ...] = ()
    # Carrier words a caller may wrap any phrase in ("on" tuesday, "a" cleaning "please"),
    # chosen per answer type (`ivr.flows.slots.grammars`); a recognizer that constrains
    # decoding may accept them around `phrases` (weighted against) and drop them again.
    lead: tuple[str, ...] = ()
    trail: tuple[str, ...] = ()
    # Speech that fits no phrase is no answer (a no-match), not the nearest phrase: a
    # recognizer that constrains decoding gives it somewhere else to go (the embedded one
    # its garbage path). Set where a guess would act (a yes that books); it costs some
    # real answers, which are then asked again.
    reject: bool = False

    def complete(self, text: str) -> bool:
        """Is `text` (a partial hypothesis) a whole answer that more words cannot change?

        Grammar-aware endpointing ends a turn after a short silence when it is. For a
        phrase list: `text` is one of the phrases, and every longer phrase it begins
        means the same answer (in `answers`), so "yes" is complete beside "yes please"
        but "account" is not beside a different answer "account balance". For a JSGF
        grammar: `text` is a sentence of it and no longer sentence starts with it, so
        "twenty" is not complete while "twenty two" may follow, nor "ten" while "ten
        thirty" may, but "twenty two" (up to 99) and "ten a.m." are. A grammar the
        walker cannot follow (`ivr.jsgf`) never ends a turn early.
        """
        words = _words(text)
        if not words:
            return False
        if self.jsgf is not None:
            walker = compile_jsgf(self.jsgf, _words)
            return walker is not None and walker.complete(words)
        spoken = {_words(p): p for p in self.phrases}
        words = self._unwrapped(words, spoken)
        phrase = spoken.get(words)
        if phrase is None:
            return False
        same = {p for group in self.answers if phrase in group for p in group}
        n = len(words)
        return all(
            p in same for w, p in spoken.items() if len(w) > n and w[:n] == words
        )

    def _unwrapped(
        self, words: tuple[str, ...], spoken: dict[tuple[str, ...], str]
    ) -> tuple[str, ...]:
        """`words` without a `lead` before and a `trail` after the phrase they wrap."""
        if words in spoken:
            return words
        n = len(words)
        starts = [0] + [len(c) for c in map(_words, self.lead) if words[: len(c)] == c]
        ends = [n] + [n - len(c) for c in map(_words, self.trail)
                      if 0 < len(c) <= n and words[n - len(c):] == c]
        for start in starts:
            for end in ends:
                if words[start:end] in spoken:
                    return words[start:end]
        return words


_WORD: Final = re.compile(r"[a-z0-9']+")


def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.lower()))


def number_words(n: int) -> list[str]:
    """`n` (0 to 999,999) as spoken: 115 -> ["one", "hundred", "fifteen"].

    The one spelling of numbers: flows parse and say numbers with it, grammars and
    recognizer vocabularies are built from it, so what is listened for is what is said.
    """
    if not 0 <= n < 1_000_000:
        raise AssertionError(f"number_words takes 0..999999, got {n}")
    if n < 20:
        return [ONES[n]]
    if n < 100:
        tens, rest = divmod(n, 10)
        return [TENS[tens]] + ([ONES[rest]] if rest else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return [ONES[hundreds], "hundred"] + (number_words(rest) if rest else [])
    thousands, rest = divmod(n, 1000)
    return [*number_words(thousands), "thousand"] + (number_words(rest) if rest else [])


def digit_words(digits: str) -> list[str]:
    """A digit string read one digit at a time: "007" -> ["zero", "zero", "seven"]."""
    return [ONES[int(d)] for d in digits]
