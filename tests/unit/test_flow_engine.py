"""The step machine for every step kind, driven by text, keys and tool results alone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from ivr.flows.engine import (
    CallerHangup,
    CallTool,
    Digits,
    FlowRunner,
    GotoFlow,
    Hangup,
    Listen,
    NoInput,
    Play,
    Speech,
    ToolDone,
    Trace,
    Transfer,
)
from ivr.flows.load import load_flow_text
from ivr.flows.model import Flow
from ivr.grammar import Grammar

NY = ZoneInfo("America/New_York")
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=NY)  # a Monday morning


def runner(text: str, *, caller: str = "+15550100001") -> FlowRunner:
    return FlowRunner(load_flow_text(text), now=lambda: MONDAY, caller=caller)


def texts(actions: Sequence[object]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Play)]


BOOKING = """
name: booking
start: ask_day
on_error: sorry
tools: [bookings.find]
slots:
  day: {type: date}
  party: {type: number, min: 1, max: 12}
steps:
  ask_day:
    ask: For which day?
    slot: day
    confirm: "{{ slots.day | spoken_date }}. Is that right?"
    no_match: {prompts: [Say a day like next Friday.], max: 2}
    fallback: sorry
    end_silence_ms: 1200
    barge_in: false
    next: ask_party
  ask_party:
    ask: How many people?
    slot: party
    next: check
  check:
    branch:
      - {if: "slots.party > 8", goto: big}
      - {if: "slots.day.weekday() == 4", goto: friday}
    else: find
  big: {say: "{{ slots.party }} is a lot of people.", next: find}
  friday: {say: Fridays are busy., next: find}
  find:
    call: bookings.find
    args: {day: "{{ slots.day }}", party: "{{ slots.party }}", who: "{{ caller }}",
           note: "for {{ slots.party }}", fixed: 3}
    result: found
    next: answer
    on_error: busy
  answer: {say: "Table {{ vars.found.table }} is yours.", next: bye}
  busy: {say: The booking system is busy., next: bye}
  sorry: {say: Sorry., next: bye}
  bye: {hangup: Goodbye.}
