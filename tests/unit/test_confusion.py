"""`ivr flows check` warns about answers that sound alike on the phone (`ivr.phonetics`,
`ivr.flows.check.confusion`), and stays silent on answers callers can tell apart."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from ivr.flows.check import Issue
from ivr.flows.load import check_paths, load_flow_text
from ivr.phonetics import (
    CONFUSABLE_BELOW,
    closeness,
    dictionary_path,
    guess_phones,
    phone_distance,
    pronounce,
)
from tests.conftest import ROOT

# Pairs the lint has never seen: no weight table, special case or docstring names them.
UNSEEN = ("mail", "nail", "coat", "goat")

SHOP = """\
name: shop
start: menu
slots:
  fabric:
    type: choice
    choices:
      - {value: wool, words: [wool, coat]}
      - {value: mohair, words: [mohair, goat]}
steps:
  menu:
    ask: Post or salon?
    choices:
      - {words: [post, mail], key: "1", goto: pick}
      - {words: [nail], goto: bye}
  pick:
    ask: Which fabric?
    slot: fabric
    next: bye
  bye: {hangup: Bye.}
"""


def _check(tmp_path: Path, text: str) -> list[Issue]:
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return check_paths([path])


def _at(text: str) -> tuple[int, int]:
    """1-based line and column of `text` in SHOP."""
    before = SHOP[: SHOP.index(text)]
    return before.count("\n") + 1, len(before) - before.rfind("\n")


def _alike(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if "sound alike on the phone" in i.message]


def test_the_unseen_pairs_are_in_no_code_of_ivr() -> None:
    """The pairs below are found by the distance, not looked up."""
    words = re.compile(r"\b(" + "|".join(UNSEEN) + r")\b", re.IGNORECASE)
    hits = [p for p in (ROOT / "ivr").rglob("*.py") if words.search(p.read_text("utf-8"))]
    assert hits == []


def test_warns_on_two_unseen_confusable_pairs_with_location_and_fix(tmp_path: Path) -> None:
    issues = _check(tmp_path, SHOP)
    assert [i.severity for i in issues] == ["warning", "warning"]
    goat, nail = issues  # by position: the slot is written above the steps
    path = str(tmp_path / "flow.yaml")
    assert (goat.file, goat.line, goat.col) == (path, *_at("goat]}"))
    assert (nail.file, nail.line, nail.col) == (path, *_at("nail]"))
    assert goat.message.startswith("slot 'fabric' (asked by step 'pick'): ")
    assert '"coat" [K OW T] and "goat" [G OW T] sound alike on the phone' in goat.message
    assert nail.message.startswith("step 'menu': ")
    assert '"mail" [M EY L] and "nail" [N EY L]' in nail.message
    # "goat" is not the only word for mohair: drop it; the menu's "nail" is: a new
    # word, or a key the choice does not have yet.
    assert goat.fix is not None and 'drop "goat" (callers can still say "mohair")' in goat.fix
    assert nail.fix is not None and 'add key: "2" and say "press 2 for bye"' in nail.fix
    assert str(nail).startswith(f"{path}:{nail.line}:{nail.col}: warning: step 'menu': ")


def test_silent_on_yes_and_no(tmp_path: Path) -> None:
    issues = _check(
        tmp_path,
        """\
        name: sure
        start: menu
        slots:
          ok: {type: yes_no}
        steps:
          menu:
            ask: Yes or no?
            choices:
              - {words: [yes, yeah, yep, "yes please"], goto: check}
              - {words: [no, nope, "no thanks"], goto: bye}
          check:
            ask: Sure?
            slot: ok
            next: bye
          bye: {hangup: }
        """,
    )
    assert issues == []


def test_silent_on_answers_callers_tell_apart(tmp_path: Path) -> None:
    issues = _check(
        tmp_path,
        """\
        name: desk
        start: menu
        slots:
          dish: {type: text, phrases: [pasta, salad, soup of the day]}
        steps:
          menu:
            ask: Book, cancel, or talk to someone?
            choices:
              - {words: [book, booking], goto: dish}
              - {words: [cancel], goto: bye}
              - {words: [operator, representative], goto: bye}
          dish:
            ask: Which dish?
            slot: dish
            next: bye
          bye: {hangup: }
        """,
    )
    assert issues == []


def test_words_of_one_answer_may_sound_alike(tmp_path: Path) -> None:
    """Synonyms mean the same answer: hearing one as the other does no harm."""
    text = SHOP.replace("[post, mail]", "[post, mail, nail]").replace(
        "      - {words: [nail], goto: bye}\n", "      - {words: [later], goto: bye}\n"
    )
    assert not any("step 'menu'" in i.message for i in _check(tmp_path, text))


def test_a_keys_only_question_is_not_checked(tmp_path: Path) -> None:
    text = SHOP.replace(
        '      - {words: [nail], goto: bye}\n', '      - {words: [nail], key: "2", goto: bye}\n'
    ).replace("    ask: Post or salon?\n", "    ask: Post or salon?\n    speech: false\n")
    assert not any("step 'menu'" in i.message for i in _check(tmp_path, text))


def test_slot_phrases_are_answers_of_their_own(tmp_path: Path) -> None:
    issues = _check(
        tmp_path,
        """\
        name: order
        start: ask
        slots:
          what: {type: text, phrases: [a coat, a goat, a hat]}
        steps:
          ask: {ask: "What?", slot: what, next: bye}
          bye: {hangup: }
        """,
    )
    assert len(_alike(issues)) == 1
    assert '"a coat" [AH K OW T] and "a goat" [AH G OW T]' in issues[0].message


def test_a_word_missing_from_the_dictionary_is_guessed_and_said_so(tmp_path: Path) -> None:
    issues = _check(tmp_path, SHOP.replace("[nail]", "[zmail]"))
    (menu,) = [i for i in issues if "step 'menu'" in i.message]
    assert 'pronunciation guessed: "zmail"' in menu.message


def test_the_shipped_flows_have_no_answers_that_sound_alike() -> None:
    assert _alike(check_paths([ROOT / "flows"])) == []


def test_a_plain_load_does_not_run_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading (the server, `ivr chat`) drops warnings: it skips this check's cost."""

    def refuse(a: str, b: str) -> None:
        raise AssertionError(f"compared {a!r} and {b!r} while loading")

    monkeypatch.setattr("ivr.flows.check.confusion.closeness", refuse)
    assert load_flow_text(SHOP, "shop.yaml").name == "shop"


