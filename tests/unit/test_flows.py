"""Flow language: loading with located errors, matching, and the step machine."""

from __future__ import annotations

import ast
import json
import pickle
import textwrap
from collections.abc import Sequence
from pathlib import Path

import jsonschema
import pytest
import yaml

from ivr.errors import FlowError
from ivr.flows import model
from ivr.flows.check import Issue, lint_flow
from ivr.flows.engine import (
    CallerHangup,
    Digits,
    DtmfSpec,
    FlowRunner,
    GotoFlow,
    Hangup,
    Listen,
    NoInput,
    Play,
    Speech,
)
from ivr.flows.load import (
    FlowLoadError,
    FlowYamlLoader,
    check_paths,
    load_flow,
    load_flow_text,
    load_flows,
)
from ivr.flows.model import AskStep, Choice, Flow
from ivr.flows.schema import main as schema_main
from ivr.flows.schema import schema_text
from ivr.flows.text import (
    expected_phrases,
    match_choice,
    match_key,
    normalize,
    speakable,
    strip_terminator,
)
from tests.conftest import ROOT

DEMO = ROOT / "flows" / "demo.yaml"
BROKEN = Path(__file__).resolve().parent / "flows_broken"


@pytest.fixture(scope="module")
def demo() -> Flow:
    return load_flow(DEMO)


def texts(actions: Sequence[object]) -> list[str]:
    return [a.text for a in actions if isinstance(a, Play)]


# ------------------------------------------------------------------ loading


def test_demo_flow_loads(demo: Flow) -> None:
    assert demo.name == "demo"
    assert demo.start == "greet"
    menu = demo.steps["menu"]
    assert isinstance(menu, AskStep)
    assert [c.key for c in menu.choices] == ["1", "2", "3"]
    assert demo.voice is not None and demo.voice.rate == 165


