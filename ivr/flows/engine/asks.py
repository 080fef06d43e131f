"""One visit of an ask step: what each answer leads to.

The runner enters an ask and hands it every input that comes in while it waits. The
visit counts attempts, no-inputs and no-matches (they start again each time the step is
entered), knows which question it is asking (its own, the read-back `confirm`, the
check of an unsure voice answer) and whether only keys answer now, and answers each input
with a `Reply`: the `Turn` to record, a slot value to store or forget, and what comes
next, a `Reprompt` or `Leave`. It renders nothing and touches no runner state; the
runner carries the reply out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from ivr.flows.engine.actions import Listen
from ivr.flows.engine.collection import YES_NO, Mode, chosen, listen, parsed
from ivr.flows.engine.events import Digits, NoInput, Speech
from ivr.flows.engine.records import Turn
from ivr.flows.engine.verify import KEYS_TO_COMMIT, KEYS_YES_NO, Stakes, check_question, sure
from ivr.flows.model import AskStep, Certainty, Choice, Reprompts, SlotDef, Target
from ivr.flows.slots import SlotValue, commit_yes_no_grammar
from ivr.grammar import Grammar

__all__ = ["AskVisit", "Asking", "Leave", "Reply", "Reprompt"]


@dataclass(frozen=True, slots=True)
class Reprompt:
    """Say `prompt` (a template; `plain`: words as they are, which may hold what the
    caller said and so are never rendered) and listen again."""

    prompt: str
    plain: bool = False


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
    unsure: str | None = None  # why a voice answer is being checked, not acted on


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


Asking = Literal["answer", "confirm", "check"]
"""Which question the visit waits on: the step's own, its read-back `confirm`, or the
check of an unsure voice answer ("cleaning, right?")."""


@dataclass(slots=True)
class AskVisit:
    """The ask step `name` while the call waits at it; `slot` is the definition of the
    slot it fills (None for a menu); `certainty` and `stakes` decide which voice answers
    it acts on and which it checks first (`ivr.flows.engine.verify`)."""

    name: str
    step: AskStep
    slot: SlotDef | None
    certainty: Certainty = field(default_factory=Certainty)
    stakes: Stakes = field(default_factory=lambda: Stakes(slot=False, choices=()))
    attempts: int = 0
    no_input: int = 0
    no_match: int = 0
    asking: Asking = "answer"
    keys_only: bool = False  # an unsure spoken yes/no: only keys answer now
    pending: Choice | SlotValue | None = None  # the answer being checked
    check: str = ""  # the check question being asked
    expected: Grammar | None = None  # the slot's grammar narrowed to the step's `expect`

    @property
    def confirming(self) -> bool:
        return self.asking == "confirm"

    def listen(self) -> Listen:
        mode: Mode = "keys" if self.keys_only else (
            "answer" if self.asking == "answer" else "yes_no")
        heard = listen(self.name, self.step, self.slot, mode=mode, expected=self.expected)
        own = self.asking == "answer" and self.slot is not None and bool(self.slot.phrases)
        if heard.grammar is not None and self._yes_no() and self._commits_on_yes() and not own:
            # A guessed yes here would act: speech that fits no phrase is a no-match.
            grammar = commit_yes_no_grammar()
            return replace(heard, grammar=grammar, phrases=grammar.phrases)
        return heard

    def answer(self, event: Speech | Digits | NoInput, now: Callable[[], datetime]) -> Reply:
        """What `event` comes to; `now` is read only to parse dates and times."""
        self.attempts += 1
        heard = _Heard.of(event)
        step = self.step
        if isinstance(event, NoInput):
            turn = self._turn(heard, "no_input")
            self.no_input += 1
            return Reply(turn, self._retry(self.no_input, step.no_input))
        if self.keys_only and isinstance(event, Speech):
            return self._no_match(heard)
        if self._yes_no():
            yes_no = parsed(YES_NO, step, event, now=now())
            if yes_no is None:
                return self._no_match(heard)
            if isinstance(event, Speech) and not self._sure_yes_no(event, yes_no.value is True):
                self.keys_only = True
                prompt = KEYS_TO_COMMIT if self._commits_on_yes() else KEYS_YES_NO
                why = f"{yes_no.text!r} at {event.confidence:.3f}" + (
                    "" if event.margin is None else f", margin {event.margin:.3f}")
                return Reply(self._turn(heard, "match", yes_no.text),
                             Reprompt(prompt, plain=True), unsure=why)
            self.keys_only = False
            return self._decided(heard, yes_no)
        answer: Choice | SlotValue | None
        if self.slot is not None:
            answer = parsed(self.slot, step, event, now=now())
        else:
            answer = chosen(step, event)
        if answer is None:
            return self._no_match(heard)
        understood = answer.label if isinstance(answer, Choice) else answer.text
        if isinstance(event, Speech) and self._check_needed(event, answer):
            self.asking, self.pending = "check", answer
            self.check = check_question(answer, self.slot)
            turn = self._turn(heard, "match", understood)
            why = f"{understood!r} at {event.confidence:.3f}" + (
                "" if event.margin is None else f", margin {event.margin:.3f}")
            return Reply(turn, Reprompt(self.check, plain=True), unsure=why)
        value = answer.text if isinstance(answer, SlotValue) else None
        return self._accept(self._turn(heard, "match", understood, value), answer)

    # ------------------------------------------------------ sure or not

    def _yes_no(self) -> bool:
        """Whether the question waited on takes a yes or a no."""
        if self.asking != "answer":
            return True
        return self.slot is not None and self.slot.type == "yes_no"

    def _commits_on_yes(self) -> bool:
        if self.asking == "check" and self.pending is not None:
            return self.stakes.commits(self.step, self.pending)
        return self.stakes.slot

    def _sure_yes_no(self, event: Speech, yes: bool) -> bool:
        if yes and self._commits_on_yes():
            return sure(event, self.certainty, commits=True)
        if self.asking == "check":
            return True  # never check the check: keys would only be asked for a commit
        verify = self.step.verify
        return verify == "never" or (verify == "auto" and sure(event, self.certainty,
                                                                commits=False))

    def _check_needed(self, event: Speech, answer: Choice | SlotValue) -> bool:
        verify = self.step.verify
        if self.slot is not None and self.slot.type == "text":
            # Free speech has no grammar to mistake one answer for another in, and its
            # score is on another scale (a name scores ~0.007 on the phone): the flow's
            # own `confirm` reads it back; only `always` checks it.
            return verify == "always"
        # The commit thresholds hold whatever `verify` says; flows lower them to opt out.
        if self.stakes.commits(self.step, answer) and not sure(
                event, self.certainty, commits=True):
            return True
        return verify == "always" or (verify == "auto" and not sure(
            event, self.certainty, commits=False))

    # ------------------------------------------------------ acting on it

    def _decided(self, heard: _Heard, yes_no: SlotValue) -> Reply:
        """A sure yes or no (spoken, or keys) to the question waited on."""
        step = self.step
        if self.asking == "answer":  # a yes_no slot
            turn = self._turn(heard, "match", yes_no.text, yes_no.text)
            return self._accept(turn, yes_no)
        asked, pending = self.asking, self.pending
        self.asking, self.pending = "answer", None
        if yes_no.value is True:
            if asked == "confirm":
                return Reply(self._turn(heard, "match", yes_no.text, confirm=True),
                             Leave(step.next))
            assert pending is not None
            value = pending.text if isinstance(pending, SlotValue) else None
            return self._accept(self._turn(heard, "match", yes_no.text, value, confirm=True),
                                pending)
        # "No": the answer heard was wrong, so it is forgotten and the question asked
        # again. To a check ("Cleaning, right?") it means we misheard: the step's
        # no-match reprompt for this attempt follows (it may offer keys). To the flow's
        # read-back (`confirm`) it may be a change of mind: the question itself. Either
        # counts as a no-match, so a caller who keeps saying no reaches the fallback
        # instead of looping forever.
        turn = self._turn(heard, "match", yes_no.text, confirm=True)
        self.no_match += 1
        again = step.no_match.prompt(self.no_match) if asked == "check" else None
        then = (self._give_up() if self.no_match > step.no_match.max
                else Reprompt(again or step.ask))
        return Reply(turn, then, forget=asked == "confirm")

    def _accept(self, turn: Turn, answer: Choice | SlotValue) -> Reply:
        if isinstance(answer, Choice):
            return Reply(turn, Leave(answer.goto))
        if self.step.confirm is None:
            return Reply(turn, Leave(self.step.next), answer)
        self.asking = "confirm"
        return Reply(turn, Reprompt(self.step.confirm), answer)

    def _no_match(self, heard: _Heard) -> Reply:
        turn = self._turn(heard, "no_match")
        self.no_match += 1
        return Reply(turn, self._retry(self.no_match, self.step.no_match))

    def _retry(self, count: int, reprompts: Reprompts) -> Reprompt | Leave:
        if count > reprompts.max:
            return self._give_up()
        if self.keys_only:
            return Reprompt(KEYS_TO_COMMIT if self._commits_on_yes() else KEYS_YES_NO,
                            plain=True)
        if self.asking == "check":
            return Reprompt(self.check, plain=True)
        if self.confirming:
            # Reprompts are written for the question, not for "is that right?".
            return Reprompt(self.step.confirm or self.step.ask)
        # No reprompt text of its own means: ask the question again.
        return Reprompt(reprompts.prompt(count) or self.step.ask)

    def _give_up(self) -> Leave:
        self.asking, self.pending, self.keys_only = "answer", None, False
        return Leave(self.step.fallback, gave_up=True)

    def _turn(
        self,
        heard: _Heard,
        result: Literal["match", "no_match", "no_input"],
        understood: str | None = None,
        value: str | None = None,
        *,
        confirm: bool = False,
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
            confirm or self.asking != "answer",
        )
