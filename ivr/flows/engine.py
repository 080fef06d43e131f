"""`FlowRunner`: the step machine. Events in, actions out; nothing else.

No audio, no I/O, no asyncio, no tools: the phone call, `ivr chat` and flow tests all
drive the same runner with text, digits, no-input and tool-result events, and carry
out its actions their own way. The only outside things it reads are the clock (`now`,
injectable) and the caller's number, both given to the constructor.

    runner = FlowRunner(flow, caller="+15550100001")
    runner.start()                  # [Play(greeting), Play(menu prompt), Listen(...)]
    runner.handle(Speech("sales"))  # [Play(answer), Play("Goodbye."), Hangup("completed")]
    runner.done, runner.outcome     # True, "completed"

After `start()` and after every `handle()` the runner is in one of three states:
- waiting for the caller at an ask step: the last action is a `Listen`; feed `Speech`,
  `Digits` or `NoInput` (`waiting_for == "input"`);
- waiting for a tool: the last action is a `CallTool`; run the tool and feed its
  result as `ToolDone` (`waiting_for == "tool"`);
- done: the last action is a `Hangup`, `GotoFlow` or `Transfer` (`done`).
`CallerHangup` ends the run in any state. Every input handled at an ask is recorded as
a `Turn` in `runner.turns`; what else happened (tool calls and results, slots set,
errors handled, the LLM step's fallback) is recorded as `Trace`s in `runner.trace`.
Slots filled are in `runner.slots` (name -> `SlotValue`), tool results in `runner.vars`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Literal, TypeAlias
from zoneinfo import ZoneInfo

from ivr.errors import FlowError, IvrError
from ivr.flows import templates
from ivr.flows.match import expected_phrases, match_choice, match_key
from ivr.flows.model import (
    AskStep,
    BranchStep,
    CallStep,
    Choice,
    Flow,
    FlowRef,
    HangupStep,
    LlmStep,
    SayStep,
    SetStep,
    Target,
    TransferStep,
)
from ivr.flows.slot_grammars import grammar_for
from ivr.flows.slots import (
    SlotDef,
    SlotValue,
    dtmf_max_digits,
    parse_keys,
    parse_text,
)
from ivr.grammar import Grammar

__all__ = [
    "Action",
    "AgentDone",
    "CallTool",
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
    "RunAgent",
    "Speech",
    "ToolDone",
    "Trace",
    "Transfer",
    "Turn",
    "coerce_value",
    "looks_like_number",
]

Outcome: TypeAlias = Literal["completed", "fallback", "hangup", "goto_flow", "transferred", "error"]
"""How a run ended: reached its end normally; ended after an ask ran out of reprompts;
the caller hung up; handed over to another flow; transferred to a phone number; the
flow failed (a step loop, a tool or template failure with no on_error)."""

DEFAULT_INTER_DIGIT_MS = 3000
DEFAULT_MAX_STEPS = 100
DEFAULT_MAX_TOOL_CALLS = 50
# Keys to collect for answers of no fixed length (phone numbers, free numbers): the
# terminator or the inter-digit gap ends them well before this.
VARIABLE_MAX_DIGITS = 32
NO_LLM = "no LLM configured"

YES_NO = SlotDef(type="yes_no")

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

    `phrases` is the recognizer's phrase list (empty: free speech, or see `grammar`).
    `grammar` is the full recognizer grammar: phrases for menus, choice and yes/no
    answers, a JSGF grammar for dates, times, numbers and digit strings, None for free
    speech. `slot` names the slot this answer fills (None for menus and confirmations).
    `dtmf` is None when keys are not accepted. A None timing means "use the service's
    configured default". `barge_in` repeats the prompt's setting so the session may
    listen while it plays.
    """

    step: str
    phrases: tuple[str, ...]
    dtmf: DtmfSpec | None
    timeout_ms: int | None
    end_silence_ms: int | None
    max_utterance_ms: int | None
    speech: bool
    barge_in: bool
    slot: str | None = None
    grammar: Grammar | None = None


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call; `reason` is the run's outcome."""

    reason: Outcome


@dataclass(frozen=True, slots=True)
class GotoFlow:
    """Continue the call in the flow called `name` (this run is then done)."""

    name: str