# -- the distance ------------------------------------------------------------------------------


def test_phone_distance_is_zero_for_the_same_and_symmetric() -> None:
    a, b = ("K", "OW", "T"), ("G", "OW", "T", "S")
    assert phone_distance(a, a) == 0.0
    assert phone_distance(a, b) == phone_distance(b, a)
    assert phone_distance((), ()) == 0.0
    assert phone_distance(("AA",), ()) == 1.0


@pytest.mark.parametrize(
    ("close", "far"),
    [
        (("B", "M"), ("B", "S")),  # a nasal murmur the band cuts vs a different sound
        (("F", "S"), ("F", "N")),  # place of a fricative is lost above 3.4 kHz
        (("D", "T"), ("D", "L")),
        (("IH", "EH"), ("IH", "UW")),  # short lax vowels
    ],
)
def test_what_the_phone_band_confuses_costs_less(
    close: tuple[str, str], far: tuple[str, str]
) -> None:
    assert phone_distance(close[:1], close[1:]) < phone_distance(far[:1], far[1:])


@pytest.mark.parametrize(
    ("a", "b", "alike"),
    [
        ("book", "move", True),  # issue 15: callers who said "book" were sent to reschedule
        ("tuesday", "thursday", True),
        ("yes", "no", False),
        ("cancel", "reschedule", False),
    ],
)
def test_the_threshold_sides_with_what_callers_confused(a: str, b: str, alike: bool) -> None:
    assert closeness(a, b).confusable is alike


def test_the_dictionary_is_pocketsphinx_own_and_has_alternates() -> None:
    path = dictionary_path()
    assert path is not None and path.name == "cmudict-en-us.dict"
    assert [str(p) for p in pronounce("read")] == ["R EH D", "R IY D"]
    assert pronounce("read")[0].guessed == ()


def test_without_a_dictionary_every_word_is_guessed() -> None:
    (said,) = pronounce("kettle chips", dictionary={})
    assert said.phones == ("K", "EH", "T", "L", "CH", "IH", "P", "S")
    assert said.guessed == ("kettle", "chips")
    assert guess_phones("yoke") == ("Y", "AA", "K")
    assert 0 < CONFUSABLE_BELOW < 1
