"""Checks that look at one thing at a time: the start step and every target exist, a
menu's words and keys can be told apart, an ask is a menu or fills a declared slot, the
time zone exists, a transfer number is dialable, say steps do not loop forever."""

from __future__ import annotations

import re
import zoneinfo

from ivr.flows.check.diagnostics import Finding, closest, field_name, suggest, where
from ivr.flows.model import AskStep, Flow, FlowRef, Loc, SayStep, TransferStep
from ivr.flows.templates import has_syntax
from ivr.flows.text import looks_like_number, normalize, speakable

__all__ = [
    "declare_hint",
    "say_cycles",
    "validate_asks",
    "validate_choices",
    "validate_loops",
    "validate_start",
    "validate_targets",
    "validate_timezone",
    "validate_transfers",
]

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
    for loc, target in flow.targets():
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


def declare_hint(slot: str, flow: Flow) -> str:
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
                    declare_hint(step.slot, flow),
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


def validate_timezone(flow: Flow) -> list[Finding]:
    try:
        zoneinfo.ZoneInfo(flow.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zones = sorted(zoneinfo.available_timezones())
        best = closest(flow.timezone, zones)
        hint = f"did you mean '{best}'?" if best else "use an IANA name like America/New_York"
        return [Finding(("timezone",), f"unknown time zone '{flow.timezone}'", hint)]
    return []


def validate_transfers(flow: Flow) -> list[Finding]:
    issues: list[Finding] = []
    for name, step in flow.steps.items():
        if not isinstance(step, TransferStep) or has_syntax(step.transfer):
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
    for cycle in say_cycles(flow):
        chain = " -> ".join(f"'{s}'" for s in [*cycle, cycle[0]])
        issues.append(
            Finding(
                ("steps", cycle[0], "next"),
                f"steps {chain} repeat forever without asking anything",
                "end the loop with an ask or hangup step",
            )
        )
    return issues


def say_cycles(flow: Flow) -> list[list[str]]:
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