def test_load_flows_directory(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text(DEMO.read_text())
    (tmp_path / "notes.txt").write_text("not a flow")
    (tmp_path / "routes.yaml").write_text("numbers: {'+15550100002': demo}\n")  # the router's
    assert list(load_flows(tmp_path)) == ["demo"]
    assert check_paths([tmp_path]) == []


def test_flow_json_schema_is_exportable() -> None:
    schema = Flow.model_json_schema()
    assert schema["additionalProperties"] is False
    steps = {"SayStep", "AskStep", "SetStep", "BranchStep", "CallStep", "LlmStep"}
    assert steps | {"TransferStep", "HangupStep", "SlotDef"} <= set(schema["$defs"])
    assert schema["$defs"]["BranchCase"]["required"] == ["if", "goto"]  # aliases, not if_


def test_committed_schema_is_up_to_date() -> None:
    committed = (ROOT / "flows" / "schema.json").read_text(encoding="utf-8")
    assert committed == schema_text(), "run: python -m ivr.flows.schema"
    assert schema_main(["--check"]) == 0


def test_schema_command_writes_and_checks(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    assert schema_main(["--check", str(target)]) == 1  # missing
    assert schema_main([str(target)]) == 0
    assert schema_main(["--check", str(target)]) == 0
    assert json.loads(target.read_text())["$schema"].endswith("2020-12/schema")


def documented_example() -> str:
    """The complete example flow in the docstring of ivr/flows/model/__init__.py."""
    doc = model.__doc__ or ""
    start = doc.index("    # yaml-language-server:")
    return textwrap.dedent(doc[start : doc.index("\nVerbs:")])


def test_documented_example_is_a_clean_flow(tmp_path: Path) -> None:
    text = documented_example()
    assert text.startswith("# yaml-language-server: $schema=schema.json\n")
    flow = load_flow_text(text, "example.yaml")
    verbs = {type(step).__name__ for step in flow.steps.values()}
    assert verbs == {
        "SayStep",
        "AskStep",
        "SetStep",
        "BranchStep",
        "CallStep",
        "LlmStep",
        "TransferStep",
        "HangupStep",
    }
    (tmp_path / "booking.yaml").write_text(text)
    (tmp_path / "survey.yaml").write_text("name: survey\nstart: s\nsteps:\n  s: {hangup: }\n")
    assert check_paths([tmp_path], {"bookings.find", "bookings.book"}) == []


@pytest.mark.parametrize("path", ["demo", "example"])
def test_flows_validate_against_the_json_schema(path: str) -> None:
    schema = json.loads((ROOT / "flows" / "schema.json").read_text())
    text = DEMO.read_text() if path == "demo" else documented_example()
    data = yaml.load(text, Loader=FlowYamlLoader)
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(data)) == []


@pytest.mark.parametrize(
    ("fixture", "line", "col", "fragments"),
    [
        ("bad_indentation", 6, 6, ["bad indentation", "'next'", "column 5"]),
        ("unknown_key", 6, 5, ["unknown key 'nxt'", "did you mean 'next'?"]),
        ("unknown_target", 8, 44, ["goto 'suport' is not a step", "did you mean 'support'?"]),
        ("wrong_type", 6, 17, ["'timeout_ms' must be a whole number", "got 'soon'"]),
        ("missing_start", 2, 8, ["start step 'welcome' does not exist", "greet"]),
        ("duplicate_key", 8, 33, ["key '1' is already used by choice 1"]),
        ("unreachable_step", 7, 3, ["step 'promo' is never reached", "'greet'"]),
        ("bad_template", 11, 10, ["step 'done': 'say': template does not compile"]),
        ("wrong_slot_type", 5, 11, ["unknown slot type 'colour'", "valid types: choice"]),
        ("no_way_out", 4, 3, ["steps 'menu', 'again' loop with no way out"]),
        ("slot_read_before_set", 7, 10, ["step 'greet' reads slots.day, but no path"]),
        ("undeclared_tool", 6, 11, ["tool 'bookings.book' is not declared", "bookings.find"]),
    ],
)
def test_broken_flow_fixtures(fixture: str, line: int, col: int, fragments: list[str]) -> None:
    path = BROKEN / f"{fixture}.yaml"
    with pytest.raises(FlowError) as info:
        load_flow(path)
    err = info.value
    assert (err.file, err.line, err.col) == (str(path), line, col)
    rendered = str(err)
    assert rendered.startswith(f"{path}:{line}:{col}: ")
    for fragment in fragments:
        assert fragment in rendered


def test_broken_directory_reports_every_file() -> None:
    with pytest.raises(FlowLoadError) as info:
        load_flows(BROKEN)
    files = {Path(e.file or "").stem for e in info.value.errors}
    assert files == {p.stem for p in BROKEN.glob("*.yaml")}


def errors_of(text: str) -> list[FlowError]:
    with pytest.raises(FlowLoadError) as info:
        load_flow_text(text, "t.yaml")
    return info.value.errors


def test_missing_start_key_suggests_first_step() -> None:
    (err,) = errors_of("name: x\nsteps:\n  hello: {say: hi}\n")
    assert (err.line, err.col) == (1, 1)
    assert "missing required key 'start'" in err.message
    assert err.hint is not None and "start: hello" in err.hint


def test_several_errors_are_reported_in_order() -> None:
    errors = errors_of(
        "name: x\nstart: a\nstepz: 1\nsteps:\n  a:\n    say: hi\n    barge_in: maybe\n"
        "  b: {ask: q, choices: []}\n"
    )
    assert [(e.line, e.col) for e in errors] == [(3, 1), (7, 15), (8, 24)]
    assert "did you mean 'steps'" in (errors[0].hint or "")


def test_load_error_pickles_with_all_errors() -> None:
    errors = errors_of("name: x\nstart: a\nstepz: 1\nsteps:\n  a:\n    say: hi\n    bad: 1\n")
    clone = pickle.loads(pickle.dumps(FlowLoadError(errors)))
    assert [e.message for e in clone.errors] == [e.message for e in errors]


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("name: x\nstart: a\nsteps:\n  a:\n    sya: hi\n", 5, 5, "did you mean 'say'"),
        (
            "name: x\nstart: a\nsteps:\n  a:\n    say: hi\n    ask: q\n",
            6,
            5,
            "both 'say' and 'ask'",
        ),
        ("name: x\nstart: a\nsteps:\n  a: hello\n", 4, 6, "must be a mapping"),
        ("name: x\nstart: a\nsteps:\n  a: {say: hi}\n  a: {say: ho}\n", 5, 3, "duplicate key 'a'"),
        ("name: x\nsteps:\n\ta: 1\n", 3, 1, "tab character"),
        ("name: x\nstart: a\nsteps:\n  a:\n    say: Note: x\n", 5, 14, "unexpected ':'"),
        ("name: x\nstart: a\nsteps:\n  a: {say: hi, next: [b]}\n", 4, 22, "step name or {flow"),
        ("name: x\nstart: a\nsteps:\n  a: {say: hi, next: {flw: b}}\n", 4, 23, "'flw'"),
        (
            "name: x\nstart: a\nsteps:\n  a: {say: x, next: b}\n  b: {say: y, next: a}\n",
            4,
            21,
            "repeat forever",
        ),
        ("", 1, 1, "empty"),
    ],
)
def test_error_positions(text: str, line: int, col: int, fragment: str) -> None:
    err = errors_of(text)[0]
    assert (err.line, err.col) == (line, col), str(err)
    assert fragment in str(err)


