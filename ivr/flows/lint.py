"""What is wrong with a flow beyond its schema: small checks, each a pure function.

Every check takes a valid `Flow` (the schema already passed) and returns `Finding`s:
a location in the flow document (`("steps", "menu", "next")`), a message, a fix and a
severity. The loader turns locations into `file:line:col` (`Issue`); loading refuses a
flow with any error, and `ivr flows check` (`check_paths`) prints errors and warnings.

Checks come in two groups. `validate_*` look at one thing at a time (targets exist,
templates compile, tools are declared). `lint_*` walk the step graph, and only run when
the graph itself is sound (start and every target exist):
- `lint_unreachable`: a step no path from `start` reaches (an error: it is dead text
  that someone believes is live).
- `lint_way_out`: steps from which the call can never end: no hangup, transfer, hand-over
  or last step is reachable from them (an ask that runs out of reprompts without a
  fallback does end the call, but as a failure, so it does not count as a way out).
- `lint_slot_reads`: a dataflow over the graph. A slot (or `vars` result) is *maybe set*
  at a step if some path from `start` sets it, *surely set* if every path does. Reading
  one that no path sets is an error; one that only some paths set is a warning.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, TypeAlias

from ivr.errors import FlowError
from ivr.flows import templates
from ivr.flows.engine import coerce_value, looks_like_number
from ivr.flows.match import normalize, speakable
from ivr.flows.model import (
    AskStep,
    CallStep,
    Flow,
    FlowRef,
    HangupStep,
    LlmStep,
    Loc,
    SayStep,
    SetStep,
    TransferStep,
)

__all__ = [
    "GRAPH_CHECKS",
    "SEMANTIC_CHECKS",
    "Finding",
    "Issue",
    "Severity",
    "check_paths",
    "lint_flow",
    "lint_slot_reads",
    "lint_unreachable",
    "lint_way_out",
    "validate_asks",
    "validate_choices",
    "validate_loops",
    "validate_slots",
    "validate_start",
    "validate_targets",
    "validate_templates",
    "validate_timezone",
    "validate_tools",
    "validate_transfers",
]

Severity: TypeAlias = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem at `loc` in the flow document; `at_key` points at the key, not the value."""

    loc: Loc
    message: str
    hint: str | None = None
    at_key: bool = False
    severity: Severity = "error"


@dataclass(frozen=True, slots=True)
class Issue:
    """A located problem, as `ivr flows check` prints it: `file:line:col: severity: ...`."""

    file: str | None
    line: int | None
    col: int | None
    message: str
    fix: str | None = None
    severity: Severity = "error"

    @property
    def hint(self) -> str | None:
        # FlowError calls the fix a hint; both spellings work so either can be printed.
        return self.fix

    def to_error(self) -> FlowError:
        return FlowError(self.message, file=self.file, line=self.line, col=self.col, hint=self.fix)

    @classmethod
    def from_error(cls, error: FlowError, severity: Severity = "error") -> Issue:
        return cls(error.file, error.line, error.col, error.message, error.hint, severity)

    def __str__(self) -> str:
        location = ":".join(str(p) for p in (self.file, self.line, self.col) if p is not None)
        text = f"{self.severity}: {self.message}"
        text = f"{location}: {text}" if location else text
        return f"{text} ({self.fix})" if self.fix else text


def check_paths(paths: Iterable[str | Path], known_tools: set[str] | None = None) -> list[Issue]:
    """Every error and warning in the given flow files (directories: their *.yaml/*.yml).

    Nothing is raised for a broken flow; `ivr flows check` exits 1 when any issue has
    severity "error". `known_tools` (the registry's names) also checks each flow's
    `tools` exist; None skips that.
    """
    # The loader imports this module for its checks; importing it here, at call time,
    # keeps that one-way at import time.
    from ivr.flows.loader import check_paths as _check_paths

    return _check_paths(paths, known_tools)


# ------------------------------------------------------------------ wording


