"""`lint_confusable`: answers a step listens for that a phone line cannot tell apart.

A grammar decoder always picks one of the answers it listens for, so two answers that
sound alike on 8 kHz audio ("book" and "move") turn a caller's word into the other
choice: the caller who wants to book is sent to reschedule. This check compares, with
`ivr.phonetics`, every word of one answer with every word of the others:
- a menu's choices (`steps.<ask>.choices[].words`),
- a choice slot's options (`slots.<slot>.choices[].words`, the value when no words),
- a slot's own `phrases`, each an answer of its own.
Words of the same answer may sound alike (they mean the same). The built-in grammars
(yes/no, dates, times, numbers) are the recognizer's, not the author's: an author could
not change them, so they are not checked here.

It reads the pronunciation dictionary (once per process), so it runs in `ivr flows check`
(`check_paths`) and not at every load, where warnings are dropped anyway.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ivr.flows.check.diagnostics import Finding
from ivr.flows.model import AskStep, Flow, Loc
from ivr.flows.text import normalize
from ivr.phonetics import CONFUSABLE_BELOW, Closeness, Pronunciation, closeness

__all__ = ["lint_confusable"]


@dataclass(frozen=True, slots=True)
class _Answer:
    """One answer a step listens for: the words that say it, where they are written,
    and the key that picks it, if any."""

    words: tuple[str, ...]
    locs: tuple[Loc, ...]
    key: str | None
    name: str


@dataclass(frozen=True, slots=True)
class _Listening:
    """The answers one question listens for, and how a warning names it."""

    who: str
    answers: tuple[_Answer, ...]


def _menus(flow: Flow) -> Iterator[_Listening]:
    for name, step in flow.steps.items():
        if not isinstance(step, AskStep) or not step.choices or not step.speech:
            continue
        base: Loc = ("steps", name, "choices")
        yield _Listening(
            f"step '{name}'",
            tuple(
                _Answer(
                    choice.words,
                    tuple((*base, i, "words", k) for k in range(len(choice.words))),
                    choice.key,
                    choice.label,
                )
                for i, choice in enumerate(step.choices)
            ),
        )


def _slots(flow: Flow) -> Iterator[_Listening]:
    askers: dict[str, list[str]] = {}
    for name, step in flow.steps.items():
        if isinstance(step, AskStep) and step.slot is not None and step.speech:
            askers.setdefault(step.slot, []).append(name)
    for slot, steps in askers.items():
        definition = flow.slots.get(slot)
        if definition is None:
            continue
        asked = ", ".join(f"'{s}'" for s in steps)
        who = f"slot '{slot}' (asked by step {asked})"
        base: Loc = ("slots", slot)
        if definition.phrases:
            yield _Listening(
                who,
                tuple(
                    _Answer((phrase,), ((*base, "phrases", k),), None, phrase)
                    for k, phrase in enumerate(definition.phrases)
                ),
            )
        elif definition.type == "choice":
            yield _Listening(
                who,
                tuple(
                    _Answer(
                        option.words,
                        tuple((*base, "choices", i, "words", k) for k in range(len(option.words))),
                        option.key,
                        option.value,
                    )
                    for i, option in enumerate(definition.choices)
                ),
            )


def _said(p: Pronunciation, word: str) -> str:
    return f'"{word}" [{p}]'


def _guessed(found: Closeness) -> str:
    words = sorted({*found.first.guessed, *found.second.guessed})
    if not words:
        return ""
    listed = ", ".join(f'"{w}"' for w in words)
    return f"; not in the dictionary, pronunciation guessed: {listed}"


def _fix(near: str, far: str, answer: _Answer, safe: Sequence[str], free_key: str | None) -> str:
    """How to tell `far` (a word of `answer`) from `near`: drop it when the answer has
    words that sound like no other answer, else a different word; and a key."""
    if safe:
        kept = " or ".join(f'"{w}"' for w in safe)
        word = (
            f'drop "{far}" (callers can still say {kept}) or use a word that sounds less '
            f'like "{near}"'
        )
    else:
        word = f'say {answer.name} with a word that sounds less like "{near}"'
    if answer.key is not None:
        return f'{word}, or tell callers "press {answer.key} for {answer.name}"'
    if free_key is not None:
        return f'{word}, or add key: "{free_key}" and say "press {free_key} for {answer.name}"'
    return word


def _free_key(answers: Sequence[_Answer]) -> str | None:
    taken = {a.key for a in answers}
    return next((k for k in "123456789" if k not in taken), None)


def _confusions(listening: _Listening) -> Iterator[Finding]:
    answers = listening.answers
    close: dict[tuple[int, int, int, int], Closeness] = {}
    for (i, a), (j, b) in itertools.combinations(enumerate(answers), 2):
        for (k, wa), (m, wb) in itertools.product(enumerate(a.words), enumerate(b.words)):
            if normalize(wa) == normalize(wb):
                continue  # the same words twice: validate_choices reports that
            found = closeness(wa, wb)
            if found.confusable:
                close[(i, k, j, m)] = found
    unclear = {(i, k) for (i, k, _, _) in close} | {(j, m) for (_, _, j, m) in close}
    for (i, k, j, m), found in close.items():
        a, b = answers[i], answers[j]
        wa, wb = a.words[k], b.words[m]
        safe = [w for n, w in enumerate(b.words) if (j, n) not in unclear]
        yield Finding(
            b.locs[m],
            f"{listening.who}: {_said(found.first, wa)} and {_said(found.second, wb)} sound "
            f"alike on the phone (distance {found.distance:.2f}, under "
            f"{CONFUSABLE_BELOW}){_guessed(found)}",
            _fix(wa, wb, b, safe, _free_key(answers)),
            severity="warning",
        )


def lint_confusable(flow: Flow) -> list[Finding]:
    """A warning for each pair of answers of one question that sound alike on the phone,
    at the later word, with a fix: a clearer word or a key."""
    return [
        finding
        for listening in itertools.chain(_menus(flow), _slots(flow))
        for finding in _confusions(listening)
    ]