"""


# --------------------------------------------------------------------- slots


def test_slot_ask_listens_with_the_slot_grammar_and_keys() -> None:
    run = runner(BOOKING)
    actions = run.start()
    assert actions[0] == Play("For which day?", False, "ask_day")
    listen = actions[-1]
    assert isinstance(listen, Listen)
    assert listen.slot == "day" and listen.step == "ask_day"
    # Dates listen with the compact grammar of a booking line's answers by default.
    assert listen.grammar is not None and "tomorrow" in listen.grammar.phrases
    assert listen.dtmf is not None and listen.dtmf.max_digits == 4  # MMDD
    assert listen.end_silence_ms == 1200 and listen.barge_in is False
    assert run.waiting_for == "input" and run.current_step == "ask_day"


def test_menu_listen_carries_its_phrases_as_a_grammar() -> None:
    run = runner(
        "name: m\nstart: q\nsteps:\n  q:\n    ask: Sales or support?\n    choices:\n"
        "      - {words: [sales], key: '1', goto: b}\n      - {words: [support], goto: b}\n"
        "  b: {hangup: }\n"
    )
    listen = run.start()[-1]
    assert isinstance(listen, Listen) and listen.slot is None
    assert listen.phrases == ("sales", "support")
    # "please" may follow any menu answer; "i'd like to" leads only a menu of actions.
    assert listen.grammar == Grammar(
        ("sales", "support"), answers=(("sales",), ("support",)), trail=("please",)
    )


def test_slot_filled_by_text_then_confirmed_yes() -> None:
    run = runner(BOOKING)
    run.start()
    actions = run.handle(Speech("next friday please"))
    assert texts(actions) == ["Friday, November 27th. Is that right?"]
    confirm = actions[-1]
    assert isinstance(confirm, Listen) and confirm.slot is None and run.confirming
    assert confirm.grammar is not None and "yes" in confirm.phrases
    assert confirm.dtmf is not None and confirm.dtmf.max_digits == 1
    assert run.slots["day"].value == date(2026, 11, 27)
    actions = run.handle(Speech("yes"))
    assert texts(actions) == ["How many people?"]
    assert [(t.slot, t.value, t.understood, t.confirm) for t in run.turns] == [
        ("day", "2026-11-27", "2026-11-27", False),
        ("day", None, "yes", True),
    ]


def test_slot_filled_by_keys_and_confirmation_no_asks_again() -> None:
    run = runner(BOOKING)
    run.start()
    run.handle(Digits("1127#"))
    assert run.slots["day"].text == "2026-11-27"
    actions = run.handle(Speech("no that's wrong"))
    assert texts(actions) == ["For which day?"]  # the question, not a reprompt
    assert "day" not in run.slots  # the rejected value is forgotten
    assert isinstance(actions[-1], Listen) and actions[-1].slot == "day"
    assert texts(run.handle(Speech("tomorrow"))) == ["Tuesday, November 24th. Is that right?"]
    assert texts(run.handle(Digits("1"))) == ["How many people?"]  # 1 = yes
    assert run.slots["day"].value == date(2026, 11, 24)


def test_slot_no_match_reprompts_then_falls_back() -> None:
    run = runner(BOOKING)
    run.start()
    assert texts(run.handle(Speech("banana"))) == ["Say a day like next Friday."]
    assert texts(run.handle(Digits("9999"))) == ["Say a day like next Friday."]
    actions = run.handle(Speech("purple"))
    assert texts(actions) == ["Sorry.", "Goodbye."]
    assert actions[-1] == Hangup("fallback")
    assert [t.result for t in run.turns] == ["no_match"] * 3
    assert all(t.slot == "day" for t in run.turns)


def test_too_few_keys_for_a_date_are_a_no_match() -> None:
    run = runner(BOOKING)
    run.start()
    assert texts(run.handle(Digits("12"))) == ["Say a day like next Friday."]
    assert [t.result for t in run.turns] == ["no_match"]


def test_repeated_rejections_count_as_no_match() -> None:
    run = runner(BOOKING)
    run.start()
    for _ in range(2):
        run.handle(Speech("tomorrow"))
        assert texts(run.handle(Speech("no"))) == ["For which day?"]
    run.handle(Speech("tomorrow"))
    assert run.handle(Speech("no"))[-1] == Hangup("fallback")


def test_confirmation_reprompts_with_the_confirm_question() -> None:
    run = runner(BOOKING)
    run.start()
    run.handle(Speech("tomorrow"))
    assert texts(run.handle(Speech("banana"))) == ["Tuesday, November 24th. Is that right?"]
    assert texts(run.handle(NoInput())) == ["Tuesday, November 24th. Is that right?"]
    assert [t.confirm for t in run.turns] == [False, True, True]


# ---------------------------------------------------- branch, call, ToolDone


def to_tool(run: FlowRunner, day: str, party: str) -> CallTool:
    run.start()
    run.handle(Speech(day))
    run.handle(Speech("yes"))
    actions = run.handle(Speech(party))
    call = actions[-1]
    assert isinstance(call, CallTool)
    assert run.waiting_for == "tool" and run.current_step == "find"
    return call


def test_branch_takes_the_first_true_condition() -> None:
    run = runner(BOOKING)
    to_tool(run, "tomorrow", "nine")  # party > 8 wins over the later conditions
    assert [t.step for t in run.trace if t.kind == "tool_call"] == ["find"]
    friday = runner(BOOKING)
    friday.start()
    friday.handle(Speech("friday"))
    friday.handle(Speech("yes"))
    assert texts(friday.handle(Speech("two"))) == ["Fridays are busy."]
    other = runner(BOOKING)
    other.start()
    other.handle(Speech("tomorrow"))
    other.handle(Speech("yes"))
    assert texts(other.handle(Speech("two"))) == []  # else: straight to the tool


def test_big_party_branch_and_template_rendering() -> None:
    run = runner(BOOKING)
    run.start()
    run.handle(Speech("tomorrow"))
    run.handle(Speech("yes"))
    assert texts(run.handle(Speech("ten"))) == ["10 is a lot of people."]


def test_call_emits_typed_json_args_and_stores_the_result() -> None:
    run = runner(BOOKING)
    call = to_tool(run, "tomorrow", "four")
    assert call == CallTool(
        "find",
        "bookings.find",
        {"day": "2026-11-24", "party": 4, "who": "+15550100001", "note": "for 4", "fixed": 3},
    )
    actions = run.handle(ToolDone(True, {"table": 7}))
    assert texts(actions) == ["Table 7 is yours.", "Goodbye."]
    assert actions[-1] == Hangup("completed")
    assert run.vars == {"found": {"table": 7}}
    assert [t.kind for t in run.trace] == ["tool_call", "tool_done"]


def test_tool_failure_takes_the_step_on_error() -> None:
    run = runner(BOOKING)
    to_tool(run, "tomorrow", "four")
    actions = run.handle(ToolDone(False, error="database is busy"))
    assert texts(actions) == ["The booking system is busy.", "Goodbye."]
    assert run.outcome == "completed" and "found" not in run.vars
    failed = run.trace[-1]
    assert failed == Trace("find", "tool_failed", "tool bookings.find failed: database is busy")


TOOLS = """
name: tools
start: look
tools: [lookups.order]
{on_error}
steps:
  look: {{call: lookups.order, result: order, next: tell}}
  tell: {{say: "Order {{{{ vars.order.status }}}}."}}
  sorry: {{hangup: Sorry.}}