def where(loc: Loc) -> str:
    """A human name for the container at `loc`: "step 'menu', choice 2, dtmf"."""
    if not loc:
        return "flow"
    parts: list[str] = []
    rest: Loc = loc
    if loc[0] in ("steps", "slots") and len(loc) >= 2:
        parts.append(f"{'step' if loc[0] == 'steps' else 'slot'} '{loc[1]}'")
        rest = loc[2:]
    i = 0
    while i < len(rest):
        elem = rest[i]
        if elem in ("choices", "branch") and i + 1 < len(rest) and isinstance(rest[i + 1], int):
            noun = "choice" if elem == "choices" else "case"
            parts.append(f"{noun} {int(rest[i + 1]) + 1}")
            i += 2
            continue
        parts.append(f"item {elem + 1}" if isinstance(elem, int) else str(elem))
        i += 1
    return ", ".join(parts)


def field_name(loc: Loc) -> tuple[Loc, str]:
    """(container location, name of the field) for a value error at `loc`."""
    if not loc:
        return (), "flow"
    if isinstance(loc[-1], int) and len(loc) >= 2:
        return loc[:-2], f"{loc[-2]}[{loc[-1] + 1}]"
    return loc[:-1], str(loc[-1])


def closest(word: str, candidates: Iterable[str]) -> str | None:
    options = list(candidates)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    found = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return found[0] if found else None


def suggest(word: str, candidates: Iterable[str], noun: str) -> str:
    options = list(candidates)
    best = closest(word, options)
    listed = ", ".join(options[:10]) + (", ..." if len(options) > 10 else "")
    if not options:
        return f"there are no {noun}"
    if best is not None:
        return f"did you mean '{best}'? {noun}: {listed}"
    return f"{noun}: {listed}"


# ------------------------------------------------------------- one-at-a-time


def validate_start(flow: Flow) -> list[Finding]:
    if flow.start in flow.steps:
        return []
    return [
        Finding(
            ("start",),
            f"start step '{flow.start}' does not exist",
            suggest(flow.start, flow.steps, "steps"),
        )
    ]


def validate_targets(flow: Flow) -> list[Finding]:
    issues: list[Finding] = []
    links = [(loc, target) for _, loc, target in flow.links()]
    if flow.on_error is not None:
        links.append((("on_error",), flow.on_error))
    for loc, target in links:
        if isinstance(target, FlowRef) or target in flow.steps:
            continue
        container, field = field_name(loc)
        issues.append(
            Finding(
                loc,
                f"{where(container)}: {field} '{target}' is not a step of this flow",
                suggest(target, flow.steps, "steps"),
            )
        )
    return issues


_KEY_RE = re.compile(r"^[0-9*#]+$")


