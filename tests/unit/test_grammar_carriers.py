"""The embedded recognizer's grammar around a step's phrases (issue 15): carrier words
mapped back to the answer, the garbage path as no answer, and the N-best margin."""

from __future__ import annotations

from ivr.grammar import Grammar
from ivr.speech.sphinx.grammar import compile_grammar
from ivr.speech.sphinx.utterance import answer_margin

VOCAB = frozenset(
    "yes yeah no please a an on at it's it is i'd like to cleaning wednesday two p m "
    "book booking cancel".split()
)
YES_NO = Grammar(("yes", "yeah", "no"), answers=(("yes", "yeah"), ("no",)))


def test_carrier_words_map_back_to_the_phrase() -> None:
    compiled = compile_grammar(Grammar(("cleaning", "wednesday", "two p.m.")), VOCAB)
    assert compiled.match("a cleaning please") == "cleaning"
    assert compiled.match("on wednesday") == "wednesday"
    assert compiled.match("at two p m") == "two p.m."
    assert compiled.match("it is wednesday") == "wednesday"


def test_the_garbage_path_is_no_answer() -> None:
    compiled = compile_grammar(Grammar(("cleaning",)), VOCAB)
    assert "<garbage> = <gbg_phone>" in compiled.jsgf
    assert compiled.match("gbg_p gbg_iy gbg_t gbg_s gbg_ah") is None


def test_margin_is_against_the_best_other_answer() -> None:
    """Another wording of the same answer is no rival; the first different one is."""
    compiled = compile_grammar(YES_NO, VOCAB)
    paths = [["yes", 0.8], ["yeah", 0.79], ["no", 0.6]]
    assert answer_margin(compiled, paths) == 1 - 0.6 / 0.8


def test_margin_against_the_garbage_path_and_without_rivals() -> None:
    compiled = compile_grammar(YES_NO, VOCAB)
    assert answer_margin(compiled, [["no", 0.5], ["gbg_n gbg_ow", 0.5]]) == 0.0
    assert answer_margin(compiled, [["yes", 0.5], ["yes", 0.4]]) == 1.0
    assert answer_margin(compiled, []) is None
    assert answer_margin(compiled, [["gbg_ah", 0.5], ["no", 0.4]]) is None