"""


def test_tool_failure_without_step_on_error_takes_the_flow_on_error() -> None:
    run = runner(TOOLS.format(on_error="on_error: sorry"))
    assert run.start() == [CallTool("look", "lookups.order", {})]
    assert run.handle(ToolDone(False, error="timeout")) == [
        Play("Sorry.", False, "sorry"),
        Hangup("completed"),
    ]


def test_tool_failure_without_any_on_error_ends_in_error() -> None:
    flow = load_flow_text(TOOLS.format(on_error="").replace("  sorry: {hangup: Sorry.}\n", ""))
    run = FlowRunner(flow)
    run.start()
    assert run.handle(ToolDone(False, error="timeout")) == [Hangup("error")]
    assert run.outcome == "error" and run.error == "tool lookups.order failed: timeout"


def test_events_that_do_not_fit_the_wait_are_ignored() -> None:
    run = runner(TOOLS.format(on_error="on_error: sorry"))
    run.start()
    assert run.handle(Speech("hello?")) == []  # the caller talks during the lookup
    assert run.waiting_for == "tool"
    assert run.handle(ToolDone(True, {"status": "shipped"})) == [
        Play("Order shipped.", False, "tell"),
        Hangup("completed"),
    ]
    asking = runner(BOOKING)
    asking.start()
    assert asking.handle(ToolDone(True)) == [] and asking.waiting_for == "input"
    assert [t.kind for t in run.trace].count("ignored") == 1


# ------------------------------------------------------ set, templates, errors

SET = """
name: set
start: fill
timezone: Europe/Berlin
slots:
  count: {type: number}
  day: {type: date}
  ok: {type: yes_no}
  label: {type: text}
steps:
  fill:
    set:
      count: 3
      day: "{{ now.date() }}"
      ok: true
      label: "{{ caller[-4:] }} at {{ now.hour }}h"
    next: again
  again:
    set: {count: "{{ slots.count + 1 }}"}
    next: tell
  tell:
    say: "{{ slots.count }} on {{ slots.day | spoken_date }}, {{ slots.label }}."