def validate_choices(flow: Flow) -> list[Finding]:
    issues: list[Finding] = []
    for name, step in flow.steps.items():
        if not isinstance(step, AskStep):
            continue
        base: Loc = ("steps", name, "choices")
        terminator = step.dtmf.terminator if step.dtmf is not None else "#"
        max_digits = step.dtmf.max_digits if step.dtmf is not None else None
        key_owner: dict[str, int] = {}
        phrase_owner: dict[str, int] = {}
        for i, choice in enumerate(step.choices):
            at = where((*base, i))
            if not choice.words and choice.key is None:
                issues.append(
                    Finding(
                        (*base, i),
                        f"{at}: can be neither said nor pressed",
                        'give it words: [...] or key: "1"',
                    )
                )
            if not step.speech and choice.key is None:
                issues.append(
                    Finding(
                        (*base, i),
                        f"{at}: has no key, but the step listens for keys only",
                        "add a key or set speech: true",
                    )
                )
            for w, word in enumerate(choice.words):
                phrase = normalize(word)
                if not speakable(word):
                    issues.append(
                        Finding(
                            (*base, i, "words", w),
                            f"{at}: word '{word}' has nothing a caller could say",
                            "use letters or digits",
                        )
                    )
                elif phrase in phrase_owner and phrase_owner[phrase] != i:
                    issues.append(
                        Finding(
                            (*base, i, "words", w),
                            f"{at}: '{word}' is also a word of choice "
                            f"{phrase_owner[phrase] + 1}, so saying it picks neither",
                            "keep each word in one choice",
                        )
                    )
                else:
                    phrase_owner.setdefault(phrase, i)
            if choice.key is None:
                continue
            key_loc: Loc = (*base, i, "key")
            if not _KEY_RE.match(choice.key):
                issues.append(
                    Finding(
                        key_loc,
                        f"{at}: key '{choice.key}' is not something a keypad can send",
                        "use digits 0-9, * or #",
                    )
                )
            elif terminator and terminator in choice.key and len(choice.key) > 1:
                issues.append(
                    Finding(
                        key_loc,
                        f"{at}: key '{choice.key}' contains the terminator '{terminator}'",
                        "use another key, or set dtmf: {terminator: null}",
                    )
                )
            elif max_digits is not None and len(choice.key) > max_digits:
                issues.append(
                    Finding(
                        key_loc,
                        f"{at}: key '{choice.key}' is longer than dtmf.max_digits ({max_digits})",
                        "shorten the key or raise max_digits",
                    )
                )
            if choice.key in key_owner:
                issues.append(
                    Finding(
                        key_loc,
                        f"{at}: key '{choice.key}' is already used by choice "
                        f"{key_owner[choice.key] + 1}",
                        "give every choice its own key",
                    )
                )
            else:
                key_owner[choice.key] = i
    return issues


def _declare_hint(slot: str, flow: Flow) -> str:
    best = closest(slot, flow.slots)
    if best is not None:
        return f"did you mean '{best}'? or declare it under slots:, e.g. {slot}: {{type: text}}"
    return f"declare it under slots:, e.g. {slot}: {{type: text}}"


def validate_asks(flow: Flow) -> list[Finding]:
    """An ask is a menu (`choices`) or fills a declared `slot`; its keys must fit both."""
    issues: list[Finding] = []
    for name, step in flow.steps.items():
        if not isinstance(step, AskStep):
            continue
        base: Loc = ("steps", name)
        at = where(base)
        if step.choices and step.slot is not None:
            issues.append(
                Finding(
                    (*base, "slot"),
                    f"{at}: an ask has either choices or a slot, not both",
                    "split it into two asks, or use a choice slot and a branch",
                    at_key=True,
                )
            )
        elif not step.choices and step.slot is None:
            issues.append(
                Finding(
                    base,
                    f"{at}: an ask needs choices (a menu) or a slot (an answer to fill)",
                    "add choices: [{words: [...], goto: step}, ...] or slot: <name>",
                    at_key=True,
                )
            )
        if step.slot is not None and step.slot not in flow.slots:
            issues.append(
                Finding(
                    (*base, "slot"),
                    f"{at}: slot '{step.slot}' is not declared",
                    _declare_hint(step.slot, flow),
                )
            )
        if step.slot is None:
            for field in ("confirm", "next"):
                if getattr(step, field) is not None:
                    issues.append(
                        Finding(
                            (*base, field),
                            f"{at}: '{field}' only applies to an ask with a slot; "
                            "a menu goes where the chosen choice says",
                            f"remove '{field}', or make this ask fill a slot",
                            at_key=True,
                        )
                    )
    return issues


