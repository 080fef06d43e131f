"""`FlowRunner`: the step machine. Events in, actions out; nothing else.

No audio, no I/O, no clock, no asyncio: the phone call, `ivr chat` and flow tests all
drive the same runner with text, digits and no-input events, and play its actions
their own way.

    runner = FlowRunner(flow)
    runner.start()                  # [Play(greeting), Play(menu prompt), Listen(...)]
    runner.handle(Speech("sales"))  # [Play(answer), Play("Goodbye."), Hangup("completed")]
    runner.done, runner.outcome     # True, "completed"

After `start()` the runner is either waiting at an ask step (the last action is then a
`Listen`) or done (the last action is a `Hangup` or `GotoFlow`). Every input handled
at an ask is recorded as a `Turn` in `runner.turns`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from ivr.flows.match import expected_phrases, match_choice, match_key
from ivr.flows.model import AskStep, Choice, Flow, FlowRef, HangupStep, SayStep, Target

__all__ = [
    "Action",
    "CallerHangup",
    "Digits",
    "DtmfSpec",
    "Event",
    "FlowRunner",
    "GotoFlow",
    "Hangup",
    "Listen",
    "NoInput",
    "Outcome",
    "Play",
    "Speech",
    "Turn",
]

Outcome: TypeAlias = Literal["completed", "fallback", "hangup", "goto_flow", "error"]
"""How a run ended: reached its end normally; ended after an ask ran out of reprompts;
the caller hung up; handed over to another flow; the flow misbehaved (step loop)."""

DEFAULT_INTER_DIGIT_MS = 3000
DEFAULT_MAX_STEPS = 100

# ------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class Play:
    """Speak `text`; `barge_in` says whether caller speech or keys may cut it short."""

    text: str
    barge_in: bool
    step: str


@dataclass(frozen=True, slots=True)
class DtmfSpec:
    """Keypad collection: done at `max_digits`, at `terminator`, or after an inter-digit gap."""

    max_digits: int
    terminator: str | None
    inter_digit_ms: int


@dataclass(frozen=True, slots=True)
class Listen:
    """Wait for the caller's answer to `step`, after the prompts queued before it.

    `phrases` is the recognizer grammar (empty: free speech). `dtmf` is None when keys
    are not accepted. A None timing means "use the service's configured default".
    `barge_in` repeats the prompt's setting so the session may listen while it plays.
    """

    step: str
    phrases: tuple[str, ...]
    dtmf: DtmfSpec | None
    timeout_ms: int | None
    end_silence_ms: int | None
    max_utterance_ms: int | None
    speech: bool
    barge_in: bool


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call; `reason` is the run's outcome."""

    reason: Outcome


@dataclass(frozen=True, slots=True)
class GotoFlow:
    """Continue the call in the flow called `name` (this run is then done)."""

    name: str


Action: TypeAlias = Play | Listen | Hangup | GotoFlow

# ------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Speech:
    """What the caller said (recognized) or typed."""

    text: str
    confidence: float = 1.0


@dataclass(frozen=True, slots=True)
class Digits:
    """Keys the caller pressed, as collected per the step's `DtmfSpec`."""

    digits: str


@dataclass(frozen=True, slots=True)
class NoInput:
    """The caller said and pressed nothing before the timeout."""


@dataclass(frozen=True, slots=True)
class CallerHangup:
    """The caller hung up."""


Event: TypeAlias = Speech | Digits | NoInput | CallerHangup


@dataclass(frozen=True, slots=True)
class Turn:
    """One handled input at an ask step: what came in and what the flow made of it."""

    step: str
    attempt: int  # 1-based count of inputs handled at this visit of the step
    input: Literal["speech", "dtmf", "none"]
    text: str | None  # recognized text or pressed digits
    confidence: float | None
    result: Literal["match", "no_match", "no_input"]
    understood: str | None  # the matched choice's label


# ------------------------------------------------------------------- runner