@dataclass(frozen=True, slots=True)
class CallTool:
    """Run tool `tool` with `args` (JSON values), then feed the result as `ToolDone`."""

    step: str
    tool: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Transfer:
    """Transfer the call to `number` (this run is then done, outcome "transferred")."""

    step: str
    number: str


@dataclass(frozen=True, slots=True)
class RunAgent:
    """Run an LLM agent for an `llm` step (only when the runner was built with
    `agent=True`); feed its end as `AgentDone`, and its slot/var updates through
    `FlowRunner.agent_update` while it runs (that also evaluates `exit_when`)."""

    step: str
    system: str
    tools: tuple[str, ...]
    max_rounds: int
    slots: tuple[str, ...]  # the flow's slots the model may fill


Action: TypeAlias = Play | Listen | Hangup | GotoFlow | CallTool | Transfer | RunAgent

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


@dataclass(frozen=True, slots=True)
class ToolDone:
    """The result of the last `CallTool`: `value` when `ok`, else `error` (words)."""

    ok: bool
    value: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AgentDone:
    """How an agent step ended: `ok` reasons ("exit", "model") go to `next`; anything
    else ("transfer", "max_rounds", "error") takes the step's `fallback`."""

    ok: bool
    reason: str
    detail: str = ""


Event: TypeAlias = Speech | Digits | NoInput | CallerHangup | ToolDone | AgentDone


@dataclass(frozen=True, slots=True)
class Turn:
    """One handled input at an ask step: what came in and what the flow made of it."""

    step: str
    attempt: int  # 1-based count of inputs handled at this visit of the step
    input: Literal["speech", "dtmf", "none"]
    text: str | None  # recognized text or pressed digits
    confidence: float | None
    result: Literal["match", "no_match", "no_input"]
    understood: str | None  # the matched choice's label, the slot value's text, yes/no
    slot: str | None = None  # the slot the step fills
    value: str | None = None  # the slot value's text when this input filled it
    confirm: bool = False  # an answer to the step's confirmation question


TraceKind: TypeAlias = Literal[
    "set",
    "tool_call",
    "tool_done",
    "tool_failed",
    "template_failed",
    "llm_fallback",
    "transfer",
    "ignored",
    "agent_slot_rejected",
    "agent_done",
]


@dataclass(frozen=True, slots=True)
class Trace:
    """Something the runner did or decided besides handling an answer."""

    step: str | None
    kind: TraceKind
    detail: str


# ---------------------------------------------------------------- values


def coerce_value(slot: SlotDef, value: Any, *, now: datetime) -> SlotValue | None:
    """`value` (text to parse, or an already typed value) as a value of `slot`, or None."""
    kind = slot.type
    if isinstance(value, str):
        return parse_text(slot, value, now=now)
    if isinstance(value, bool):
        return SlotValue(value, "yes" if value else "no") if kind == "yes_no" else None
    if isinstance(value, int | float) and kind == "number":
        if isinstance(value, float) and not value.is_integer():
            return None
        number = int(value)
        if (slot.min is not None and number < slot.min) or (
            slot.max is not None and number > slot.max
        ):
            return None
        return SlotValue(number, str(number))
    if isinstance(value, datetime):
        # A datetime (a tool's ISO timestamp, `now`) is a date or a time as the slot needs.
        if kind == "date":
            return SlotValue(value.date(), value.date().isoformat())
        if kind == "time":
            return SlotValue(value.time(), value.strftime("%H:%M"))
        return None
    if isinstance(value, date):
        return SlotValue(value, value.isoformat()) if kind == "date" else None
    if isinstance(value, time):
        return SlotValue(value, value.strftime("%H:%M")) if kind == "time" else None
    if isinstance(value, int | float):
        return parse_text(slot, str(value), now=now)
    return None


_PHONE_RE = re.compile(r"^\+?[0-9][0-9 ().\-]*$")


def looks_like_number(text: str) -> bool:
    """A number a transfer can dial: 3 to 15 digits (`+` and separators allowed), or sip:."""
    text = text.strip()
    if text.startswith("sip:"):
        return len(text) > 4
    digits = sum(ch.isdigit() for ch in text)
    return bool(_PHONE_RE.match(text)) and 3 <= digits <= 15


