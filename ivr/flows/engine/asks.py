"""One visit of an ask step: what each answer leads to.

The runner enters an ask and hands it every input that comes in while it waits. The
visit counts attempts, no-inputs and no-matches (they start again each time the step is
entered), knows whether it is asking its confirmation question, and answers each input
with a `Reply`: the `Turn` to record, a slot value to store or forget, and what comes
next, a `Reprompt` or `Leave`. It renders nothing and touches no runner state; the
runner carries the reply out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ivr.flows.engine.actions import Listen
from ivr.flows.engine.collection import YES_NO, chosen, listen, parsed
from ivr.flows.engine.events import Digits, NoInput, Speech
from ivr.flows.engine.records import Turn
from ivr.flows.model import AskStep, Reprompts, SlotDef, Target
from ivr.flows.slots import SlotValue

__all__ = ["AskVisit", "Leave", "Reply", "Reprompt"]


@dataclass(frozen=True, slots=True)
class Reprompt:
    """Say `prompt` (a template) and listen again."""

    prompt: str


@dataclass(frozen=True, slots=True)
class Leave:
    """Go on to `target`, or end the call when it is None; `gave_up`: reprompts ran out."""

    target: Target | None
    gave_up: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """What an input at an ask comes to."""

    turn: Turn
    then: Reprompt | Leave
    value: SlotValue | None = None  # store it in the step's slot
    forget: bool = False  # the caller said the slot's value is wrong


@dataclass(frozen=True, slots=True)
class _Heard:
    kind: Literal["speech", "dtmf", "none"]
    text: str | None
    confidence: float | None

    @classmethod
    def of(cls, event: Speech | Digits | NoInput) -> _Heard:
        if isinstance(event, Speech):
            return cls("speech", event.text, event.confidence)
        if isinstance(event, Digits):
            return cls("dtmf", event.digits, None)
        return cls("none", None, None)


@dataclass(slots=True)
class AskVisit:
    """The ask step `name` while the call waits at it; `slot` is the definition of the
    slot it fills (None for a menu)."""

    name: str
    step: AskStep
    slot: SlotDef | None
    attempts: int = 0
    no_input: int = 0
    no_match: int = 0
    confirming: bool = False

    def listen(self) -> Listen:
        return listen(self.name, self.step, self.slot, confirming=self.confirming)

    def answer(self, event: Speech | Digits | NoInput, now: Callable[[], datetime]) -> Reply:
        """What `event` comes to; `now` is read only to parse dates and times."""
        self.attempts += 1
        heard = _Heard.of(event)
        step = self.step
        if isinstance(event, NoInput):
            turn = self._turn(heard, "no_input")
            self.no_input += 1
            return Reply(turn, self._retry(self.no_input, step.no_input))
        if self.confirming:
            answer = parsed(YES_NO, step, event, now=now())
            if answer is None:
                return self._no_match(heard)
            turn = self._turn(heard, "match", answer.text)
            self.confirming = False
            if answer.value is True:
                return Reply(turn, Leave(step.next))
            # "No": the value heard was wrong, so it is forgotten and the question asked
            # again. A rejection counts as a no-match, so a caller who keeps saying no
            # reaches the fallback instead of looping forever.
            self.no_match += 1
            then = self._give_up() if self.no_match > step.no_match.max else Reprompt(step.ask)
            return Reply(turn, then, forget=True)
        if self.slot is not None:
            value = parsed(self.slot, step, event, now=now())
            if value is None:
                return self._no_match(heard)
            turn = self._turn(heard, "match", value.text, value.text)
            if step.confirm is None:
                return Reply(turn, Leave(step.next), value)
            self.confirming = True
            return Reply(turn, Reprompt(step.confirm), value)
        choice = chosen(step, event)
        if choice is None:
            return self._no_match(heard)
        return Reply(self._turn(heard, "match", choice.label), Leave(choice.goto))

    def _no_match(self, heard: _Heard) -> Reply:
        turn = self._turn(heard, "no_match")
        self.no_match += 1
        return Reply(turn, self._retry(self.no_match, self.step.no_match))

    def _retry(self, count: int, reprompts: Reprompts) -> Reprompt | Leave:
        if count > reprompts.max:
            return self._give_up()
        if self.confirming:
            # Reprompts are written for the question, not for "is that right?".
            return Reprompt(self.step.confirm or self.step.ask)
        # No reprompt text of its own means: ask the question again.
        return Reprompt(reprompts.prompt(count) or self.step.ask)

    def _give_up(self) -> Leave:
        self.confirming = False
        return Leave(self.step.fallback, gave_up=True)

    def _turn(
        self,
        heard: _Heard,
        result: Literal["match", "no_match", "no_input"],
        understood: str | None = None,
        value: str | None = None,
    ) -> Turn:
        return Turn(
            self.name,
            self.attempts,
            heard.kind,
            heard.text,
            heard.confidence,
            result,
            understood,
            self.step.slot,
            value,
            self.confirming,
        )
