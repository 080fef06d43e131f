"""Never act on a guess: whether a voice answer at an ask is sure enough to act on, which
answers commit something (a booking, a cancellation, a reschedule), and the words of the
questions that check an unsure answer.

A recognizer with a grammar always returns something in it, so a wrong answer looks
like a right one; only its score (`Speech.confidence`) and its lead over the next-best
hypothesis (`Speech.margin`) tell them apart. Keys are certain and never checked. An
answer that commits must pass the stricter `commit_*` thresholds of `Flow.certainty`;
a "yes" that commits and does not pass them is asked for again by keys only, because a
spoken "yes" to "did you say yes?" is the same guess twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from ivr.flows.engine.events import Speech
from ivr.flows.model import (
    AskStep,
    BranchStep,
    CallStep,
    Certainty,
    Choice,
    Flow,
    SayStep,
    SetStep,
    SlotDef,
    Target,
)
from ivr.flows.slots import SlotValue, speak_value

__all__ = [
    "COMMITTING_WORDS",
    "KEYS_TO_COMMIT",
    "KEYS_YES_NO",
    "Stakes",
    "check_question",
    "commits_tool",
    "leads_to_commit",
    "sure",
]

# A tool commits when a word of the last part of its name is one of these
# (`bookings.book`, `bookings.cancel`, `bookings.reschedule`, `payments.pay_invoice`);
# lookups (`bookings.find`, `bookings.check_availability`) do not.
COMMITTING_WORDS = frozenset({"book", "cancel", "reschedule", "pay", "refund", "delete"})

KEYS_TO_COMMIT = "Press 1 to confirm, 2 to change."
KEYS_YES_NO = "Press 1 for yes, 2 for no."


def commits_tool(name: str) -> bool:
    """Whether calling the tool `name` changes something for the caller."""
    last = name.rsplit(".", 1)[-1]
    return any(word in COMMITTING_WORDS for word in last.split("_"))


def leads_to_commit(flow: Flow, target: Target | None) -> bool:
    """Whether going on to `target` may run a committing tool before the caller is asked
    anything again (through says, sets, every branch and non-committing calls)."""
    todo: list[Target | None] = [target]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if not isinstance(name, str) or name in seen:
            continue  # the end, another flow (it asks before it acts), or a loop
        seen.add(name)
        step = flow.steps.get(name)
        if isinstance(step, CallStep):
            if commits_tool(step.call):
                return True
            todo.append(step.next)
        elif isinstance(step, SayStep | SetStep):
            todo.append(step.next)
        elif isinstance(step, BranchStep):
            todo.extend(case.goto for case in step.branch)
            todo.append(step.else_)
    return False


@dataclass(frozen=True, slots=True)
class Stakes:
    """What acting on an answer at one ask step risks: whether its slot answer (and the
    "yes" confirming it) commits, and whether each of its choices does."""

    slot: bool
    choices: tuple[bool, ...]

    @classmethod
    def of(cls, flow: Flow, step: AskStep) -> Stakes:
        return cls(
            slot=step.slot is not None and leads_to_commit(flow, step.next),
            choices=tuple(leads_to_commit(flow, c.goto) for c in step.choices),
        )

    def commits(self, step: AskStep, answer: Choice | SlotValue) -> bool:
        if isinstance(answer, Choice):
            return any(c is answer and hit for c, hit in zip(step.choices, self.choices,
                                                               strict=True))
        return self.slot


def sure(event: Speech, certainty: Certainty, *, commits: bool) -> bool:
    """Whether `event` passes the thresholds (the `commit_*` ones when acting on it
    commits); an unknown margin is judged by the confidence alone."""
    confidence = certainty.commit_confidence if commits else certainty.confidence
    margin = certainty.commit_margin if commits else certainty.margin
    if event.confidence < confidence:
        return False
    return event.margin is None or event.margin >= margin


def check_question(answer: Choice | SlotValue, slot: SlotDef | None) -> str:
    """"<the answer in the flow's words>, right?" and how to answer it."""
    if isinstance(answer, Choice):
        words = answer.words[0] if answer.words else answer.label
    else:
        words = speak_value(slot, answer) if slot is not None else answer.text
    words = words[:1].upper() + words[1:]
    return f"{words}, right? Say yes or no, or press 1 for yes, 2 for no."
