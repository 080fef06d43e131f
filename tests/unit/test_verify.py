"""Never act on a guess: unsure voice answers are checked, and a spoken "yes" that books
counts only when it is sure; otherwise only keys confirm it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ivr.flows.engine import CallTool, Digits, FlowRunner, Listen, NoInput, Play, Speech
from ivr.flows.engine.verify import KEYS_TO_COMMIT, KEYS_YES_NO, commits_tool
from ivr.flows.load import load_flow_text

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("America/New_York"))

# The shape of dental_booking's end: a yes_no slot, a branch on it, the booking tool.
BOOKING = """
name: booking
start: service
tools: [bookings.book]
slots:
  service:
    type: choice
    choices:
      - {value: cleaning, words: [cleaning], key: "1"}
      - {value: filling, words: [filling], key: "2"}
  ok: {type: yes_no}
steps:
  service:
    ask: Which service?
    slot: service
    verify: VERIFY
    next: confirm
  confirm:
    ask: "A {{ slots.service }}. Shall I book it?"
    slot: ok
    fallback: bye
    next: decide
  decide:
    branch:
      - {if: "slots.ok", goto: book}
    else: again
  again: {say: Let's start again., next: service}
  book: {call: bookings.book, args: {service: "{{ slots.service }}"}, next: booked}
  booked: {say: Booked., next: bye}
  bye: {hangup: Goodbye.}
"""

SURE = 0.5  # well above every default threshold


def at_confirmation(verify: str = "never") -> FlowRunner:
    """A runner waiting at the booking confirmation, a cleaning chosen."""
    run = FlowRunner(load_flow_text(BOOKING.replace("VERIFY", verify)), now=lambda: NOW)
    run.start()
    run.handle(Speech("cleaning", SURE))
    assert run.current_step == "confirm"
    return run


def texts(actions: Sequence[object]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Play)]


def booked(actions: Sequence[object]) -> bool:
    return any(isinstance(a, CallTool) and a.tool == "bookings.book" for a in actions)


def test_a_booking_confirmation_listens_with_a_grammar_that_rejects_other_speech() -> None:
    """Where a guessed yes would book, other speech ("hold on") is a no-match, and the
    phrases other speech fell into ("go ahead") are not listened for; a question whose yes
    commits nothing keeps the plain yes/no grammar."""
    run = FlowRunner(load_flow_text(BOOKING.replace("VERIFY", "auto")), now=lambda: NOW)
    run.start()
    out = run.handle(Speech("cleaning", 0.02))[-1]  # "Cleaning, right?": books nothing
    assert isinstance(out, Listen) and out.grammar is not None
    assert not out.grammar.reject and "go ahead" in out.grammar.phrases
    out = run.handle(Speech("yes", SURE))[-1]  # "A cleaning. Shall I book it?"
    assert isinstance(out, Listen) and out.grammar is not None
    assert out.grammar.reject and "yes" in out.grammar.phrases
    assert "go ahead" not in out.grammar.phrases and "go ahead" not in out.phrases


def test_a_low_scored_yes_at_a_booking_confirmation_asks_for_keys_and_does_not_book() -> None:
    run = at_confirmation()
    out = run.handle(Speech("yes", 0.03))
    assert not booked(out)
    assert texts(out) == [KEYS_TO_COMMIT]
    listen = out[-1]
    assert isinstance(listen, Listen) and not listen.speech and listen.dtmf is not None
    assert "ok" not in run.slots
    assert [t.kind for t in run.trace] == ["unsure"]


def test_a_yes_with_a_small_margin_over_no_does_not_book() -> None:
    run = at_confirmation()
    out = run.handle(Speech("yes", SURE, margin=0.05))
    assert not booked(out)
    assert texts(out) == [KEYS_TO_COMMIT]


def test_a_spoken_yes_at_the_keys_only_question_still_does_not_book() -> None:
    run = at_confirmation()
    run.handle(Speech("yes", 0.03))
    out = run.handle(Speech("yes", SURE, margin=0.9))
    assert not booked(out)
    assert texts(out) == [KEYS_TO_COMMIT]


def test_a_confident_yes_books() -> None:
    run = at_confirmation()
    out = run.handle(Speech("yes", SURE, margin=0.9))
    assert booked(out)


def test_a_confident_yes_with_no_margin_reported_books() -> None:
    run = at_confirmation()
    assert booked(run.handle(Speech("yes", SURE)))


def test_key_1_at_the_keys_only_question_books() -> None:
    run = at_confirmation()
    run.handle(Speech("yes", 0.03))
    out = run.handle(Digits("1"))
    assert booked(out)
    assert run.slots["ok"].value is True


def test_key_2_at_the_keys_only_question_changes() -> None:
    run = at_confirmation()
    run.handle(Speech("yes", 0.03))
    out = run.handle(Digits("2"))
    assert not booked(out)
    assert texts(out) == ["Let's start again.", "Which service?"]


def test_no_input_at_the_keys_only_question_repeats_it() -> None:
    run = at_confirmation()
    run.handle(Speech("yes", 0.03))
    assert texts(run.handle(NoInput())) == [KEYS_TO_COMMIT]


def test_keys_confirm_without_any_check() -> None:
    run = at_confirmation()
    assert booked(run.handle(Digits("1")))


def test_a_low_scored_no_at_a_booking_confirmation_is_taken() -> None:
    """"No" is the safe direction: it books nothing, so the commit thresholds leave it."""
    run = at_confirmation()
    out = run.handle(Speech("no", 0.06))
    assert texts(out) == ["Let's start again.", "Which service?"]


# --------------------------------------------------------------- verify: auto


def at_service(verify: str) -> FlowRunner:
    run = FlowRunner(load_flow_text(BOOKING.replace("VERIFY", verify)), now=lambda: NOW)
    run.start()
    return run


def test_auto_checks_an_unsure_choice_in_the_flows_words() -> None:
    run = at_service("auto")
    out = run.handle(Speech("cleaning", 0.02))
    assert texts(out) == ["Cleaning, right? Say yes or no, or press 1 for yes, 2 for no."]
    assert "service" not in run.slots
    listen = out[-1]
    assert isinstance(listen, Listen) and listen.speech and listen.grammar is not None
    assert "yes" in listen.grammar.phrases


def test_auto_takes_the_checked_choice_on_yes() -> None:
    run = at_service("auto")
    run.handle(Speech("cleaning", 0.02))
    out = run.handle(Speech("yes", 0.09))
    assert run.slots["service"].text == "cleaning"
    assert texts(out) == ["A cleaning. Shall I book it?"]


def test_auto_re_asks_the_question_on_no() -> None:
    run = at_service("auto")
    run.handle(Speech("cleaning", 0.02))
    out = run.handle(Speech("no", 0.09))
    assert texts(out) == ["Which service?"]
    assert "service" not in run.slots
    out = run.handle(Speech("filling", SURE))
    assert run.slots["service"].text == "filling"


def test_no_to_the_check_is_a_miss_and_gets_the_steps_reprompt() -> None:
    """The check exists because we may have misheard: a "no" is answered like a no-match,
    with the reprompt for that attempt (here the one that offers keys)."""
    flow = BOOKING.replace("VERIFY", "auto").replace(
        "    next: confirm\n",
        "    next: confirm\n"
        "    no_match: {prompts: [\"Sorry, which service? Or press 1 or 2.\"]}\n",
        1)
    run = FlowRunner(load_flow_text(flow), now=lambda: NOW)
    run.start()
    run.handle(Speech("cleaning", 0.02))
    out = run.handle(Speech("no", 0.09))
    assert texts(out) == ["Sorry, which service? Or press 1 or 2."]
    run.handle(Digits("2"))
    assert run.slots["service"].text == "filling"


def test_auto_checks_a_small_margin_too() -> None:
    run = at_service("auto")
    out = run.handle(Speech("cleaning", SURE, margin=0.01))
    assert texts(out)[0].startswith("Cleaning, right?")


def test_auto_acts_on_a_sure_answer() -> None:
    run = at_service("auto")
    run.handle(Speech("cleaning", SURE))
    assert run.slots["service"].text == "cleaning"


def test_keys_at_the_check_answer_it() -> None:
    run = at_service("auto")
    run.handle(Speech("filling", 0.02))
    run.handle(Digits("1"))
    assert run.slots["service"].text == "filling"


def test_keys_are_never_checked() -> None:
    run = at_service("always")
    run.handle(Digits("2"))
    assert run.slots["service"].text == "filling"


def test_always_checks_a_sure_voice_answer() -> None:
    run = at_service("always")
    out = run.handle(Speech("cleaning", SURE))
    assert texts(out)[0].startswith("Cleaning, right?")


def test_never_acts_on_an_unsure_answer_without_checking() -> None:
    run = at_service("never")
    run.handle(Speech("cleaning", 0.01))
    assert run.slots["service"].text == "cleaning"


def test_a_caller_who_keeps_rejecting_the_check_reaches_the_fallback() -> None:
    flow = BOOKING.replace("VERIFY", "auto").replace(
        "    next: confirm\n", "    next: confirm\n    fallback: bye\n", 1)
    run = FlowRunner(load_flow_text(flow), now=lambda: NOW)
    run.start()
    for _ in range(3):
        run.handle(Speech("cleaning", 0.02))
        out = run.handle(Speech("no", 0.1))
    assert texts(out) == ["Goodbye."]


NAME = """
name: name
start: name
slots:
  name: {type: text}
steps:
  name: {ask: "Your name?", slot: name, verify: VERIFY, next: bye}
  bye: {hangup: Thanks.}
"""


def test_auto_leaves_free_speech_unchecked() -> None:
    run = FlowRunner(load_flow_text(NAME.replace("VERIFY", "auto")), now=lambda: NOW)
    run.start()
    run.handle(Speech("jane doe", 0.007))
    assert run.slots["name"].text == "jane doe"


def test_always_checks_free_speech() -> None:
    run = FlowRunner(load_flow_text(NAME.replace("VERIFY", "always")), now=lambda: NOW)
    run.start()
    assert texts(run.handle(Speech("jane doe", SURE)))[0].startswith("Jane doe, right?")


# -------------------------------------------------------- read-back `confirm`

READ_BACK = """
name: cancel
start: day
tools: [bookings.cancel]
slots:
  day: {type: date}
steps:
  day:
    ask: Which day?
    slot: day
    confirm: "{{ slots.day | spoken_date }}. Cancel it?"
    next: cancel
  cancel: {call: bookings.cancel, args: {day: "{{ slots.day }}"}, next: bye}
  bye: {hangup: Done.}
"""


def test_an_unsure_yes_to_a_read_back_that_cancels_asks_for_keys() -> None:
    run = FlowRunner(load_flow_text(READ_BACK), now=lambda: NOW)
    run.start()
    run.handle(Speech("tuesday", SURE))
    out = run.handle(Speech("yes", SURE, margin=0.1))
    assert texts(out) == [KEYS_TO_COMMIT]
    assert isinstance(run.handle(Digits("1"))[-1], CallTool)


def test_an_unsure_answer_that_would_cancel_is_read_back_whatever_verify_says() -> None:
    flow = READ_BACK.replace('    confirm: "{{ slots.day | spoken_date }}. Cancel it?"\n',
                             "    verify: never\n")
    run = FlowRunner(load_flow_text(flow), now=lambda: NOW)
    run.start()
    out = run.handle(Speech("tuesday", 0.06))
    assert texts(out) == ["Tuesday, November 24th, right? Say yes or no, or press 1 for yes, "
                          "2 for no."]
    out = run.handle(Speech("yes", 0.06))  # the check's yes cancels: it must be sure too
    assert texts(out) == [KEYS_TO_COMMIT]
    assert isinstance(run.handle(Digits("1"))[-1], CallTool)


def test_an_unsure_yes_no_answer_that_commits_nothing_is_asked_by_keys() -> None:
    flow = READ_BACK.replace("tools: [bookings.cancel]", "tools: [bookings.find]").replace(
        "call: bookings.cancel", "call: bookings.find")
    run = FlowRunner(load_flow_text(flow), now=lambda: NOW)
    run.start()
    run.handle(Speech("tuesday", SURE))
    assert texts(run.handle(Speech("yes", 0.01))) == [KEYS_YES_NO]
    assert isinstance(run.handle(Digits("1"))[-1], CallTool)


def test_flow_thresholds_are_read_from_certainty() -> None:
    flow = BOOKING.replace("VERIFY", "never").replace(
        "start: service", "start: service\ncertainty: {commit_confidence: 0.9}")
    run = FlowRunner(load_flow_text(flow), now=lambda: NOW)
    run.start()
    run.handle(Speech("cleaning", SURE))
    assert texts(run.handle(Speech("yes", SURE))) == [KEYS_TO_COMMIT]


@pytest.mark.parametrize(("tool", "commits"), [
    ("bookings.book", True), ("bookings.cancel", True), ("bookings.reschedule", True),
    ("payments.pay_invoice", True), ("bookings.find", False),
    ("bookings.check_availability", False), ("orders.status", False),
])
def test_which_tools_commit(tool: str, commits: bool) -> None:
    assert commits_tool(tool) is commits


def test_the_session_takes_the_margin_from_the_recognition_field_then_extra() -> None:
    """`Recognition.margin` (the embedded recognizer's N-best lead) reaches `Speech.margin`;
    an engine that only reports `extra["margin"]` still does."""
    from ivr.session.answers import _margin
    from ivr.speech.base import Recognition

    assert _margin(Recognition("yes", 0.1, "pocketsphinx", margin=0.02)) == 0.02
    assert _margin(Recognition("yes", 0.1, "x", extra={"margin": 0.3})) == 0.3
    assert _margin(Recognition("yes", 0.1, "x", margin=0.5, extra={"margin": 0.3})) == 0.5
    assert _margin(Recognition("yes", 0.1, "x")) is None
