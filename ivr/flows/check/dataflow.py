"""Slots (and `vars` results) read before they are set: a dataflow over the step graph.

A name is *maybe set* at a step if some path from `start` sets it, *surely set* if every
path does. Reading one that no path sets is an error; one that only some paths set is a
warning (guard it with `is defined` or `| default(...)`).
"""

from __future__ import annotations

import re
from typing import TypeAlias

from ivr.flows import templates
from ivr.flows.check.diagnostics import Finding
from ivr.flows.check.graph import reachable, successors
from ivr.flows.model import AskStep, CallStep, Flow, LlmStep, Loc, SetStep

__all__ = ["lint_slot_reads", "result_names"]

Name: TypeAlias = tuple[str, str]  # ("slots", "day") or ("vars", "found")


def result_names(flow: Flow) -> set[str]:
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
        for source, targets in successors(flow).items()
        for loc, target in targets
    ]
    if isinstance(flow.on_error, str) and flow.on_error in flow.steps:
        edges.extend((name, flow.on_error, frozenset()) for name in flow.steps)
    reached = reachable(flow)
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
    results = result_names(flow)
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