def test_yaml_1_1_booleans_stay_words() -> None:
    flow = load_flow_text(
        "name: x\nstart: a\nsteps:\n  a:\n    ask: ok?\n    barge_in: no\n    choices:\n"
        "      - {words: [yes], key: 1, goto: b}\n      - {words: [no], key: 2, goto: b}\n"
        "  b: {hangup: }\n"
    )
    step = flow.steps["a"]
    assert isinstance(step, AskStep)
    assert step.barge_in is False  # a bool field still understands "no"
    assert [c.words for c in step.choices] == [("yes",), ("no",)]
    assert [c.key for c in step.choices] == ["1", "2"]


def test_flow_references_checked_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "name: a\nstart: s\nsteps:\n  s: {say: hi, next: {flow: bb}}\n"
    )
    (tmp_path / "b.yaml").write_text("name: b\nstart: s\nsteps:\n  s: {hangup: }\n")
    (tmp_path / "c.yaml").write_text("name: b\nstart: s\nsteps:\n  s: {hangup: }\n")
    with pytest.raises(FlowLoadError) as info:
        load_flows(tmp_path)
    messages = {(Path(e.file or "").name, e.line, e.col): e.message for e in info.value.errors}
    assert "flow 'bb' does not exist" in messages[("a.yaml", 4, 29)]
    assert "already used" in messages[("c.yaml", 1, 7)]


# ------------------------------------------------------------------ matching


def test_normalize_and_speakable() -> None:
    assert normalize("Press ONE, please!") == "press 1 please"
    assert normalize("  I didn't   get-that ") == "i didnt get that"
    assert normalize("Café") == "cafe"
    assert speakable("Option 12.") == "option one two"


def choices() -> tuple[Choice, ...]:
    return (
        Choice(words=("sales", "buy"), key="1", goto="sales"),
        Choice(words=("support", "help"), key="2", goto="support"),
        Choice(words=("hours", "opening hours"), key="3", goto="hours", name="open"),
        Choice(words=("hours of the sales team",), goto="team"),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sales", "sales"),
        ("I'd like to BUY something.", "sales"),
        ("help me please", "support"),
        ("opening hour?", "hours"),  # plural tolerance
        ("what are the hours of the sales team", "team"),  # longest phrase wins
        ("press two", "support"),  # spoken key
        ("sales or support", None),  # ambiguous
        ("banana", None),
        ("", None),
    ],
)
def test_match_choice(text: str, expected: str | None) -> None:
    found = match_choice(text, choices())
    assert (found.goto if found else None) == expected


def test_match_key() -> None:
    assert (match_key("2", choices()) or choices()[0]).goto == "support"
    assert (match_key("3#", choices()) or choices()[0]).goto == "hours"
    assert match_key("9", choices()) is None
    assert match_key("#", choices()) is None


@pytest.mark.parametrize(
    ("keys", "terminator", "expected"),
    [
        ("12#", "#", "12"),
        (" 12# ", "#", "12"),
        ("12##", "#", "12#"),  # one terminator only
        ("#", "#", "#"),  # alone it may be a key itself
        ("*", "*", "*"),
        ("12*", "*", "12"),
        ("12#", "*", "12#"),
        ("12#", None, "12#"),
        ("", "#", ""),
    ],
)
def test_strip_terminator(keys: str, terminator: str | None, expected: str) -> None:
    assert strip_terminator(keys, terminator) == expected