def validate_slots(flow: Flow) -> list[Finding]:
    """Slot and result names are usable in templates; `set` only sets declared slots."""
    issues: list[Finding] = []
    for slot in flow.slots:
        if not slot.isidentifier():
            issues.append(
                Finding(
                    ("slots", slot),
                    f"slot name '{slot}' cannot be used in templates (slots.{slot})",
                    "use letters, digits and underscores, e.g. "
                    + re.sub(r"\W+", "_", slot).strip("_"),
                    at_key=True,
                )
            )
    for name, step in flow.steps.items():
        if isinstance(step, SetStep):
            for key, value in step.set.items():
                loc: Loc = ("steps", name, "set", key)
                slot_def = flow.slots.get(key)
                if slot_def is None:
                    issues.append(
                        Finding(
                            loc,
                            f"{where(loc[:2])}: slot '{key}' is not declared",
                            _declare_hint(key, flow),
                            at_key=True,
                        )
                    )
                    continue
                if isinstance(value, str) and templates.has_syntax(value):
                    continue
                # A literal can be checked now, by the same conversion the runner does.
                now = datetime.now(zoneinfo.ZoneInfo("UTC"))
                if coerce_value(slot_def, value, now=now) is None:
                    issues.append(
                        Finding(
                            loc,
                            f"{where(loc[:2])}: {value!r} is not a valid {slot_def.type} "
                            f"for slot '{key}'",
                            f"give a {slot_def.type} value, or a template",
                        )
                    )
        if isinstance(step, CallStep) and step.result is not None:
            if not step.result.isidentifier():
                issues.append(
                    Finding(
                        ("steps", name, "result"),
                        f"{where(('steps', name))}: result name '{step.result}' cannot be "
                        f"used in templates (vars.{step.result})",
                        "use letters, digits and underscores",
                    )
                )
    return issues


