"""`FlowRunner`: the step machine. Events in, actions out; nothing else.

No audio, no I/O, no asyncio, no tools: it reads only the clock (`now`, injectable) and
the caller's number, both given to the constructor. The states it can be in, and how a
driver uses it, are in the docstring of `ivr.flows.engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from ivr.errors import FlowError, IvrError
from ivr.flows import templates
from ivr.flows.engine.actions import (
    Action,
    CallTool,
    GotoFlow,
    Hangup,
    Outcome,
    Play,
    RunAgent,
    Transfer,
)
from ivr.flows.engine.asks import AskVisit, Reprompt
from ivr.flows.engine.collection import narrowed
from ivr.flows.engine.events import (
    AgentDone,
    CallerHangup,
    Digits,
    Event,
    NoInput,
    Speech,
    ToolDone,
)
from ivr.flows.engine.records import Trace, TraceKind, Turn
from ivr.flows.engine.verify import Stakes
from ivr.flows.model import (
    AskStep,
    BranchStep,
    CallStep,
    Flow,
    FlowRef,
    HangupStep,
    LlmStep,
    SayStep,
    SetStep,
    SlotDef,
    Target,
    TransferStep,
)
from ivr.flows.slots import SlotValue, coerce_value
from ivr.flows.text import looks_like_number
from ivr.grammar import Grammar

__all__ = ["DEFAULT_MAX_STEPS", "DEFAULT_MAX_TOOL_CALLS", "NO_LLM", "FlowRunner"]

DEFAULT_MAX_STEPS = 100
DEFAULT_MAX_TOOL_CALLS = 50
NO_LLM = "no LLM configured"


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
        self._visit: AskVisit | None = None
        self._tool: CallStep | None = None
        self._agent: LlmStep | None = None
        self._tool_calls = 0
        self._fell_back = False
        self._handled_template_failure = False
        self._stakes_of: dict[str, Stakes] = {}

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
        if self._visit is not None:
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
        return self._visit is not None and self._visit.confirming

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
            elif self._visit is None:
                # The session should not send answers while a tool runs; an answer that
                # slips through (keys pressed during the lookup) is dropped, not fatal.
                self._note("ignored", f"{type(event).__name__} while waiting for a tool")
            else:
                self._answer(self._visit, event, out)
        except _Failure as failure:
            self._failed(failure, out)
        return out

    # ------------------------------------------------------------ asks

    def _answer(self, visit: AskVisit, event: Speech | Digits | NoInput, out: list[Action]) -> None:
        reply = visit.answer(event, self.now)
        self.turns.append(reply.turn)
        slot = visit.step.slot
        if slot is not None and reply.value is not None:
            self.slots[slot] = reply.value
        if slot is not None and reply.forget:
            self.slots.pop(slot, None)
        then = reply.then
        if reply.unsure is not None:
            self._note("unsure", reply.unsure, visit.name)
        if isinstance(then, Reprompt):
            text = then.prompt if then.plain else self._text(then.prompt)
            out.append(Play(text, visit.step.barge_in, visit.name))
            out.append(visit.listen())
            return
        self._fell_back = self._fell_back or then.gave_up
        if then.target is None:
            self._finish(self._normal_end(), out)
        else:
            self._go(then.target, out)

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
        self._visit = None
        self._tool = None
        self._agent = None
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
            slot = self._slot_def(step.slot) if step.slot is not None else None
            self._visit = AskVisit(target, step, slot, self.flow.certainty, self._stakes(target))
            if step.expect is not None and slot is not None:
                self._visit.expected = self._expected(target, step.expect, slot)
            out.append(Play(prompt, step.barge_in, target))
            out.append(self._visit.listen())
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

    def _expected(self, name: str, source: str, slot: SlotDef) -> Grammar | None:
        """The slot's grammar narrowed to what `expect` (`source`) gives, or None (listen
        for any value, noted: never an empty grammar)."""
        try:
            raw = templates.jsonable(templates.render_value(source, self.context()))
        except templates.TemplateFailure as exc:
            self._note("expect_fallback", exc.message, name)
            return None
        grammar = narrowed(slot, raw, now=self.now())
        if grammar is None:
            self._note("expect_fallback", f"no {slot.type} to listen for in {raw!r}"[:200], name)
        return grammar

    def _stakes(self, name: str) -> Stakes:
        stakes = self._stakes_of.get(name)
        if stakes is None:
            step = self.flow.steps[name]
            assert isinstance(step, AskStep)
            stakes = self._stakes_of[name] = Stakes.of(self.flow, step)
        return stakes

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
        self._visit = None
        self._tool = None
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
        self._visit = None
        self._tool = None
        self._outcome = outcome
        if announce:
            out.append(Hangup(outcome))

    def _fail(self, message: str, out: list[Action]) -> None:
        self.error = message
        self._finish("error", out)