def test_the_checks_never_import_loading() -> None:
    """`ivr.flows.load` calls the meaning checks; `ivr.flows.check` never calls back."""
    for path in sorted((ROOT / "ivr" / "flows" / "check").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            assert not any(n.startswith("ivr.flows.load") for n in names), path


def test_expected_phrases(demo: Flow) -> None:
    menu = demo.steps["menu"]
    assert isinstance(menu, AskStep)
    assert expected_phrases(menu) == ("sales", "buy", "support", "help", "hours", "opening hours")
    assert expected_phrases(menu, include_keys=True)[-1] == "three"


# -------------------------------------------------------------------- engine


def test_start_greets_and_asks(demo: Flow) -> None:
    runner = FlowRunner(demo)
    actions = runner.start()
    assert [type(a) for a in actions] == [Play, Play, Listen]
    greet, prompt, listen = actions
    assert isinstance(greet, Play) and greet.barge_in is False and greet.step == "greet"
    assert isinstance(prompt, Play) and prompt.barge_in is True
    assert isinstance(listen, Listen)
    assert listen.step == "menu" and "support" in listen.phrases
    assert listen.dtmf == DtmfSpec(max_digits=1, terminator="#", inter_digit_ms=3000)
    assert listen.timeout_ms == 5000 and listen.speech and listen.barge_in
    assert runner.current_step == "menu" and runner.waiting and not runner.done


@pytest.mark.parametrize(
    ("event", "answer_step"),
    [
        (Speech("sales please", 0.8), "sales"),
        (Speech("Support."), "support"),
        (Speech("what are your opening hours"), "hours"),
        (Digits("1"), "sales"),
        (Digits("2"), "support"),
        (Digits("3"), "hours"),
    ],
)
def test_full_conversation(demo: Flow, event: Speech | Digits, answer_step: str) -> None:
    runner = FlowRunner(demo)
    runner.start()
    actions = runner.handle(event)
    assert [a.step for a in actions if isinstance(a, Play)] == [answer_step, "goodbye"]
    assert actions[-1] == Hangup("completed")
    assert runner.done and runner.outcome == "completed" and runner.current_step == "goodbye"
    (turn,) = runner.turns
    assert turn.result == "match" and turn.understood == answer_step
    assert turn.input == ("speech" if isinstance(event, Speech) else "dtmf")
    assert runner.handle(Speech("sales")) == []  # late input after the end is ignored


def test_no_input_escalates_then_falls_back(demo: Flow) -> None:
    runner = FlowRunner(demo)
    runner.start()
    for _ in range(2):
        actions = runner.handle(NoInput())
        assert texts(actions) == ["Sorry, I didn't hear you. Say sales, support, or hours."]
        assert isinstance(actions[-1], Listen)
    actions = runner.handle(NoInput())
    assert texts(actions) == ["Goodbye."]
    assert actions[-1] == Hangup("fallback")
    assert runner.outcome == "fallback"
    assert [t.result for t in runner.turns] == ["no_input"] * 3
    assert [t.attempt for t in runner.turns] == [1, 2, 3]


def test_no_match_escalates_then_falls_back(demo: Flow) -> None:
    runner = FlowRunner(demo)
    runner.start()
    assert texts(runner.handle(Speech("banana")))[0].startswith("Sorry, I didn't get that")
    assert texts(runner.handle(Digits("9")))[0].startswith("Sorry, I didn't get that")
    assert runner.handle(NoInput())[0] == Play(
        "Sorry, I didn't hear you. Say sales, support, or hours.", True, "menu"
    )
    actions = runner.handle(Speech("sales or support"))  # ambiguous: third no-match
    assert actions[-1] == Hangup("fallback")
    assert [t.result for t in runner.turns] == ["no_match", "no_match", "no_input", "no_match"]


ESCALATION = """
name: esc
start: q
steps:
  q:
    ask: Yes or no?
    choices:
      - {words: [yes], goto: q2}
      - {words: ["no"], goto: {flow: other}}
    no_match: {prompts: [First., Second.], max: 3}
    no_input: {max: 1}
  q2:
    ask: Again?
    choices: [{words: [yes], goto: q}]
    no_input: {max: 0}
"""


def test_escalating_prompts_repeat_last_and_default_to_question() -> None:
    runner = FlowRunner(load_flow_text(ESCALATION))
    runner.start()
    heard = [texts(runner.handle(Speech("maybe")))[0] for _ in range(3)]
    assert heard == ["First.", "Second.", "Second."]
    assert texts(runner.handle(NoInput())) == ["Yes or no?"]
    assert runner.handle(NoInput()) == [Hangup("fallback")]  # no fallback step: end


def test_counters_reset_on_reentry_and_goto_flow() -> None:
    runner = FlowRunner(load_flow_text(ESCALATION))
    runner.start()
    runner.handle(Speech("maybe"))
    assert texts(runner.handle(Speech("yes"))) == ["Again?"]
    assert texts(runner.handle(Speech("yes"))) == ["Yes or no?"]
    assert texts(runner.handle(Speech("maybe"))) == ["First."]  # count restarted
    assert runner.handle(Speech("no")) == [GotoFlow("other")]
    assert runner.outcome == "goto_flow" and runner.done


def test_caller_hangup_and_misuse(demo: Flow) -> None:
    runner = FlowRunner(demo)
    with pytest.raises(FlowError):
        runner.handle(NoInput())
    runner.start()
    assert runner.handle(CallerHangup()) == []
    assert runner.outcome == "hangup" and runner.current_step == "menu"


def test_step_loop_guard_ends_with_error() -> None:
    # The loader rejects say-loops; a flow built in code is still guarded at run time.
    flow = Flow.model_validate(
        {
            "name": "loop",
            "start": "a",
            "steps": {"a": {"say": "x", "next": "b"}, "b": {"say": "y", "next": "a"}},
        }
    )
    runner = FlowRunner(flow, max_steps=10)
    actions = runner.start()
    assert len(actions) == 11 and actions[-1] == Hangup("error")
    assert runner.outcome == "error" and runner.error is not None


def test_implicit_end_keys_only_ask_and_silent_hangup() -> None:
    flow = load_flow_text(
        "name: x\nstart: q\nsteps:\n"
        "  q:\n    ask: Press 1 or 2.\n    speech: false\n"
        "    dtmf: {terminator: null, inter_digit_ms: 1500}\n"
        "    choices: [{key: '1', goto: a}, {key: '2', goto: b}]\n"
        "  a: {say: Done.}\n"
        "  b: {hangup: }\n"
    )
    runner = FlowRunner(flow)
    listen = runner.start()[-1]
    assert isinstance(listen, Listen)
    assert listen.phrases == () and not listen.speech
    assert listen.dtmf == DtmfSpec(max_digits=1, terminator=None, inter_digit_ms=1500)
    assert runner.handle(Digits("1")) == [Play("Done.", False, "a"), Hangup("completed")]
    other = FlowRunner(flow)
    other.start()
    assert other.handle(Digits("2")) == [Hangup("completed")]


# ---------------------------------------------------------------------- lint


def findings(text: str, known_tools: set[str] | None = None) -> list[tuple[str, str]]:
    """(severity, message) of every lint finding of a flow that passes the schema."""
    flow = Flow.model_validate(yaml.load(text, Loader=FlowYamlLoader))
    return [(f.severity, f.message) for f in lint_flow(flow, known_tools)]


def test_lint_unreachable_steps_are_errors() -> None:
    text = (
        "name: x\nstart: a\non_error: oops\nsteps:\n  a: {say: hi}\n"
        "  oops: {say: sorry, next: bye}\n  bye: {hangup: }\n  lost: {say: never}\n"
    )
    # The flow's on_error (and what follows it) counts as reachable: any step can fail.
    assert findings(text) == [("error", "step 'lost' is never reached from start step 'a'")]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # every choice loops back and there is no fallback: the caller can never leave
        (
            "  m:\n    ask: q\n    choices: [{words: [a], goto: m}, {words: [b], goto: s}]\n"
            "  s: {set: {n: 1}, next: m}\n",
            ["steps 'm', 's' loop with no way out"],
        ),
        # the same with a fallback to a hangup is fine
        (
            "  m:\n    ask: q\n    choices: [{words: [a], goto: m}]\n    fallback: bye\n"
            "  bye: {hangup: }\n",
            [],
        ),
        # a branch cycle whose only exit is a condition that may hold is fine
        (
            "  m: {branch: [{if: 'slots.n > 1', goto: bye}], else: s}\n"
            "  s: {set: {n: 2}, next: m}\n  bye: {hangup: }\n",
            [],
        ),
        # a stuck region reached from a healthy one is reported on its own
        (
            "  m:\n    ask: q\n    choices: [{words: [a], goto: bye}, {words: [b], goto: t}]\n"
            "  t: {ask: again, choices: [{words: [a], goto: t}]}\n  bye: {hangup: }\n",
            ["step 't' has no way out"],
        ),
    ],
)
def test_lint_way_out(steps: str, expected: list[str]) -> None:
    text = "name: x\nstart: m\nslots:\n  n: {type: number}\nsteps:\n" + steps
    messages = [m for _, m in findings(text) if "way out" in m]
    assert len(messages) == len(expected)
    for message, fragment in zip(messages, expected, strict=True):
        assert message.startswith(fragment)


