"""Collecting an answer at an ask step: what to listen for (the `Listen` action: a phrase
list or grammar, which keys to collect and when to stop) and what an input means there
(the choice named or pressed, the slot value, yes or no to a confirmation)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeAlias

from ivr.flows.engine.actions import DtmfSpec, Listen
from ivr.flows.engine.events import Digits, Speech
from ivr.flows.model import AskStep, Choice, SlotDef
from ivr.flows.slots import (
    SlotValue,
    dtmf_max_digits,
    expected_grammar,
    grammar_for,
    parse_keys,
    parse_text,
)
from ivr.flows.text import match_choice, match_key, menu_grammar
from ivr.grammar import Grammar

__all__ = [
    "DEFAULT_INTER_DIGIT_MS",
    "VARIABLE_MAX_DIGITS",
    "YES_NO",
    "Mode",
    "chosen",
    "listen",
    "narrowed",
    "parsed",
    "terminator",
]

DEFAULT_INTER_DIGIT_MS = 3000
# Keys to collect for answers of no fixed length (phone numbers, free numbers): the
# terminator or the inter-digit gap ends them well before this.
VARIABLE_MAX_DIGITS = 32

# What a confirmation question ("... Is that right?") takes for an answer.
YES_NO = SlotDef(type="yes_no")

Mode: TypeAlias = Literal["answer", "yes_no", "keys"]
"""What a `Listen` waits for: the step's own answer, a yes or no (its read-back or the
check of an unsure answer), or keys alone (1 = yes, 2 = no)."""


def terminator(step: AskStep) -> str | None:
    """The key that ends keypad input at `step` ("#" unless its `dtmf` says otherwise)."""
    return step.dtmf.terminator if step.dtmf is not None else "#"


def chosen(step: AskStep, event: Speech | Digits) -> Choice | None:
    """The choice of a menu the caller named or pressed, or None."""
    if isinstance(event, Speech):
        return match_choice(event.text, step.choices)
    return match_key(event.digits, step.choices, terminator(step))


def parsed(
    slot: SlotDef, step: AskStep, event: Speech | Digits, *, now: datetime
) -> SlotValue | None:
    """What the caller said or pressed at `step`, as a value of `slot`, or None."""
    if isinstance(event, Speech):
        return parse_text(slot, event.text, now=now)
    return parse_keys(slot, event.digits, now=now, terminator=terminator(step))


def narrowed(slot: SlotDef, raw: object, *, now: datetime) -> Grammar | None:
    """`slot`'s grammar narrowed to `raw`, what an ask's `expect` rendered to (a list of
    values, one value, or text listing them with commas), or None: nothing to listen for
    (no value of the slot in it, or a slot type `expect` does not narrow)."""
    if isinstance(raw, str):
        raw = raw.split(",")
    values = list(raw) if isinstance(raw, list | tuple) else [] if raw is None else [raw]
    values = [v.strip() if isinstance(v, str) else v for v in values]
    return expected_grammar(slot, [v for v in values if v not in ("", None)], now=now)


def listen(
    name: str, step: AskStep, slot: SlotDef | None, *, mode: Mode = "answer",
    expected: Grammar | None = None,
) -> Listen:
    """The `Listen` for `step` (called `name`): its menu, its `slot` (None for a menu),
    a yes or no, or keys alone (see `Mode`). `expected`: the slot's grammar narrowed to
    the values the step offers (its `expect`), listened for instead of the whole slot's."""
    confirming = mode != "answer"
    options = step.dtmf
    keys_end = terminator(step)
    inter_digit = options.inter_digit_ms if options is not None else DEFAULT_INTER_DIGIT_MS
    dtmf: DtmfSpec | None = None
    grammar: Grammar | None
    if confirming or slot is not None:
        answer = YES_NO if confirming or slot is None else slot
        if not step.speech:
            grammar = None
        elif expected is not None and not confirming:
            grammar = expected
        else:
            grammar = grammar_for(answer)
        if grammar is not None and not grammar.phrases and grammar.jsgf is None:
            grammar = None  # free speech (text slots)
        # `phrases` alone constrains a recognizer that does not read `grammar`; for a
        # JSGF answer they are only examples, so such a recognizer gets free speech.
        phrases = grammar.phrases if grammar is not None and grammar.jsgf is None else ()
        if confirming:
            max_digits: int | None = 1  # 1 = yes, 2 = no
        else:
            max_digits = (options.max_digits if options is not None else None) or (
                dtmf_max_digits(answer)
            )
        dtmf = DtmfSpec(max_digits or VARIABLE_MAX_DIGITS, keys_end, inter_digit)
    else:
        keys = [c.key for c in step.choices if c.key is not None]
        if keys or options is not None:
            longest = max((len(k) for k in keys), default=1)
            dtmf = DtmfSpec(
                max_digits=(options.max_digits or longest) if options is not None else longest,
                terminator=keys_end,
                inter_digit_ms=inter_digit,
            )
        grammar = menu_grammar(step) if step.speech else None
        phrases = grammar.phrases if grammar is not None else ()
    if mode == "keys":
        phrases, grammar = (), None
    return Listen(
        step=name,
        phrases=phrases,
        dtmf=dtmf,
        timeout_ms=step.timeout_ms,
        end_silence_ms=step.end_silence_ms,
        max_utterance_ms=step.max_utterance_ms,
        speech=step.speech and mode != "keys",
        barge_in=step.barge_in,
        slot=None if confirming else step.slot,
        grammar=grammar,
    )
