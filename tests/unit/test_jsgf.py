"""The JSGF walker behind grammar-aware endpointing, on the grammars the project itself
generates for slots (numbers, times, dates, digits, phone numbers; yes/no as the sphinx
recognizer compiles it) and on hand-written JSGF."""

from __future__ import annotations

import pytest

from ivr.flows.load import load_flows
from ivr.flows.model import SlotDef
from ivr.flows.slots import grammar_for
from ivr.grammar import Grammar, _words, number_words
from ivr.jsgf import Walker, compile_jsgf
from ivr.speech.sphinx.grammar import compile_grammar, normalize_phrase
from tests.conftest import ROOT


def walker(slot: SlotDef) -> Walker:
    jsgf = grammar_for(slot).jsgf
    assert jsgf is not None
    w = compile_jsgf(jsgf, _words)
    assert w is not None
    return w


def test_every_jsgf_grammar_of_the_shipped_flows_is_walked() -> None:
    flows = load_flows(ROOT / "flows")
    slots = [s for f in flows.values() for s in f.slots.values()]
    kinds = {s.type for s in slots if grammar_for(s).jsgf is not None}
    assert {"digits", "number"} <= kinds
    for slot in slots:
        jsgf = grammar_for(slot).jsgf
        assert jsgf is None or compile_jsgf(jsgf, _words) is not None, slot
    for kind in ("date", "time"):  # their full grammars (`grammar: full`)
        walker(SlotDef(type=kind, grammar="full"))


def test_numbers_to_99_against_every_number_said() -> None:
    """Every number of the slot is a sentence, nothing else is; a prefix is complete
    exactly when no other number goes on from it."""
    w = walker(SlotDef(type="number", min=1, max=99))
    said = {tuple(number_words(n)) for n in range(1, 100)}
    prefixes = {s[:k] for s in said for k in range(1, len(s) + 1)}
    for words in prefixes:
        longer = any(len(s) > len(words) and s[: len(words)] == words for s in said)
        assert w.sentence(words) == (words in said), words
        assert w.goes_on(words) == longer, words
        assert w.complete(words) == (words in said and not longer), words
    assert not w.sentence(("zero",)) and not w.sentence(("one", "hundred"))
    assert not w.goes_on(("hundred",))  # not even a start


def test_bigger_numbers() -> None:
    w = walker(SlotDef(type="number"))  # up to 9999: "twenty two hundred" is a number too
    for n in (0, 7, 15, 99, 100, 999, 1000, 2005, 9999):
        assert w.sentence(tuple(number_words(n))), n
    assert not w.complete(("twenty", "two"))
    assert w.complete(("nine", "thousand", "nine", "hundred", "ninety", "nine"))
    assert not w.complete(("two", "thousand", "and", "five"))  # "... five hundred"
    assert w.complete(tuple(_words("twenty two hundred and fifteen")))
    small = walker(SlotDef(type="number", min=0, max=10))  # order_status's tries
    assert all(small.complete(tuple(number_words(n))) for n in range(11))


def test_times() -> None:
    g = grammar_for(SlotDef(type="time", grammar="full"))
    for said in ("ten a.m.", "ten a m", "ten thirty p m", "noon", "midnight",
                 "half past two p.m.", "fifteen hundred", "ten o'clock a m",
                 "twenty three fifty five"):
        assert g.complete(said), said
    for said in ("ten", "ten thirty", "half past two", "ten o'clock", "twenty three fifty",
                 "ten a", "half", "lunch"):
        assert not g.complete(said), said


def test_dates() -> None:
    g = grammar_for(SlotDef(type="date", grammar="full"))
    for said in ("today", "tomorrow", "the day after tomorrow", "monday the first",
                 "november twenty fourth", "the twenty fourth of may", "next friday the third"):
        assert g.complete(said), said
    # "monday" may yet be "monday the first"; "the twenty fourth" "... of may".
    for said in ("monday", "next friday", "the twenty fourth", "november twenty", "the"):
        assert not g.complete(said), said


def test_digits_and_phone_numbers() -> None:
    four = grammar_for(SlotDef(type="digits", length=4))
    assert four.complete("one two three four") and four.complete("oh oh seven zero")
    assert not four.complete("one two three") and not four.complete("one two three four five")
    ranged = grammar_for(SlotDef(type="digits", min_length=2, max_length=4))
    assert not ranged.complete("one two") and ranged.complete("one two three four")
    phone = grammar_for(SlotDef(type="phone"))
    assert phone.complete("four one five five five five zero one two three")
    assert phone.complete("plus one four one five five five five zero one two three")
    assert not phone.complete("one four one five five five five zero one two")


def test_yes_no_as_the_recognizer_compiles_it() -> None:
    """The phrase-list JSGF `speech.sphinx.grammar` writes: same walker, same answers."""
    grammar = grammar_for(SlotDef(type="yes_no"))
    vocabulary = {w for p in grammar.phrases for w in normalize_phrase(p)}
    compiled = compile_grammar(grammar, vocabulary)
    w = compile_jsgf(compiled.jsgf, _words)
    assert w is not None
    for phrase in grammar.phrases:
        assert w.sentence(tuple(normalize_phrase(phrase))), phrase
    assert w.sentence(("yes",)) and w.goes_on(("yes",))  # "yes please"
    assert w.complete(("no", "thanks")) and w.complete(("that's", "not", "right"))
    assert not w.sentence(("that's",)) and not w.sentence(("maybe",))


def test_hand_written_jsgf() -> None:
    text = """#JSGF V1.0 UTF-8 en;
    grammar hand;  // a comment
    /* a block
       comment */
    <digit> = one | two {2} | "three";
    <more> = <digit>+;
    public <cmd> = /5/ call <more> [please] | /1/ stop <NULL> | dial <digit>* now | <VOID>;
    """
    w = compile_jsgf(text, _words)
    assert w is not None
    assert w.sentence(("call", "one", "three")) and w.goes_on(("call", "one", "three"))
    assert not w.sentence(("call",)) and w.goes_on(("call",))
    assert w.complete(("call", "two", "please")) and w.complete(("stop",))
    assert w.complete(("dial", "now")) and w.complete(("dial", "one", "two", "now"))
    assert not w.goes_on(("please",)) and not w.sentence(())


@pytest.mark.parametrize("text", [
    "grammar g; public <a> = x <a> | y;",  # recursive
    "grammar g; import <other.*>; public <a> = x;",
    "grammar g; public <a> = x <missing>;",
    "grammar g; public <a> = ( x;",
    "grammar g; public <a> = x ];",
    "grammar g; <a> = x; <b> = y;",  # no <answer>, no single public rule
])
def test_jsgf_it_cannot_follow_gives_no_walker(text: str) -> None:
    assert compile_jsgf(text, _words) is None
    assert not Grammar(("x",), text).complete("x")  # never ends a turn early


def test_the_walker_is_compiled_once_per_grammar() -> None:
    jsgf = grammar_for(SlotDef(type="time", grammar="full")).jsgf
    assert jsgf is not None
    assert compile_jsgf(jsgf, _words) is compile_jsgf("".join(list(jsgf)), _words)
    public = "grammar g; public <only> = x [y];"
    only = compile_jsgf(public, _words)
    assert only is not None and only.sentence(("x",)) and only.complete(("x", "y"))
