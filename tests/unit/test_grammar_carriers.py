"""The embedded recognizer's grammar around a step's phrases (issue 15): carrier words
mapped back to the answer, the garbage path as no answer, and the N-best margin."""

from __future__ import annotations

import pytest

from ivr.config import grammar_flags
from ivr.errors import ConfigError
from ivr.flows.model import AskStep
from ivr.flows.text import MENU_LEAD, menu_grammar
from ivr.grammar import Grammar
from ivr.speech.sphinx.grammar import compile_grammar
from ivr.speech.sphinx.utterance import answer_margin

VOCAB = frozenset(
    "yes yeah no please a an on at it's it is i'd like to cleaning wednesday two p m "
    "book booking cancel i want need would".split()
)
YES_NO = Grammar(("yes", "yeah", "no"), answers=(("yes", "yeah"), ("no",)))
MENU = Grammar(("book", "cancel"))


@pytest.fixture
def carriers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IVR_GRAMMAR_CARRIERS", "1")


@pytest.fixture(autouse=True)
def plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the shipped defaults, whatever the shell exports."""
    monkeypatch.delenv("IVR_GRAMMAR_CARRIERS", raising=False)
    monkeypatch.delenv("IVR_OOG_REJECT", raising=False)


def test_by_default_the_grammar_is_the_bare_phrase_list() -> None:
    compiled = compile_grammar(MENU, VOCAB)
    assert compiled.jsgf.splitlines()[-1] == "public <answer> = ( book | cancel );"
    assert compiled.match("i'd like to book") is None


@pytest.mark.usefixtures("carriers")
def test_carrier_words_map_back_to_the_phrase() -> None:
    compiled = compile_grammar(Grammar(("cleaning", "wednesday", "two p.m.")), VOCAB)
    assert compiled.match("i'd like a cleaning please") is None  # "a": not a carrier
    assert compiled.match("i'd like to book") is None  # not a phrase
    assert compiled.match("cleaning please") == "cleaning"
    assert compiled.match("i want to two p m") == "two p.m."
    assert compiled.match("i would like wednesday please") == "wednesday"


@pytest.mark.usefixtures("carriers")
def test_carrier_words_only_around_short_lists() -> None:
    """A long list (the compact times) loses its answers to carrier paths: none there."""
    words = ("a", "on", "at", "it's")
    many = Grammar(tuple(f"{w} {n}" for w in words for n in ("two", "m", "p", "it")))
    assert "<lead>" not in compile_grammar(many, VOCAB).jsgf
    assert "<lead>" in compile_grammar(MENU, VOCAB).jsgf


@pytest.mark.usefixtures("carriers")
def test_a_grammar_that_spells_its_carriers_is_left_as_written() -> None:
    """yes/no lists "yes please" itself: more carriers there lost real answers."""
    spelled = Grammar(("yes", "yes please", "no"), answers=(("yes", "yes please"), ("no",)))
    assert "<lead>" not in compile_grammar(spelled, VOCAB).jsgf
    assert "<trail>" not in compile_grammar(spelled, VOCAB).jsgf


def test_carriers_and_the_garbage_path_are_settings() -> None:
    assert grammar_flags({}) == (False, False)
    assert grammar_flags({"IVR_GRAMMAR_CARRIERS": "1", "IVR_OOG_REJECT": "true"}) == (True, True)
    with pytest.raises(ConfigError, match="IVR_OOG_REJECT"):
        grammar_flags({"IVR_OOG_REJECT": "sometimes"})


def test_the_garbage_path_is_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "<garbage>" not in compile_grammar(Grammar(("cleaning",)), VOCAB).jsgf
    monkeypatch.setenv("IVR_OOG_REJECT", "1")
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


def test_an_answer_types_own_carriers_are_heard_by_default() -> None:
    """`Grammar.lead`/`trail` (set per answer type): weighted optional words around the
    phrases, mapped back to the phrase, with no setting."""
    grammar = Grammar(("cleaning",), lead=("a", "an"), trail=("please",))
    compiled = compile_grammar(grammar, VOCAB)
    assert "<lead> = a | an;" in compiled.jsgf and "<trail> = please;" in compiled.jsgf
    assert compiled.match("a cleaning please") == "cleaning"
    assert compiled.match("cleaning") == "cleaning"
    assert compiled.match("a") is None


def test_an_answer_in_its_carriers_is_complete() -> None:
    """Grammar-aware endpointing sees through the carriers too."""
    grammar = Grammar(("cleaning",), lead=("a",), trail=("please",))
    assert grammar.complete("a cleaning please") and grammar.complete("a cleaning")
    assert not grammar.complete("a")


def test_a_menu_of_actions_takes_i_would_like_to_and_a_menu_of_nouns_does_not() -> None:
    def step(*words: str) -> AskStep:
        return AskStep.model_validate(
            {"ask": "?", "choices": [{"words": [w], "goto": "x"} for w in words]}
        )

    actions = menu_grammar(step("book", "cancel", "reschedule"))
    nouns = menu_grammar(step("sales", "buy", "hours"))
    assert actions is not None and actions.lead == MENU_LEAD
    assert nouns is not None and nouns.lead == () and nouns.trail == ("please",)