"""


def test_set_stores_typed_values_from_literals_and_templates() -> None:
    run = runner(SET)
    actions = run.start()
    # now is Monday 10:00 in New York, 16:00 in the flow's time zone (Berlin).
    assert texts(actions) == ["4 on Monday, November 23rd, 0001 at 16h."]
    assert run.slots["count"].value == 4 and run.slots["ok"].value is True
    assert run.slots["day"].value == date(2026, 11, 23)
    assert run.now().tzinfo == ZoneInfo("Europe/Berlin")
    assert next(t.detail for t in run.trace if t.kind == "set") == "count = 3"


def test_set_with_a_value_the_slot_cannot_hold_takes_on_error() -> None:
    flow = SET.replace('count: "{{ slots.count + 1 }}"', 'count: "{{ slots.label }}"')
    run = runner(flow.replace("name: set", "name: set\non_error: tell"))
    actions = run.start()
    assert any(t.kind == "template_failed" and "not a valid number" in t.detail for t in run.trace)
    assert run.slots["count"].value == 3  # the failed set changed nothing
    assert texts(actions) == ["3 on Monday, November 23rd, 0001 at 16h."]


def test_run_time_template_failure_takes_on_error_once() -> None:
    # vars.person is never set: the loader would reject this, so the flow is built in code.
    flow = Flow.model_validate(
        {
            "name": "render",
            "start": "greet",
            "on_error": "oops",
            "steps": {
                "greet": {"say": "Hello {{ vars.person.name }}.", "next": "bye"},
                "oops": {"say": "Sorry {{ vars.person.name }}.", "next": "bye"},
                "bye": {"hangup": "Goodbye."},
            },
        }
    )
    run = FlowRunner(flow)
    assert run.start() == [Hangup("error")]  # the error path fails too: no second round
    assert run.outcome == "error" and run.error is not None and "person" in run.error
    assert [t.kind for t in run.trace] == ["template_failed", "template_failed"]
    steps = {**flow.steps, "oops": flow.steps["bye"]}
    run = FlowRunner(flow.model_copy(update={"steps": steps}))
    assert run.start() == [Play("Goodbye.", False, "oops"), Hangup("completed")]
    assert run.outcome == "completed" and [t.kind for t in run.trace] == ["template_failed"]


# ------------------------------------------------------- llm, transfer, goto

AGENT = """
name: agent
start: agent
slots:
  topic: {type: text}
steps:
  agent:
    llm: "You help {{ caller }} with bookings."
    tools: []
    exit_when: ["slots.topic is defined"]
    max_rounds: 4
    next: bye
    fallback: human
  human:
    say: Let me put you through.
    transfer: "+1 (555) 010-0000"
  bye: {hangup: }
"""


def test_llm_step_takes_its_fallback_and_says_why() -> None:
    run = runner(AGENT)
    actions = run.start()
    assert actions == [
        Play("Let me put you through.", False, "human"),
        Transfer("human", "+1 (555) 010-0000"),
    ]
    assert run.trace[0] == Trace("agent", "llm_fallback", "no LLM configured")
    assert run.done and run.outcome == "transferred" and run.current_step == "human"


def test_transfer_number_from_a_template_is_checked_at_run_time() -> None:
    text = """
name: xfer
start: t
on_error: bye
steps:
  t: {transfer: "{{ caller }}"}
  bye: {hangup: Bye.}
"""
    assert runner(text).start() == [Transfer("t", "+15550100001")]
    anonymous = runner(text, caller="anonymous")
    assert anonymous.start() == [Play("Bye.", False, "bye"), Hangup("completed")]
    assert "not a phone number" in anonymous.trace[0].detail


def test_goto_flow_from_any_target() -> None:
    text = """
name: hand
start: b
slots:
  x: {type: yes_no}
steps:
  b:
    branch: [{if: "caller.startswith('+1')", goto: {flow: domestic}}]
    else: {flow: international}
