"""The tool-calling loop of a flow's `llm` step, independent of audio and the flow engine.

`Agent.turn(user_text)` runs model rounds until the model needs the caller (a text answer
without tool calls: `ModelListens`), the step's exit condition holds (`Done("exit")`), the model
ends the conversation or asks for a human, or a bound is hit (rounds per turn, or the
tokens the step may still use: `Done("budget")`). Sentences are yielded as
`ModelSays` events as soon as each one is complete, so the session can start synthesis before
the model has finished its reply.

Safety of tool calls: the model sees only the step's allowed tools plus three built-ins
(`set_slot`, `end_conversation`, `transfer_to_human`); every call of a round is checked
(known, allowed, arguments valid against the tool's schema) before any of them runs, so a
round that mixes a valid booking with a broken call books nothing. Problems go back to the
model as tool results for it to correct; consecutive broken rounds are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog
from jsonschema import Draft202012Validator

from ivr.errors import InvalidValue
from ivr.llm.client import ChatDelta, Finish, TextDelta, ToolCallDone, Usage
from ivr.llm.sentences import SentenceSplitter
from ivr.providers.http import ProviderError
from ivr.tools.base import ToolContext, ToolResult, openai_name
from ivr.tools.registry import ToolRegistry

__all__ = [
    "END_CONVERSATION",
    "SET_SLOT",
    "TRANSFER_TO_HUMAN",
    "Agent",
    "AgentEvent",
    "AgentStep",
    "ChatModel",
    "Done",
    "DoneReason",
    "ExitCheck",
    "Lap",
    "ModelListens",
    "ModelSays",
    "Stopwatch",
    "ToolRan",
    "UsageEvent",
]

log = structlog.get_logger("ivr.llm")

SET_SLOT = "set_slot"
END_CONVERSATION = "end_conversation"
TRANSFER_TO_HUMAN = "transfer_to_human"
_BUILTINS = frozenset({SET_SLOT, END_CONVERSATION, TRANSFER_TO_HUMAN})

ExitCheck = Callable[[dict[str, str], dict[str, Any], list[str]], bool]
DoneReason = Literal["exit", "model", "transfer", "max_rounds", "budget", "error"]


class ChatModel(Protocol):
    """What the agent needs of a chat model: `ChatClient`, or one scripted in a flow test."""

    model: str

    def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
    ) -> AsyncGenerator[ChatDelta, None]: ...


@dataclass(frozen=True, slots=True)
class AgentStep:
    system_prompt: str  # already rendered; should name the slots the model may set
    tools: tuple[str, ...] = ()  # dotted registry names the model may call
    max_rounds: int = 8  # model requests per `turn()` (one caller turn)
    exit_when: ExitCheck | None = None  # (slots, vars, called_tools) -> end the step
    slot_names: tuple[str, ...] = ()  # `set_slot` names; empty: the keys of `slots`
    max_invalid_rounds: int = 2  # consecutive rounds with a refused call, then error
    # Tokens (prompt + completion) this step may use before no further request is made:
    # what is left of the call's budget when the step starts. None: no bound.
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ModelSays:
    text: str  # one complete sentence


@dataclass(frozen=True, slots=True)
class ToolRan:
    name: str  # dotted registry name, or a built-in's name
    args: dict[str, Any]
    ok: bool
    value: dict[str, Any]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ModelListens:
    pass


@dataclass(frozen=True, slots=True)
class Done:
    reason: DoneReason
    error: str | None = None


@dataclass(frozen=True, slots=True)
class UsageEvent:
    prompt: int
    completion: int
    cached: int = 0
    # Billable token units (`providers.usage.token_units`), for the call's cost.
    units: dict[str, int] = field(default_factory=dict, compare=False)


class Lap(Protocol):
    """The timing of one model round or tool call (`session.record.SpanTimer`)."""

    def first(self) -> None: ...

    def done(self, provider: str) -> None: ...


# Starts a lap for a stage ("llm", "tool"); the session records it in the caller's turn.
Stopwatch = Callable[[str], Lap]


AgentEvent = ModelSays | ToolRan | ModelListens | Done | UsageEvent


@dataclass(slots=True)
class _Call:
    """One tool call of a round, after checking: `error` set means it will not run."""

    id: str
    raw_name: str
    name: str  # dotted, or the built-in's name
    arguments_json: str
    args: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


_END = object()


async def _read_ahead(
    stream: AsyncGenerator[ChatDelta, None], lap: Lap | None, model: str,
) -> AsyncGenerator[ChatDelta, None]:
    """`stream`'s deltas, read as they arrive while the consumer is busy (the phone speaks
    each sentence as it completes): the provider's connection never idles into its read
    timeout behind a long sentence, and `lap` times the model's first token and its real
    end, not when the consumer got round to them."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with aclosing(stream):
                async for delta in stream:
                    if lap is not None and isinstance(delta, TextDelta | ToolCallDone):
                        lap.first()
                    queue.put_nowait(delta)
            if lap is not None:
                lap.done(model)
            queue.put_nowait(_END)
        except Exception as e:  # handed to the consumer, raised there
            queue.put_nowait(e)

    task = asyncio.create_task(pump())
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Agent:
    """One `llm` step's conversation; keep it for the step's whole life (it holds history).

    `slots` is the flow's slot dict and is updated in place by `set_slot`; `vars` receives
    each successful tool's latest result under its dotted name.
    """

    def __init__(
        self,
        chat: ChatModel,
        registry: ToolRegistry,
        ctx_factory: Callable[[], ToolContext],
        step: AgentStep,
        slots: dict[str, str],
        vars: dict[str, Any] | None = None,
        stopwatch: Stopwatch | None = None,
    ) -> None:
        self.chat = chat
        self.stopwatch = stopwatch
        self.registry = registry
        self.ctx_factory = ctx_factory
        self.step = step
        self.slots = slots
        self.vars: dict[str, Any] = vars if vars is not None else {}
        self.called_tools: list[str] = []
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": step.system_prompt}]
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self._allowed: dict[str, str] = {}  # OpenAI name -> dotted name
        for name in step.tools:
            tool = registry.get(name)
            if tool is None:
                raise InvalidValue(f"llm step allows unknown tool {name!r}")
            self._allowed[openai_name(tool.name)] = tool.name
        self._validators = {
            dotted: Draft202012Validator(
                tool.parameters, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
            for dotted in self._allowed.values()
            if (tool := registry.get(dotted)) is not None
        }
        self._tools = self._schemas()

    # ---------------------------------------------------------------- what the model sees

    def _slot_names(self) -> list[str]:
        return list(self.step.slot_names or self.slots)

    def _schemas(self) -> list[dict[str, Any]]:
        allowed = set(self._allowed)
        tools = [s for s in self.registry.schemas() if s["function"]["name"] in allowed]
        name_schema: dict[str, Any] = {"type": "string", "description": "the slot's name"}
        if names := self._slot_names():
            name_schema["enum"] = names
        tools.append(_function(
            SET_SLOT, "Record a piece of information the caller gave (a slot of the flow).",
            {"name": name_schema, "value": {"type": "string"}}, ["name", "value"],
        ))
        tools.append(_function(
            END_CONVERSATION,
            "End the conversation once the caller's request is done and you said goodbye.",
            {}, [],
        ))
        tools.append(_function(
            TRANSFER_TO_HUMAN,
            "Hand the caller to a human agent when asked, or when you cannot help.",
            {"reason": {"type": "string"}}, [],
        ))
        return tools

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The function definitions offered to the model."""
        return self._tools

    @property
    def tokens(self) -> int:
        """Tokens this step has used, as the provider reported them."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def budget_spent(self) -> bool:
        limit = self.step.max_tokens
        return limit is not None and self.tokens >= limit

    def _exit(self) -> bool:
        check = self.step.exit_when
        return check is not None and check(self.slots, self.vars, self.called_tools)

    # ---------------------------------------------------------------------------- the loop

    async def turn(self, user_text: str | None) -> AsyncGenerator[AgentEvent, None]:
        """Run rounds for one caller turn (None: the step just started, the model speaks)."""
        self._repair_history()
        if user_text is not None:
            self.messages.append({"role": "user", "content": user_text})
        invalid_rounds = 0
        for _ in range(self.step.max_rounds):
            if self.budget_spent:
                # Checked before each request, never inside one: a reply under way is
                # finished and its tools run, so nothing is left half done.
                yield Done("budget", f"the call's LLM budget is spent ({self.tokens} tokens "
                                     f"used in this step, {self.step.max_tokens} allowed)")
                return
            splitter = SentenceSplitter()
            text: list[str] = []
            calls: list[ToolCallDone] = []
            usage: Usage | None = None
            lap = self.stopwatch("llm") if self.stopwatch is not None else None
            try:
                # aclosing: a turn abandoned mid-reply closes the HTTP stream now, not
                # whenever the garbage collector finalizes the generator.
                deltas = self.chat.stream(self.messages, self._tools)
                async with aclosing(_read_ahead(deltas, lap, self.chat.model)) as stream:
                    async for delta in stream:
                        if isinstance(delta, TextDelta):
                            text.append(delta.text)
                            for sentence in splitter.push(delta.text):
                                yield ModelSays(sentence)
                        elif isinstance(delta, ToolCallDone):
                            calls.append(delta)
                        elif isinstance(delta, Usage):
                            usage = delta
                        elif isinstance(delta, Finish) and delta.reason == "length":
                            log.warning("llm_truncated", rounds=len(self.messages))
            except ProviderError as e:
                yield Done("error", str(e))
                return
            except GeneratorExit:
                # The session stopped listening mid-reply (barge-in, hang-up): keep what
                # was generated so the model knows what it had started to say.
                if text:
                    self.messages.append({"role": "assistant", "content": "".join(text)})
                raise
            finally:
                if lap is not None:
                    lap.done(self.chat.model)  # no-op if the stream already ended
            content = "".join(text)
            # null content is only valid next to tool calls.
            message: dict[str, Any] = {"role": "assistant",
                                       "content": content or (None if calls else "")}
            if calls:
                message["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.name, "arguments": c.arguments_json}}
                    for c in calls
                ]
            # Recorded before anything more is yielded: the consumer may stop at any yield.
            self.messages.append(message)
            if rest := splitter.flush():
                yield ModelSays(rest)
            if usage is not None:
                self.prompt_tokens += usage.prompt_tokens
                self.completion_tokens += usage.completion_tokens
                self.cached_tokens += usage.cached_tokens
                yield UsageEvent(usage.prompt_tokens, usage.completion_tokens,
                                 usage.cached_tokens, dict(usage.units))
            if not calls:
                yield Done("exit") if self._exit() else ModelListens()
                return

            checked = [self._check(c) for c in calls]
            if any(c.error is not None for c in checked):
                invalid_rounds += 1
                for c in checked:
                    error = c.error or "not run: another call in this round was refused; " \
                                        "send it again with the corrected ones"
                    self._tool_message(c, json.dumps({"ok": False, "error": error}))
                    yield ToolRan(c.name, c.args, False, {}, error)
                if invalid_rounds >= self.step.max_invalid_rounds:
                    yield Done("error", f"{invalid_rounds} rounds of refused tool calls")
                    return
                continue
            invalid_rounds = 0

            events = await self._run(checked)
            for event in events:
                yield event
            ran = {e.name for e in events if isinstance(e, ToolRan) and e.ok}
            if TRANSFER_TO_HUMAN in ran:
                yield Done("transfer")
                return
            if END_CONVERSATION in ran:
                yield Done("model")
                return
            if self._exit():
                yield Done("exit")
                return
        yield Done("max_rounds")

    # ---------------------------------------------------------------------- tool calls

    def _check(self, call: ToolCallDone) -> _Call:
        name = call.name if call.name in _BUILTINS else self._allowed.get(call.name, "")
        c = _Call(call.id, call.name, name or call.name, call.arguments_json)
        try:
            args = json.loads(call.arguments_json or "{}")
        except ValueError as e:
            c.error = f"arguments are not valid JSON: {e}"
            return c
        if not isinstance(args, dict):
            c.error = f"arguments must be a JSON object, not {type(args).__name__}"
            return c
        c.args = args
        if call.name in _BUILTINS:
            if call.name == SET_SLOT:
                c.error = self._slot_problem(args)
            return c  # end/transfer: extra arguments are harmless, never refuse a goodbye
        if not name:
            known = self.registry.get(call.name) is not None
            c.error = (f"tool {call.name!r} is not available in this conversation" if known
                       else f"unknown tool {call.name!r}")
            return c
        errors = sorted(self._validators[name].iter_errors(args), key=lambda e: e.message)
        if errors:
            c.error = "invalid arguments: " + "; ".join(
                (f"{'.'.join(str(p) for p in e.absolute_path)}: " if e.absolute_path else "")
                + e.message
                for e in errors[:5]
            )
        return c

    def _slot_problem(self, args: dict[str, Any]) -> str | None:
        name, value = args.get("name"), args.get("value")
        if not isinstance(name, str) or not isinstance(value, (str, int, float)):
            return "set_slot needs a string 'name' and a 'value'"
        names = self._slot_names()
        if names and name not in names:
            return f"no slot {name!r} (slots: {', '.join(names)})"
        return None

    async def _call(self, c: _Call, ctx: ToolContext) -> ToolResult:
        lap = self.stopwatch("tool") if self.stopwatch is not None else None
        try:
            return await self.registry.call(c.name, c.args, ctx)
        finally:
            if lap is not None:
                lap.done(c.name)

    async def _run(self, calls: list[_Call]) -> list[AgentEvent]:
        ctx = self.ctx_factory()
        real = [c for c in calls if c.name not in _BUILTINS]
        # Parallel: independent lookups in one round should not queue behind each other
        # while the caller waits. The registry never raises for a tool's failure.
        done = await asyncio.gather(*(self._call(c, ctx) for c in real))
        by_id = {id(c): r for c, r in zip(real, done, strict=True)}
        failed = any(not r.ok for r in done)
        results: list[ToolResult] = []
        for c in calls:
            if c.name == SET_SLOT:
                self.slots[str(c.args["name"])] = str(c.args["value"])
                results.append(ToolResult(True, {"name": c.args["name"]}, None, 0.0))
            elif c.name == END_CONVERSATION and failed:
                # "Book and hang up" where the booking failed: the caller must hear why,
                # so the model gets the failure and another round instead of the end.
                results.append(ToolResult(False, {}, "not ended: another tool call in this "
                                          "round failed; tell the caller first", 0.0))
            elif c.name in _BUILTINS:
                results.append(ToolResult(True, {}, None, 0.0))
            else:
                results.append(by_id[id(c)])
        events: list[AgentEvent] = []
        for c, r in zip(calls, results, strict=True):
            self._tool_message(c, r.to_json())
            if r.ok:
                self.called_tools.append(c.name)
                if c.name not in _BUILTINS:
                    self.vars[c.name] = r.value
            events.append(ToolRan(c.name, c.args, r.ok, r.value, r.error))
        return events

    def _repair_history(self) -> None:
        """Answer tool calls left unanswered by an interrupted turn.

        A turn cancelled while its tools ran leaves an assistant message whose calls have
        no `tool` results, which the API refuses on the next request.
        """
        for i in range(len(self.messages) - 1, -1, -1):
            m = self.messages[i]
            if m["role"] == "assistant":
                answered = {x.get("tool_call_id") for x in self.messages[i + 1:]}
                for call in m.get("tool_calls") or []:
                    if call["id"] not in answered:
                        self.messages.append({"role": "tool", "tool_call_id": call["id"],
                                              "content": '{"ok": false, "error": "interrupted"}'})
                return

    def _tool_message(self, c: _Call, content: str) -> None:
        self.messages.append({"role": "tool", "tool_call_id": c.id, "content": content})


def _function(
    name: str, description: str, props: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": props, "required": required,
                       "additionalProperties": False},
    }}
