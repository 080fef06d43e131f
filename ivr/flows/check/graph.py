"""Checks over the step graph, run only when it is sound (start and every target exist):
steps no path from `start` reaches, and steps from which the call can never end (no
hangup, transfer, hand-over or last step is reachable from them; an ask that runs out of
reprompts without a fallback does end the call, but as a failure, so it is no way out).
"""

from __future__ import annotations

from ivr.flows.check.diagnostics import Finding
from ivr.flows.check.validate import say_cycles
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

__all__ = ["lint_unreachable", "lint_way_out", "reachable", "successors"]

def successors(flow: Flow) -> dict[str, list[tuple[Loc, str]]]:
    """Step -> (location of the link, target step) for links to steps of this flow."""
    succ: dict[str, list[tuple[Loc, str]]] = {name: [] for name in flow.steps}
    for source, loc, target in flow.links():
        if isinstance(target, str) and target in flow.steps:
            succ[source].append((loc, target))
    return succ


def reachable(flow: Flow) -> set[str]:
    succ = successors(flow)
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
    reached = reachable(flow)
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
    succ = successors(flow)
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
    looping_says = {name for cycle in say_cycles(flow) for name in cycle}  # validate_loops
    reached = reachable(flow)
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