"""
    assert runner(text).start() == [GotoFlow("domestic")]
    assert runner(text, caller="+44").start() == [GotoFlow("international")]


def test_caller_hangup_while_a_tool_runs() -> None:
    run = runner(TOOLS.format(on_error="on_error: sorry"))
    run.start()
    assert run.handle(CallerHangup()) == []
    assert run.outcome == "hangup" and run.current_step == "look" and not run.waiting


def test_clock_is_read_in_the_flow_time_zone() -> None:
    flow = load_flow_text("name: c\nstart: s\nsteps:\n  s: {say: '{{ now.hour }}'}\n")
    assert texts(FlowRunner(flow, now=lambda: MONDAY).start()) == ["10"]
    naive = FlowRunner(flow, now=lambda: datetime(2026, 1, 1, 8, 30))  # taken as local
    assert texts(naive.start()) == ["8"] and naive.now().tzinfo == NY
    assert FlowRunner(flow).now().tzinfo == NY  # the real clock, in the flow's zone


@pytest.mark.parametrize(
    ("text", "expected"),
    [("seven thirty p m", time(19, 30)), ("#1930", time(19, 30)), ("noon", time(12, 0))],
)
def test_time_slot_by_text_and_keys(text: str, expected: time) -> None:
    run = runner(
        "name: t\nstart: q\nslots:\n  at: {type: time}\nsteps:\n"
        "  q: {ask: 'When?', slot: at, next: s}\n  s: {say: '{{ slots.at | spoken_time }}'}\n"
    )
    run.start()
    event = Digits(text[1:]) if text.startswith("#") else Speech(text)
    actions = run.handle(event)
    assert run.slots["at"].value == expected
    assert actions[-1] == Hangup("completed") and len(texts(actions)) == 1


def test_step_loop_guard_counts_automatic_steps() -> None:
    # A set/branch cycle never waits for the caller; the guard ends it.
    spin = Flow.model_validate(
        {
            "name": "spin",
            "start": "a",
            "slots": {"n": {"type": "number"}},
            "steps": {
                "a": {"set": {"n": 1}, "next": "b"},
                "b": {"branch": [{"if": "slots.n > 5", "goto": "c"}], "else": "a"},
                "c": {"hangup": None},
            },
        }
    )
    run = FlowRunner(spin, max_steps=20)
    assert run.start() == [Hangup("error")]
    assert run.error is not None and "more than 20 steps" in run.error


AGENT_FLOW = """
name: agent
start: helper
tools: [bookings.book]
slots:
  day: {type: date}
steps:
  helper:
    llm: "You book appointments. Today is {{ now.strftime('%A') }}."
    tools: [bookings.book]
    exit_when: ["slots.day is defined"]
    max_rounds: 4
    next: done
    fallback: person
  done: {hangup: "Booked for {{ slots.day | spoken_date }}."}
  person: {transfer: "+15550100000"}
"""


def test_llm_step_runs_an_agent_when_one_is_configured() -> None:
    from ivr.flows.engine import AgentDone, RunAgent
    from ivr.flows.load import load_flow_text

    run = FlowRunner(load_flow_text(AGENT_FLOW), agent=True)
    actions = run.start()
    assert len(actions) == 1 and isinstance(actions[0], RunAgent)
    agent = actions[0]
    assert agent.tools == ("bookings.book",) and agent.max_rounds == 4
    assert agent.system.startswith("You book appointments. Today is ")
    assert agent.slots == ("day",)
    assert run.waiting_for == "agent"
    assert run.agent_update({"day": "not a date"}, {}) is False  # rejected, still undefined
    assert run.agent_update({"day": "2026-11-24"}, {"booking": {"ref": "BK-1"}}) is True
    assert run.vars["booking"] == {"ref": "BK-1"}
    out = run.handle(AgentDone(True, "exit"))
    assert isinstance(out[0], Play) and "Tuesday, November 24th" in out[0].text
    assert run.outcome == "completed"


def test_failed_agent_takes_the_fallback_and_no_llm_skips_it() -> None:
    from ivr.flows.engine import AgentDone, Transfer
    from ivr.flows.load import load_flow_text

    flow = load_flow_text(AGENT_FLOW)
    run = FlowRunner(flow, agent=True)
    run.start()
    out = run.handle(AgentDone(False, "error", "provider down"))
    assert any(isinstance(a, Transfer) for a in out)
    out = FlowRunner(flow).start()  # no LLM configured: straight to the fallback
    assert any(isinstance(a, Transfer) for a in out)