def validate_timezone(flow: Flow) -> list[Finding]:
    try:
        zoneinfo.ZoneInfo(flow.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zones = sorted(zoneinfo.available_timezones())
        best = closest(flow.timezone, zones)
        hint = f"did you mean '{best}'?" if best else "use an IANA name like America/New_York"
        return [Finding(("timezone",), f"unknown time zone '{flow.timezone}'", hint)]
    return []


def validate_tools(flow: Flow, known_tools: set[str] | None = None) -> list[Finding]:
    """Steps only use tools the flow declares; declared tools exist (when known)."""
    issues: list[Finding] = []
    declared = set(flow.tools)
    used: set[str] = set()
    for i, tool in enumerate(flow.tools):
        if known_tools is not None and tool not in known_tools:
            issues.append(
                Finding(
                    ("tools", i),
                    f"tool '{tool}' does not exist",
                    suggest(tool, sorted(known_tools), "known tools"),
                )
            )
    for name, step in flow.steps.items():
        uses: list[tuple[Loc, str]] = []
        if isinstance(step, CallStep):
            uses.append((("steps", name, "call"), step.call))
        elif isinstance(step, LlmStep):
            uses.extend((("steps", name, "tools", i), t) for i, t in enumerate(step.tools))
        for loc, tool in uses:
            used.add(tool)
            if tool in declared:
                continue
            options = sorted(declared | (known_tools or set()))
            issues.append(
                Finding(
                    loc,
                    f"{where(loc[:2])}: tool '{tool}' is not declared in the flow's tools",
                    "add it to tools: [...] at the top of the flow; "
                    + suggest(tool, options, "tools"),
                )
            )
    for i, tool in enumerate(flow.tools):
        if tool not in used:
            issues.append(
                Finding(
                    ("tools", i),
                    f"tool '{tool}' is declared but no step uses it",
                    "remove it from tools, or call it",
                    severity="warning",
                )
            )
    return issues


def validate_templates(flow: Flow) -> list[Finding]:
    """Templates compile and only name things that exist (slots, results, context)."""
    issues: list[Finding] = []
    results = _results(flow)
    for use in flow.templates():
        container, field = field_name(use.loc)
        at = f"{where(container)}: '{field}'"
        try:
            templates.check(use.source, use.kind)
        except templates.TemplateFailure as exc:
            hint = (
                "write a Jinja expression, e.g. slots.party > 8"
                if use.kind == "condition"
                else "templates use {{ expression }}; see the flow format in ivr/flows/model.py"
            )
            issues.append(Finding(use.loc, f"{at}: {exc.message}", hint))
            continue
        found = templates.reads(use.source, use.kind)
        for name in sorted(found.unknown):
            issues.append(
                Finding(
                    use.loc,
                    f"{at}: unknown name '{name}'",
                    suggest(name, sorted(templates.CONTEXT_NAMES), "templates can use"),
                )
            )
        for slot in sorted(found.slots - set(flow.slots)):
            issues.append(
                Finding(
                    use.loc,
                    f"{at}: slots.{slot} is not a declared slot",
                    suggest(slot, flow.slots, "slots"),
                )
            )
        for var in sorted(found.vars - results):
            issues.append(
                Finding(
                    use.loc,
                    f"{at}: vars.{var} is not the result of any call step",
                    "name a call's result with result: "
                    + var
                    + ("; " + suggest(var, sorted(results), "results") if results else ""),
                )
            )
    return issues


def validate_transfers(flow: Flow) -> list[Finding]:
    issues: list[Finding] = []
    for name, step in flow.steps.items():
        if not isinstance(step, TransferStep) or templates.has_syntax(step.transfer):
            continue
        if not looks_like_number(step.transfer):
            issues.append(
                Finding(
                    ("steps", name, "transfer"),
                    f"{where(('steps', name))}: '{step.transfer}' is not a phone number",
                    'write it like "+15550100000", or use a template such as "{{ vars.x.phone }}"',
                )
            )
    return issues


def validate_loops(flow: Flow) -> list[Finding]:
    """Say steps whose `next` chain comes back to itself would talk forever."""
    issues: list[Finding] = []
    for cycle in _say_cycles(flow):
        chain = " -> ".join(f"'{s}'" for s in [*cycle, cycle[0]])
        issues.append(
            Finding(
                ("steps", cycle[0], "next"),
                f"steps {chain} repeat forever without asking anything",
                "end the loop with an ask or hangup step",
            )
        )
    return issues


def _say_cycles(flow: Flow) -> list[list[str]]:
    cycles: list[list[str]] = []
    reported: set[frozenset[str]] = set()
    for name in flow.steps:
        path: list[str] = []
        current: str | None = name
        while current is not None and current not in path:
            step = flow.steps.get(current)
            if not isinstance(step, SayStep) or not isinstance(step.next, str):
                current = None
                break
            path.append(current)
            current = step.next
        if current is None or current != name or frozenset(path) in reported:
            continue
        reported.add(frozenset(path))
        cycles.append(path)
    return cycles


# -------------------------------------------------------------------- graph


def _successors(flow: Flow) -> dict[str, list[tuple[Loc, str]]]:
    """Step -> (location of the link, target step) for links to steps of this flow."""
    succ: dict[str, list[tuple[Loc, str]]] = {name: [] for name in flow.steps}
    for source, loc, target in flow.links():
        if isinstance(target, str) and target in flow.steps:
            succ[source].append((loc, target))
    return succ


def _reachable(flow: Flow) -> set[str]:
    succ = _successors(flow)
    # Any step can fail (a template, a tool), so the flow's on_error is reachable from
    # wherever the call has got to: it is a second way in, beside start.
    seen = {flow.start}
    if isinstance(flow.on_error, str) and flow.on_error in flow.steps:
        seen.add(flow.on_error)
    todo = list(seen)
    while todo:
        for _, target in succ[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def lint_unreachable(flow: Flow) -> list[Finding]:
    reached = _reachable(flow)
    return [
        Finding(
            ("steps", name),
            f"step '{name}' is never reached from start step '{flow.start}'",
            "remove it, or point a next, goto, fallback or else at it",
            at_key=True,
        )
        for name in flow.steps
        if name not in reached
    ]


def _ends_call(flow: Flow) -> set[str]:
    """The steps that can themselves end the call normally (or hand it over)."""
    ends = {source for source, _, target in flow.links() if isinstance(target, FlowRef)}
    for name, step in flow.steps.items():
        if isinstance(step, HangupStep | TransferStep):
            ends.add(name)
        elif isinstance(step, SayStep | SetStep | CallStep | LlmStep) and step.next is None:
            ends.add(name)
        elif isinstance(step, AskStep) and not step.choices and step.next is None:
            ends.add(name)  # a slot ask (or a broken ask, already reported) ends the call
    return ends


def lint_way_out(flow: Flow) -> list[Finding]:
    """Reachable steps from which no end of the call is reachable."""
    succ = _successors(flow)
    pred: dict[str, set[str]] = {name: set() for name in flow.steps}
    for source, targets in succ.items():
        for _, target in targets:
            pred[target].add(source)
    can_end = _ends_call(flow)
    todo = list(can_end)
    while todo:
        for source in pred[todo.pop()]:
            if source not in can_end:
                can_end.add(source)
                todo.append(source)
    looping_says = {name for cycle in _say_cycles(flow) for name in cycle}  # validate_loops
    reached = _reachable(flow)
    stuck = [
        name
        for name in flow.steps
        if name in reached and name not in can_end and name not in looping_says
    ]
    issues: list[Finding] = []
    # One finding per group of stuck steps that lead into each other.
    group_of: dict[str, int] = {}
    groups: list[list[str]] = []
    for name in stuck:
        if name in group_of:
            continue
        group: list[str] = []
        todo = [name]
        group_of[name] = len(groups)
        while todo:
            current = todo.pop()
            group.append(current)
            neighbours = {t for _, t in succ[current]} | pred[current]
            for other in neighbours:
                if other in stuck and other not in group_of:
                    group_of[other] = len(groups)
                    todo.append(other)
        groups.append(sorted(group, key=list(flow.steps).index))
    for group in groups:
        first = group[0]
        if len(group) == 1:
            message = f"step '{first}' has no way out: nothing it leads to ever ends the call"
        else:
            names = ", ".join(f"'{s}'" for s in group)
            message = f"steps {names} loop with no way out: none of them ever ends the call"
        issues.append(
            Finding(
                ("steps", first),
                message,
                "add a hangup step and a fallback, goto, next or else leading to it",
                at_key=True,
            )
        )
    return issues


Name: TypeAlias = tuple[str, str]  # ("slots", "day") or ("vars", "found")


def _results(flow: Flow) -> set[str]:
    """Names under `vars`: call steps' results, and an agent step's tool results (each
    stored under the tool's name with '.' as '__', e.g. vars.bookings__book)."""
    names = {
        step.result
        for step in flow.steps.values()
        if isinstance(step, CallStep) and step.result is not None
    }
    for step in flow.steps.values():
        if isinstance(step, LlmStep):
            names.update(tool.replace(".", "__") for tool in step.tools)
    return names


def _generated(flow: Flow, name: str, loc: Loc) -> frozenset[Name]:
    """What taking the link at `loc` out of step `name` has set."""
    step = flow.steps[name]
    if loc[-1] != "next":
        return frozenset()  # fallback, on_error, choices: the step's work did not happen
    if isinstance(step, AskStep) and step.slot is not None:
        return frozenset({("slots", step.slot)})
    if isinstance(step, SetStep):
        return frozenset(("slots", key) for key in step.set)
    if isinstance(step, CallStep) and step.result is not None:
        return frozenset({("vars", step.result)})
    if isinstance(step, LlmStep):
        # An agent leaves by `next` when an `exit_when` condition holds: the slots and
        # vars those conditions name are what it has produced.
        return frozenset(
            (kind, name)
            for condition in step.exit_when
            for kind, name in re.findall(r"\b(slots|vars)\.([A-Za-z_]\w*)", condition)
        )
    return frozenset()


def _dataflow(flow: Flow) -> tuple[dict[str, frozenset[Name]], dict[str, frozenset[Name]]]:
    """(maybe set, surely set) on entry to every reachable step."""
    edges: list[tuple[str, str, frozenset[Name]]] = [
        (source, target, _generated(flow, source, loc))
        for source, targets in _successors(flow).items()
        for loc, target in targets
    ]
    if isinstance(flow.on_error, str) and flow.on_error in flow.steps:
        edges.extend((name, flow.on_error, frozenset()) for name in flow.steps)
    reached = _reachable(flow)
    maybe: dict[str, frozenset[Name]] = {name: frozenset() for name in reached}
    surely: dict[str, frozenset[Name] | None] = {name: None for name in reached}  # None: top
    surely[flow.start] = frozenset()
    changed = True
    while changed:
        changed = False
        for source, target, gen in edges:
            if source not in reached or surely[source] is None:
                continue
            out_maybe = maybe[source] | gen
            source_surely = surely[source]
            assert source_surely is not None
            out_surely = source_surely | gen
            if not out_maybe <= maybe[target]:
                maybe[target] = maybe[target] | out_maybe
                changed = True
            current = surely[target]
            # The start is entered with nothing set, whatever leads back to it.
            merged = out_surely if current is None else current & out_surely
            if target == flow.start:
                merged = frozenset()
            if merged != current:
                surely[target] = merged
                changed = True
    return maybe, {name: s if s is not None else frozenset() for name, s in surely.items()}


def lint_slot_reads(flow: Flow) -> list[Finding]:
    """Templates reading slots or results that no path (or not every path) has set."""
    maybe, surely = _dataflow(flow)
    results = _results(flow)
    issues: list[Finding] = []
    for use in flow.templates():
        if use.step not in maybe:
            continue
        step = flow.steps[use.step]
        if use.after and isinstance(step, LlmStep):
            continue  # an agent may fill any slot before its exit conditions are read
        extra: frozenset[Name] = frozenset()
        if use.after and isinstance(step, AskStep) and step.slot is not None:
            extra = frozenset({("slots", step.slot)})  # confirm runs once the slot is filled
        found = templates.reads(use.source, use.kind)
        names = [("slots", s) for s in sorted(found.slots & set(flow.slots))]
        names += [("vars", v) for v in sorted(found.vars & results)]
        for root, var in names:
            what = f"{root}.{var}"
            setter = (
                f"an ask with slot: {var} or a set step"
                if root == "slots"
                else f"a call step with result: {var}"
            )
            if (root, var) not in maybe[use.step] | extra:
                issues.append(
                    Finding(
                        use.loc,
                        f"step '{use.step}' reads {what}, but no path to it sets it",
                        f"put {setter} before this step",
                    )
                )
            elif (root, var) not in surely[use.step] | extra:
                issues.append(
                    Finding(
                        use.loc,
                        f"step '{use.step}' reads {what}, which only some paths to it set",
                        f"guard it with `{what} is defined`, or set it on every path",
                        severity="warning",
                    )
                )
    return issues


# ------------------------------------------------------------------- runner

Check: TypeAlias = Callable[[Flow], list[Finding]]

SEMANTIC_CHECKS: tuple[Check, ...] = (
    validate_start,
    validate_targets,
    validate_choices,
    validate_asks,
    validate_slots,
    validate_timezone,
    validate_templates,
    validate_transfers,
    validate_loops,
)
GRAPH_CHECKS: tuple[Check, ...] = (lint_unreachable, lint_way_out, lint_slot_reads)


def lint_flow(flow: Flow, known_tools: set[str] | None = None) -> list[Finding]:
    """Every finding for one flow, errors and warnings."""
    findings = [f for check in SEMANTIC_CHECKS for f in check(flow)]
    findings += validate_tools(flow, known_tools)
    # The graph checks need a sound graph: with a missing step, "unreachable" and "no
    # way out" would only echo the one real mistake.
    if not validate_start(flow) and not validate_targets(flow):
        findings += [f for check in GRAPH_CHECKS for f in check(flow)]
    return findings


def errors(findings: Sequence[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]