class FlowRunner:
    """Runs one call through one flow. Not thread-safe; one runner per call."""

    def __init__(self, flow: Flow, *, max_steps: int = DEFAULT_MAX_STEPS) -> None:
        self.flow = flow
        self.max_steps = max_steps
        self.turns: list[Turn] = []
        self.error: str | None = None
        self._started = False
        self._outcome: Outcome | None = None
        self._current: str | None = None
        self._waiting: AskStep | None = None
        self._fell_back = False
        self._attempts = 0
        self._no_input = 0
        self._no_match = 0

    @property
    def done(self) -> bool:
        return self._outcome is not None

    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    @property
    def current_step(self) -> str | None:
        """The ask waiting for input, or once done the last step entered (drop-off point)."""
        return self._current

    @property
    def waiting(self) -> bool:
        return self._waiting is not None

    def start(self) -> list[Action]:
        if self._started:
            raise RuntimeError("FlowRunner.start() called twice")
        self._started = True
        out: list[Action] = []
        self._go(self.flow.start, out)
        return out

    def handle(self, event: Event) -> list[Action]:
        """Feed one event; returns the actions it causes ([] once the run is done)."""
        if not self._started:
            raise RuntimeError("FlowRunner.handle() before start()")
        if self.done:
            # Late results (a recognition finishing after hangup) are normal on a phone
            # line and must not break the call.
            return []
        out: list[Action] = []
        if isinstance(event, CallerHangup):
            self._finish("hangup", out, announce=False)
            return out
        step, name = self._waiting, self._current
        assert step is not None and name is not None  # started and not done => waiting
        self._attempts += 1
        if isinstance(event, NoInput):
            self._record(name, "none", None, None, "no_input", None)
            self._no_input += 1
            self._retry(name, step, self._no_input, step.no_input.max, step.no_input.prompt, out)
            return out
        choice: Choice | None
        if isinstance(event, Speech):
            choice = match_choice(event.text, step.choices)
            kind: Literal["speech", "dtmf"] = "speech"
            heard, confidence = event.text, event.confidence
        else:
            terminator = step.dtmf.terminator if step.dtmf is not None else "#"
            choice = match_key(event.digits, step.choices, terminator)
            kind, heard, confidence = "dtmf", event.digits, None
        if choice is None:
            self._record(name, kind, heard, confidence, "no_match", None)
            self._no_match += 1
            self._retry(name, step, self._no_match, step.no_match.max, step.no_match.prompt, out)
            return out
        self._record(name, kind, heard, confidence, "match", choice.label)
        self._go(choice.goto, out)
        return out

    # -------------------------------------------------------------- internals

    def _record(
        self,
        step: str,
        kind: Literal["speech", "dtmf", "none"],
        text: str | None,
        confidence: float | None,
        result: Literal["match", "no_match", "no_input"],
        understood: str | None,
    ) -> None:
        self.turns.append(Turn(step, self._attempts, kind, text, confidence, result, understood))

    def _retry(
        self,
        name: str,
        step: AskStep,
        count: int,
        limit: int,
        prompt_for: Callable[[int], str | None],
        out: list[Action],
    ) -> None:
        if count <= limit:
            # No reprompt text of its own means: ask the question again.
            out.append(Play(prompt_for(count) or step.ask, step.barge_in, name))
            out.append(self._listen(name, step))
            return
        self._fell_back = True
        if step.fallback is None:
            self._finish("fallback", out)
        else:
            self._go(step.fallback, out)

    def _go(self, target: Target, out: list[Action]) -> None:
        """Run steps from `target` until one waits for input or the run ends."""
        self._waiting = None
        for _ in range(self.max_steps):
            if isinstance(target, FlowRef):
                out.append(GotoFlow(target.flow))
                self._outcome = "goto_flow"
                return
            step = self.flow.steps.get(target)
            if step is None:
                # The loader rejects such flows; this guards flows built in code.
                self._fail(f"step '{target}' does not exist", out)
                return
            self._current = target
            if isinstance(step, SayStep):
                out.append(Play(step.say, step.barge_in, target))
                if step.next is None:
                    self._finish(self._normal_end(), out)
                    return
                target = step.next
            elif isinstance(step, AskStep):
                self._waiting = step
                self._attempts = self._no_input = self._no_match = 0
                out.append(Play(step.ask, step.barge_in, target))
                out.append(self._listen(target, step))
                return
            elif isinstance(step, HangupStep):
                if step.hangup:
                    out.append(Play(step.hangup, False, target))
                self._finish(self._normal_end(), out)
                return
        self._fail(f"more than {self.max_steps} steps without waiting for the caller", out)

    def _normal_end(self) -> Outcome:
        return "fallback" if self._fell_back else "completed"

    def _finish(self, outcome: Outcome, out: list[Action], *, announce: bool = True) -> None:
        self._waiting = None
        self._outcome = outcome
        if announce:
            out.append(Hangup(outcome))

    def _fail(self, message: str, out: list[Action]) -> None:
        self.error = message
        self._finish("error", out)

    @staticmethod
    def _listen(name: str, step: AskStep) -> Listen:
        keys = [c.key for c in step.choices if c.key is not None]
        dtmf: DtmfSpec | None = None
        if keys or step.dtmf is not None:
            options = step.dtmf
            longest = max((len(k) for k in keys), default=1)
            dtmf = DtmfSpec(
                max_digits=(options.max_digits or longest) if options is not None else longest,
                terminator=options.terminator if options is not None else "#",
                inter_digit_ms=(
                    options.inter_digit_ms if options is not None else DEFAULT_INTER_DIGIT_MS
                ),
            )
        return Listen(
            step=name,
            phrases=expected_phrases(step) if step.speech else (),
            dtmf=dtmf,
            timeout_ms=step.timeout_ms,
            end_silence_ms=step.end_silence_ms,
            max_utterance_ms=step.max_utterance_ms,
            speech=step.speech,
            barge_in=step.barge_in,
        )