class _Failure(IvrError):
    """A step could not be carried out (a template, a value, a tool); take on_error."""

    def __init__(self, message: str, *, template: bool) -> None:
        super().__init__(message)
        self.message = message
        self.template = template


# ------------------------------------------------------------------- runner


class FlowRunner:
    """Runs one call through one flow. Not thread-safe; one runner per call.

    `now` is the clock templates and date parsing read (default: the real clock); its
    result is shown in the flow's time zone, and a naive result is taken to be in it.
    """

    def __init__(
        self,
        flow: Flow,
        *,
        max_steps: int = DEFAULT_MAX_STEPS,
        now: Callable[[], datetime] | None = None,
        caller: str = "",
        max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS,
        agent: bool = False,
    ) -> None:
        self.agent = agent  # an LLM is configured: `llm` steps run agents
        self.flow = flow
        self.max_steps = max_steps
        self.max_tool_calls = max_tool_calls
        self.caller = caller
        self.tz = ZoneInfo(flow.timezone)
        self._clock = now
        self.turns: list[Turn] = []
        self.trace: list[Trace] = []
        self.slots: dict[str, SlotValue] = {}
        self.vars: dict[str, Any] = {}
        self.error: str | None = None
        self._started = False
        self._outcome: Outcome | None = None
        self._current: str | None = None
        self._ask: AskStep | None = None
        self._confirming = False
        self._tool: CallStep | None = None
        self._agent: LlmStep | None = None
        self._tool_calls = 0
        self._fell_back = False
        self._handled_template_failure = False
        self._attempts = 0
        self._no_input = 0
        self._no_match = 0

    # ------------------------------------------------------------ state

    @property
    def done(self) -> bool:
        return self._outcome is not None

    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    @property
    def current_step(self) -> str | None:
        """The step waiting (ask or call), or once done the last step entered (drop-off)."""
        return self._current

    @property
    def waiting_for(self) -> Literal["input", "tool", "agent"] | None:
        if self._ask is not None:
            return "input"
        if self._tool is not None:
            return "tool"
        if self._agent is not None:
            return "agent"
        return None

    @property
    def waiting(self) -> bool:
        """Whether the runner needs an event (an answer or a tool result) to go on."""
        return self.waiting_for is not None

    @property
    def confirming(self) -> bool:
        """Whether the waiting ask is asking its yes/no confirmation question."""
        return self._ask is not None and self._confirming

    def now(self) -> datetime:
        """The current time in the flow's time zone."""
        if self._clock is None:
            return datetime.now(self.tz)
        moment = self._clock()
        if moment.tzinfo is None or moment.utcoffset() is None:
            return moment.replace(tzinfo=self.tz)
        return moment.astimezone(self.tz)

    def context(self) -> templates.TemplateContext:
        """What templates see right now."""
        return templates.TemplateContext(
            slots={name: value.value for name, value in self.slots.items()},
            vars=self.vars,
            caller=self.caller,
            now=self.now(),
        )

    # ---------------------------------------------------------- driving

    def start(self) -> list[Action]:
        if self._started:
            raise FlowError("FlowRunner.start() called twice")
        self._started = True
        out: list[Action] = []
        self._go(self.flow.start, out)
        return out

    def handle(self, event: Event) -> list[Action]:
        """Feed one event; returns the actions it causes ([] once the run is done)."""
        if not self._started:
            raise FlowError("FlowRunner.handle() before start()")
        if self.done:
            # Late results (a recognition finishing after hangup) are normal on a phone
            # line and must not break the call.
            return []
        out: list[Action] = []
        if isinstance(event, CallerHangup):
            self._finish("hangup", out, announce=False)
            return out
        try:
            if isinstance(event, AgentDone):
                if self._agent is None:
                    self._note("ignored", "an agent result while no agent was running")
                    return out
                self._agent_done(self._agent, event, out)
            elif isinstance(event, ToolDone):
                if self._tool is None:
                    self._note("ignored", "a tool result while no tool was running")
                    return out
                self._tool_done(self._tool, event, out)
            elif self._ask is None:
                # The session should not send answers while a tool runs; an answer that
                # slips through (keys pressed during the lookup) is dropped, not fatal.
                self._note("ignored", f"{type(event).__name__} while waiting for a tool")
            else:
                self._answer(self._ask, event, out)
        except _Failure as failure:
            self._failed(failure, out)
        return out

    # ------------------------------------------------------------ asks

    def _answer(self, step: AskStep, event: Speech | Digits | NoInput, out: list[Action]) -> None:
        name = self._current
        assert name is not None  # waiting at an ask => it was entered
        self._attempts += 1
        if isinstance(event, NoInput):
            self._record(name, "none", None, None, "no_input", None, step)
            self._no_input += 1
            self._retry(name, step, self._no_input, step.no_input.max, step.no_input.prompt, out)
            return
        if isinstance(event, Speech):
            kind: Literal["speech", "dtmf"] = "speech"
            heard, confidence = event.text, event.confidence
        else:
            kind, heard, confidence = "dtmf", event.digits, None
        if self._confirming:
            self._confirmation(name, step, event, kind, heard, confidence, out)
        elif step.slot is not None:
            self._fill(name, step, step.slot, event, kind, heard, confidence, out)
        else:
            self._choose(name, step, event, kind, heard, confidence, out)

    def _choose(
        self,
        name: str,
        step: AskStep,
        event: Speech | Digits,
        kind: Literal["speech", "dtmf"],
        heard: str,
        confidence: float | None,
        out: list[Action],
    ) -> None:
        choice: Choice | None
        if isinstance(event, Speech):
            choice = match_choice(event.text, step.choices)
        else:
            terminator = step.dtmf.terminator if step.dtmf is not None else "#"
            choice = match_key(event.digits, step.choices, terminator)
        if choice is None:
            self._no_match_retry(name, step, kind, heard, confidence, out)
            return
        self._record(name, kind, heard, confidence, "match", choice.label, step)
        self._go(choice.goto, out)

    def _parse(self, slot: SlotDef, event: Speech | Digits, step: AskStep) -> SlotValue | None:
        if isinstance(event, Speech):
            return parse_text(slot, event.text, now=self.now())
        digits = event.digits.strip()
        terminator = step.dtmf.terminator if step.dtmf is not None else "#"
        if terminator and len(digits) > 1 and digits.endswith(terminator):
            digits = digits[: -len(terminator)]
        return parse_keys(slot, digits, now=self.now())

    def _fill(
        self,
        name: str,
        step: AskStep,
        slot_name: str,
        event: Speech | Digits,
        kind: Literal["speech", "dtmf"],
        heard: str,
        confidence: float | None,
        out: list[Action],
    ) -> None:
        value = self._parse(self._slot_def(slot_name), event, step)
        if value is None:
            self._no_match_retry(name, step, kind, heard, confidence, out)
            return
        self.slots[slot_name] = value
        self.turns.append(
            Turn(
                name,
                self._attempts,
                kind,
                heard,
                confidence,
                "match",
                value.text,
                slot_name,
                value.text,
            )
        )
        if step.confirm is None:
            self._after_ask(step, out)
            return
        self._confirming = True
        out.append(Play(self._text(step.confirm), step.barge_in, name))
        out.append(self._listen(name, step))

    def _confirmation(
        self,
        name: str,
        step: AskStep,
        event: Speech | Digits,
        kind: Literal["speech", "dtmf"],
        heard: str,
        confidence: float | None,
        out: list[Action],
    ) -> None:
        answer = self._parse(YES_NO, event, step)
        if answer is None:
            self._no_match_retry(name, step, kind, heard, confidence, out)
            return
        self.turns.append(
            Turn(
                name,
                self._attempts,
                kind,
                heard,
                confidence,
                "match",
                answer.text,
                step.slot,
                None,
                True,
            )
        )
        if answer.value is True:
            self._confirming = False
            self._after_ask(step, out)
            return
        # "No": the value heard was wrong, so it is forgotten and the question asked
        # again. A rejection counts as a no-match, so a caller who keeps saying no
        # reaches the fallback instead of looping forever.
        self._confirming = False
        if step.slot is not None:
            self.slots.pop(step.slot, None)
        self._no_match += 1
        if self._no_match > step.no_match.max:
            self._give_up(step, out)
            return
        out.append(Play(self._text(step.ask), step.barge_in, name))
        out.append(self._listen(name, step))

    def _after_ask(self, step: AskStep, out: list[Action]) -> None:
        if step.next is None:
            self._finish(self._normal_end(), out)
        else:
            self._go(step.next, out)

    def _no_match_retry(
        self,
        name: str,
        step: AskStep,
        kind: Literal["speech", "dtmf"],
        heard: str,
        confidence: float | None,
        out: list[Action],
    ) -> None:
        self._record(name, kind, heard, confidence, "no_match", None, step)
        self._no_match += 1
        self._retry(name, step, self._no_match, step.no_match.max, step.no_match.prompt, out)

    def _record(
        self,
        step: str,
        kind: Literal["speech", "dtmf", "none"],
        text: str | None,
        confidence: float | None,
        result: Literal["match", "no_match", "no_input"],
        understood: str | None,
        ask: AskStep,
    ) -> None:
        self.turns.append(
            Turn(
                step,
                self._attempts,
                kind,
                text,
                confidence,
                result,
                understood,
                ask.slot,
                None,
                self._confirming,
            )
        )

    def _retry(
        self,
        name: str,
        step: AskStep,
        count: int,
        limit: int,
        prompt_for: Callable[[int], str | None],
        out: list[Action],
    ) -> None:
        if count > limit:
            self._give_up(step, out)
            return
        if self._confirming:
            # Reprompts are written for the question, not for "is that right?".
            prompt = step.confirm or step.ask
        else:
            # No reprompt text of its own means: ask the question again.
            prompt = prompt_for(count) or step.ask
        out.append(Play(self._text(prompt), step.barge_in, name))
        out.append(self._listen(name, step))

    def _give_up(self, step: AskStep, out: list[Action]) -> None:
        self._fell_back = True
        self._confirming = False
        if step.fallback is None:
            self._finish("fallback", out)
        else:
            self._go(step.fallback, out)

    # ------------------------------------------------------------- agents

    def agent_update(self, slots: Mapping[str, Any], variables: Mapping[str, Any]) -> bool:
        """Take slot values (coerced to their types; bad ones ignored) and vars from a
        running agent; returns whether one of the step's `exit_when` conditions holds."""
        step = self._agent
        for name, value in slots.items():
            slot = self.flow.slots.get(name)
            typed = coerce_value(slot, value, now=self.now()) if slot is not None else None
            if typed is not None:
                self.slots[name] = typed
            else:
                self._note("agent_slot_rejected", f"{name}={value!r}", self._current)
        self.vars.update(variables)
        if step is None or not step.exit_when:
            return False
        context = self.context()
        try:
            return any(self._condition(c, context) for c in step.exit_when)
        except _Failure:
            return False  # a condition over values the agent has not produced yet

    def _agent_done(self, step: LlmStep, event: AgentDone, out: list[Action]) -> None:
        self._agent = None
        self._note("agent_done", f"{event.reason}: {event.detail}".rstrip(": "), self._current)
        if event.ok:
            if step.next is None:
                self._finish(self._normal_end(), out)
            else:
                self._go(step.next, out)
        else:
            self._go(step.fallback, out)

    # ------------------------------------------------------------- tools

    def _tool_done(self, step: CallStep, event: ToolDone, out: list[Action]) -> None:
        name = self._current
        self._tool = None
        if event.ok:
            self._note("tool_done", step.call, name)
            if step.result is not None:
                self.vars[step.result] = dict(event.value)
            if step.next is None:
                self._finish(self._normal_end(), out)
            else:
                self._go(step.next, out)
            return
        message = f"tool {step.call} failed: {event.error or 'no reason given'}"
        self._note("tool_failed", message, name)
        target = step.on_error if step.on_error is not None else self.flow.on_error
        if target is None:
            self._fail(message, out)
        else:
            self._go(target, out)

    # ------------------------------------------------------------- steps

    def _go(self, target: Target, out: list[Action]) -> None:
        """Run steps from `target` until one waits for input or a tool, or the run ends."""
        self._ask = None
        self._tool = None
        self._agent = None
        self._confirming = False
        for _ in range(self.max_steps):
            try:
                following = self._enter(target, out)
            except _Failure as failure:
                following = self._recover(failure, out)
            if following is None:
                return
            target = following
        self._fail(f"more than {self.max_steps} steps without waiting for the caller", out)

    def _enter(self, target: Target, out: list[Action]) -> Target | None:
        """Carry out one step; the step to go on with, or None (waiting or done)."""
        if isinstance(target, FlowRef):
            out.append(GotoFlow(target.flow))
            self._outcome = "goto_flow"
            return None
        step = self.flow.steps.get(target)
        if step is None:
            # The loader rejects such flows; this guards flows built in code.
            self._fail(f"step '{target}' does not exist", out)
            return None
        self._current = target
        if isinstance(step, SayStep):
            text = self._text(step.say)
            if text:
                out.append(Play(text, step.barge_in, target))
            return self._next_or_end(step.next, out)
        if isinstance(step, AskStep):
            prompt = self._text(step.ask)
            self._ask = step
            self._attempts = self._no_input = self._no_match = 0
            out.append(Play(prompt, step.barge_in, target))
            out.append(self._listen(target, step))
            return None
        if isinstance(step, SetStep):
            self._set(target, step)
            return self._next_or_end(step.next, out)
        if isinstance(step, BranchStep):
            context = self.context()
            for case in step.branch:
                if self._condition(case.if_, context):
                    return case.goto
            return step.else_
        if isinstance(step, CallStep):
            self._call(target, step, out)
            return None
        if isinstance(step, LlmStep):
            if self.agent:
                self._agent = step
                out.append(RunAgent(target, self._text(step.llm), step.tools, step.max_rounds,
                                    tuple(self.flow.slots)))
                return None
            # No LLM configured: the flow's own fallback path serves the call, and the
            # trace says why, so a transcript explains the detour.
            self._note("llm_fallback", NO_LLM, target)
            return step.fallback
        if isinstance(step, TransferStep):
            before = self._text(step.say) if step.say is not None else ""
            number = self._text(step.transfer).strip()
            if not looks_like_number(number):
                raise _Failure(f"transfer number {number!r} is not a phone number", template=True)
            if before:
                out.append(Play(before, False, target))
            self._note("transfer", number, target)
            out.append(Transfer(target, number))
            self._outcome = "transferred"
            return None
        assert isinstance(step, HangupStep)
        if step.hangup:
            words = self._text(step.hangup)
            if words:
                out.append(Play(words, False, target))
        self._finish(self._normal_end(), out)
        return None

    def _next_or_end(self, target: Target | None, out: list[Action]) -> Target | None:
        if target is None:
            self._finish(self._normal_end(), out)
        return target

    def _set(self, name: str, step: SetStep) -> None:
        context = self.context()
        values: dict[str, SlotValue] = {}
        for key, source in step.set.items():
            raw = self._value(source, context)
            slot = self._slot_def(key)
            value = coerce_value(slot, raw, now=context.now or self.now())
            if value is None:
                raise _Failure(f"set {key}: {raw!r} is not a valid {slot.type}", template=True)
            values[key] = value
        # All or nothing: a failing value leaves every slot as it was.
        self.slots.update(values)
        for key, value in values.items():
            self._note("set", f"{key} = {value.text}", name)

    def _call(self, name: str, step: CallStep, out: list[Action]) -> None:
        if self._tool_calls >= self.max_tool_calls:
            self._fail(f"more than {self.max_tool_calls} tool calls", out)
            return
        context = self.context()
        args = {key: templates.jsonable(self._value(v, context)) for key, v in step.args.items()}
        self._tool_calls += 1
        self._tool = step
        self._note("tool_call", step.call, name)
        out.append(CallTool(name, step.call, args))

    def _slot_def(self, name: str) -> SlotDef:
        # The loader makes every slot used a declared one; a flow built in code gets text.
        return self.flow.slots.get(name) or SlotDef(type="text")

    # --------------------------------------------------------- templates

    def _text(self, source: str) -> str:
        try:
            return templates.render_text(source, self.context()).strip()
        except templates.TemplateFailure as exc:
            raise _Failure(exc.message, template=True) from None

    def _value(self, source: Any, context: templates.TemplateContext) -> Any:
        try:
            return templates.render_value(source, context)
        except templates.TemplateFailure as exc:
            raise _Failure(exc.message, template=True) from None

    def _condition(self, source: str, context: templates.TemplateContext) -> bool:
        try:
            return templates.evaluate(source, context)
        except templates.TemplateFailure as exc:
            raise _Failure(exc.message, template=True) from None

    def _recover(self, failure: _Failure, out: list[Action]) -> Target | None:
        """Where a failed step goes: the flow's on_error, taken once, else the end."""
        self._note("template_failed", failure.message, self._current)
        target = self.flow.on_error
        if target is None or self._handled_template_failure:
            # A second failure usually means the error path itself is broken (its
            # prompt reads the same missing value); going round again would loop.
            self._fail(failure.message, out)
            return None
        self._handled_template_failure = True
        self._ask = None
        self._tool = None
        self._confirming = False
        return target

    def _failed(self, failure: _Failure, out: list[Action]) -> None:
        target = self._recover(failure, out)
        if target is not None:
            self._go(target, out)

    # -------------------------------------------------------------- ends

    def _note(self, kind: TraceKind, detail: str, step: str | None = None) -> None:
        self.trace.append(Trace(step if step is not None else self._current, kind, detail))

    def _normal_end(self) -> Outcome:
        return "fallback" if self._fell_back else "completed"

    def _finish(self, outcome: Outcome, out: list[Action], *, announce: bool = True) -> None:
        self._ask = None
        self._tool = None
        self._confirming = False
        self._outcome = outcome
        if announce:
            out.append(Hangup(outcome))

    def _fail(self, message: str, out: list[Action]) -> None:
        self.error = message
        self._finish("error", out)

    def _listen(self, name: str, step: AskStep) -> Listen:
        options = step.dtmf
        terminator = options.terminator if options is not None else "#"
        inter_digit = options.inter_digit_ms if options is not None else DEFAULT_INTER_DIGIT_MS
        slot = self._slot_def(step.slot) if step.slot is not None else None
        if self._confirming or slot is not None:
            answer = YES_NO if self._confirming or slot is None else slot
            grammar: Grammar | None = grammar_for(answer) if step.speech else None
            if grammar is not None and not grammar.phrases and grammar.jsgf is None:
                grammar = None  # free speech (text slots)
            # `phrases` alone constrains a recognizer that does not read `grammar`; for a
            # JSGF answer they are only examples, so such a recognizer gets free speech.
            phrases = grammar.phrases if grammar is not None and grammar.jsgf is None else ()
            if self._confirming:
                max_digits: int | None = 1  # 1 = yes, 2 = no
            else:
                max_digits = (options.max_digits if options is not None else None) or (
                    dtmf_max_digits(answer)
                )
            return Listen(
                step=name,
                phrases=phrases,
                dtmf=DtmfSpec(max_digits or VARIABLE_MAX_DIGITS, terminator, inter_digit),
                timeout_ms=step.timeout_ms,
                end_silence_ms=step.end_silence_ms,
                max_utterance_ms=step.max_utterance_ms,
                speech=step.speech,
                barge_in=step.barge_in,
                slot=None if self._confirming else step.slot,
                grammar=grammar,
            )
        keys = [c.key for c in step.choices if c.key is not None]
        dtmf: DtmfSpec | None = None
        if keys or options is not None:
            longest = max((len(k) for k in keys), default=1)
            dtmf = DtmfSpec(
                max_digits=(options.max_digits or longest) if options is not None else longest,
                terminator=terminator,
                inter_digit_ms=inter_digit,
            )
        phrases = expected_phrases(step) if step.speech else ()
        return Listen(
            step=name,
            phrases=phrases,
            dtmf=dtmf,
            timeout_ms=step.timeout_ms,
            end_silence_ms=step.end_silence_ms,
            max_utterance_ms=step.max_utterance_ms,
            speech=step.speech,
            barge_in=step.barge_in,
            grammar=Grammar(phrases) if phrases else None,
        )
