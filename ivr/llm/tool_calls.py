"""The tools an `llm` step offers its model, and the checking and running of its calls.

Safety of tool calls: the model sees only the step's allowed tools plus three built-ins
(`set_slot`, `end_conversation`, `transfer_to_human`); every call of a round is checked
(known, allowed, arguments valid against the tool's schema) before any of them runs, so a
round that mixes a valid booking with a broken call books nothing. The agent sends the
problems back to the model as tool results for it to correct.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from ivr.errors import InvalidValue
from ivr.llm.client import ToolCallDone
from ivr.llm.events import AgentStep, Stopwatch
from ivr.tools.base import ToolContext, ToolResult, openai_name
from ivr.tools.registry import ToolRegistry

__all__ = [
    "BUILTINS",
    "END_CONVERSATION",
    "SET_SLOT",
    "TRANSFER_TO_HUMAN",
    "CheckedCall",
    "StepTools",
]

SET_SLOT = "set_slot"
END_CONVERSATION = "end_conversation"
TRANSFER_TO_HUMAN = "transfer_to_human"
BUILTINS = frozenset({SET_SLOT, END_CONVERSATION, TRANSFER_TO_HUMAN})


@dataclass(slots=True)
class CheckedCall:
    """One tool call of a round, after checking: `error` set means it will not run."""

    id: str
    raw_name: str
    name: str  # dotted, or the built-in's name
    arguments_json: str
    args: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class StepTools:
    """The step's allowed tools: their schemas for the model, `check` and `run` of calls.

    `slots` is the flow's slot dict, updated in place by `set_slot` when a round runs.
    """

    def __init__(
        self, registry: ToolRegistry, step: AgentStep, slots: dict[str, str],
        stopwatch: Stopwatch | None = None,
    ) -> None:
        self.registry = registry
        self.step = step
        self.slots = slots
        self.stopwatch = stopwatch
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
        self.schemas = self._schemas()

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

    def check(self, call: ToolCallDone) -> CheckedCall:
        name = call.name if call.name in BUILTINS else self._allowed.get(call.name, "")
        c = CheckedCall(call.id, call.name, name or call.name, call.arguments_json)
        try:
            args = json.loads(call.arguments_json or "{}")
        except ValueError as e:
            c.error = f"arguments are not valid JSON: {e}"
            return c
        if not isinstance(args, dict):
            c.error = f"arguments must be a JSON object, not {type(args).__name__}"
            return c
        c.args = args
        if call.name in BUILTINS:
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

    async def _call(self, c: CheckedCall, ctx: ToolContext) -> ToolResult:
        lap = self.stopwatch("tool") if self.stopwatch is not None else None
        try:
            return await self.registry.call(c.name, c.args, ctx)
        finally:
            if lap is not None:
                lap.done(c.name)

    async def run(
        self, calls: list[CheckedCall], ctx_factory: Callable[[], ToolContext]
    ) -> list[ToolResult]:
        """Run a round of checked calls; one result per call, in order."""
        ctx = ctx_factory()
        real = [c for c in calls if c.name not in BUILTINS]
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
            elif c.name in BUILTINS:
                results.append(ToolResult(True, {}, None, 0.0))
            else:
                results.append(by_id[id(c)])
        return results


def _function(
    name: str, description: str, props: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": props, "required": required,
                       "additionalProperties": False},
    }}