READS = """
name: reads
start: menu
tools: [t.find]
slots:
  day: {type: date}
  note: {type: text}
steps:
  menu:
    ask: Day or skip?
    choices:
      - {words: [day], goto: ask_day}
      - {words: [skip], goto: tell}
  ask_day:
    ask: "Which day?"
    slot: day
    confirm: "{{ slots.day | spoken_date }}?"
    fallback: tell
    next: find
  find: {call: t.find, args: {day: "{{ slots.day }}"}, result: found, next: tell, on_error: tell}
  tell:
    say: >-
      {{ slots.day }} {{ vars.found.x }}
      {% if slots.day is defined %}{{ slots.day }}{% endif %}
      {{ slots.day | default('no day') }}
      {{ slots.note }}
"""


def test_lint_slot_reads_dataflow() -> None:
    # Only the bare reads count: `is defined` and `default` guard the others.
    assert findings(READS) == [
        ("warning", "step 'tell' reads slots.day, which only some paths to it set"),
        ("error", "step 'tell' reads slots.note, but no path to it sets it"),
        ("warning", "step 'tell' reads vars.found, which only some paths to it set"),
    ]


def test_lint_reads_after_a_set_on_every_path_are_fine() -> None:
    text = READS.replace("start: menu", "start: first").replace(
        "steps:\n", "steps:\n  first: {set: {note: hello, day: 2026-01-02}, next: menu}\n"
    )
    assert findings(text) == [
        ("warning", "step 'tell' reads vars.found, which only some paths to it set"),
    ]


def test_lint_undeclared_and_unknown_tools() -> None:
    text = (
        "name: x\nstart: a\ntools: [t.find, t.gone]\nsteps:\n"
        "  a: {call: t.book, next: b}\n"
        "  b: {llm: hi, tools: [t.find, t.other], fallback: c}\n  c: {hangup: }\n"
    )
    assert findings(text, {"t.find", "t.book"}) == [
        ("error", "tool 't.gone' does not exist"),
        ("error", "step 'a': tool 't.book' is not declared in the flow's tools"),
        ("error", "step 'b': tool 't.other' is not declared in the flow's tools"),
        ("warning", "tool 't.gone' is declared but no step uses it"),
    ]
    # Without a registry only the flow's own list is checked.
    assert [m for _, m in findings(text) if "does not exist" in m] == []


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("name: x\nstart: a\nsteps:\n  a: {ask: hmm}\n", 4, 3, "needs choices (a menu) or a slot"),
        (
            "name: x\nstart: a\nslots:\n  d: {type: date}\nsteps:\n"
            "  a: {ask: hmm, slot: d, choices: [{words: [x], goto: b}]}\n  b: {hangup: }\n",
            6,
            17,
            "either choices or a slot, not both",
        ),
        ("name: x\nstart: a\nsteps:\n  a: {ask: hmm, slot: day}\n", 4, 23, "slot 'day' is not"),
        (
            "name: x\nstart: a\nsteps:\n"
            "  a: {ask: hmm, confirm: ok, choices: [{key: 1, goto: b}]}\n  b: {hangup: }\n",
            4,
            17,
            "'confirm' only applies to an ask with a slot",
        ),
        ("name: x\nstart: a\nsteps:\n  a: {set: {q: 1}}\n", 4, 13, "slot 'q' is not declared"),
        (
            "name: x\nstart: a\nslots:\n  n: {type: number, max: 5}\nsteps:\n  a: {set: {n: 9}}\n",
            6,
            16,
            "9 is not a valid number for slot 'n'",
        ),
        ("name: x\ntimezone: Mars/Base\nstart: a\nsteps:\n  a: {say: hi}\n", 2, 11, "time zone"),
        ("name: x\nstart: a\nsteps:\n  a: {transfer: mom}\n", 4, 17, "'mom' is not a phone"),
        (
            "name: x\nstart: a\nsteps:\n  a: {say: '{{ slot.day }}'}\n",
            4,
            12,
            "unknown name 'slot'",
        ),
        ("name: x\nstart: a\nsteps:\n  a: {say: '{{ slots.day }}'}\n", 4, 12, "not a declared"),
        ("name: x\nstart: a\nsteps:\n  a: {say: '{{ vars.r }}'}\n", 4, 12, "not the result"),
        (
            "name: x\nstart: a\nsteps:\n  a:\n    branch:\n      - {if: 'x >', goto: b}\n"
            "    else: b\n  b: {hangup: }\n",
            6,
            14,
            "'if': condition does not compile",
        ),
        (
            "name: x\nstart: a\nslots:\n  s: {type: choice}\nsteps:\n  a: {ask: s, slot: s}\n",
            4,
            6,
            "slot 's': a choice slot needs at least one entry",
        ),
        (
            "name: x\nstart: a\nsteps:\n  a:\n    branch:\n      - {iff: x, goto: a}\n"
            "    else: a\n",
            6,
            10,
            "unknown key 'iff' (did you mean 'if'?",
        ),
        ("name: x\nstart: a\nsteps:\n  a: {ask: Day?, slot: d}\n", 4, 15, "unexpected '?'"),
    ],
)
def test_lint_error_positions(text: str, line: int, col: int, fragment: str) -> None:
    err = errors_of(text)[0]
    assert (err.line, err.col) == (line, col), str(err)
    assert fragment in str(err)


def test_warnings_do_not_stop_loading_but_are_checked(tmp_path: Path) -> None:
    text = READS.replace("      {{ slots.note }}\n", "")
    flow = load_flow_text(text)
    assert flow.name == "reads"
    path = tmp_path / "reads.yaml"
    path.write_text(text)
    issues = check_paths([path])
    assert {i.severity for i in issues} == {"warning"}
    first = issues[0]
    assert str(first).startswith(f"{path}:{first.line}:{first.col}: warning: step 'tell' reads")


def test_check_paths_reports_everything_and_raises_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: a\nstart: s\nsteps:\n  s: {say: hi, next: {flow: b}}\n")
    (tmp_path / "b.yaml").write_text("name: a\nstart: s\nsteps:\n  s: {hangup: }\n")
    (tmp_path / "broken.yaml").write_text("name: c\nstart: s\nsteps:\n  s: {say: hi}\n   x: 1\n")
    issues = check_paths([tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "broken.yaml"])
    assert all(isinstance(i, Issue) and i.severity == "error" for i in issues)
    where = {(Path(i.file or "").name, i.line, i.col) for i in issues}
    assert ("b.yaml", 1, 7) in where  # duplicate name
    assert ("a.yaml", 4, 29) in where  # flow 'b' does not exist
    assert any(name == "broken.yaml" for name, _, _ in where)  # YAML error, still reported


def test_check_one_file_resolves_hand_overs_to_its_siblings(tmp_path: Path) -> None:
    (tmp_path / "main.yaml").write_text(
        "name: main\nstart: s\nsteps:\n  s: {say: hi, next: {flow: billing}}\n"
    )
    (tmp_path / "billing.yaml").write_text("name: billing\nstart: s\nsteps:\n  s: {hangup: }\n")
    assert check_paths([tmp_path / "main.yaml"]) == []
    assert check_paths([tmp_path]) == []


def test_loading_is_side_effect_free_and_repeatable(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(DEMO.read_text())
    first = load_flow(path)
    path.write_text(DEMO.read_text().replace("goto: sales}", "goto: salez}"))
    with pytest.raises(FlowLoadError):
        load_flow(path)
    assert first == load_flow(DEMO)  # the working flow object is untouched


def test_flow_may_choose_word_gated_barge_in_and_nothing_else() -> None:
    """`engines: {barge_in: vad | words}` overrides IVR_BARGE_IN for the flow."""
    flow = load_flow_text(
        "name: f\nstart: a\nengines: {barge_in: words}\nsteps:\n  a: {hangup: Bye.}\n")
    assert flow.engines is not None and flow.engines.barge_in == "words"
    with pytest.raises(FlowLoadError, match="barge_in"):
        load_flow_text(
            "name: f\nstart: a\nengines: {barge_in: cough}\nsteps:\n  a: {hangup: Bye.}\n")


def test_flow_may_choose_its_llm_model() -> None:
    """`engines: {llm_model: ...}` is part of the format (per-flow provider choice)."""
    flow = load_flow_text(
        "name: f\nstart: a\nengines: {llm_model: gpt-4o}\nsteps:\n  a: {hangup: Bye.}\n")
    assert flow.engines is not None and flow.engines.llm_model == "gpt-4o"
