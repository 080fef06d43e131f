"""The tool registry: the one way a tool runs.

A tool (`ivr.tools.base.Tool`) only runs through `ToolRegistry.call`, which validates the
arguments before the handler sees them, bounds the handler's time and turns every failure
into a `ToolResult`: a failed lookup must become something the bot can say, never an
exception that drops the call. `default_registry` holds the built-in tools.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from ivr.errors import InvalidValue
from ivr.tools.base import TOOL_NAME, Tool, ToolContext, ToolError, ToolResult, openai_name
from ivr.tools.builtin import bookings, lookups

__all__ = ["ToolRegistry", "default_registry"]

log = structlog.get_logger("ivr.tools")

_OPENAI_NAME_MAX = 64


class ToolRegistry:
    def __init__(self, db_path: Path | str | None = None) -> None:
        self.db_path = db_path  # what `context()` puts in a ToolContext
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Any] = {}

    def register(self, tool: Tool) -> None:
        if not TOOL_NAME.match(tool.name):
            raise InvalidValue(
                f"tool name {tool.name!r}: use dotted lower-case words like 'bookings.book'"
            )
        if len(openai_name(tool.name)) > _OPENAI_NAME_MAX:
            raise InvalidValue(f"tool name {tool.name!r} is too long for function calling")
        if tool.name in self._tools:
            raise InvalidValue(f"tool {tool.name!r} is already registered")
        if tool.parameters.get("type") != "object":
            raise InvalidValue(f"tool {tool.name!r}: parameters must be an object schema")
        if tool.timeout_s <= 0:
            raise InvalidValue(f"tool {tool.name!r}: timeout_s must be positive")
        try:
            Draft202012Validator.check_schema(tool.parameters)
        except SchemaError as e:
            raise InvalidValue(f"tool {tool.name!r}: invalid parameters schema: {e.message}") from e
        self._tools[tool.name] = tool
        self._validators[tool.name] = Draft202012Validator(
            tool.parameters, format_checker=Draft202012Validator.FORMAT_CHECKER
        )

    def get(self, name: str) -> Tool | None:
        """The tool by its dotted name or its function-calling name ("a__b")."""
        return self._tools.get(name.replace("__", "."))

    def names(self) -> list[str]:
        return sorted(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool in the OpenAI function-calling format, sorted by name."""
        return [
            {
                "type": "function",
                "function": {
                    "name": openai_name(tool.name),
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in (self._tools[n] for n in self.names())
        ]

    def context(
        self, *, call_sid: str | None = None, caller: str = "", now: datetime | None = None
    ) -> ToolContext:
        """A ToolContext on this registry's database; `now` defaults to the current time."""
        if self.db_path is None:
            raise InvalidValue("this registry has no db_path; build the ToolContext yourself")
        return ToolContext(
            call_sid=call_sid,
            caller=caller,
            db_path=self.db_path,
            now=now if now is not None else datetime.now(UTC).astimezone(),
        )

    async def call(
        self, name: str, args: dict[str, Any] | str | None, ctx: ToolContext
    ) -> ToolResult:
        """Run a tool. Never raises for a tool's failure: it comes back as ok=False.

        `args` may be the JSON text a model produced. Cancellation of the caller (a
        hang-up) still propagates, as it must.
        """
        started = time.perf_counter()
        tool = self.get(name)
        if tool is None:
            known = ", ".join(self.names()) or "none"
            return self._finish(name, ctx, started, error=f"unknown tool {name!r} (known: {known})")
        if args is None:
            args = {}
        if isinstance(args, str):
            try:
                args = json.loads(args or "{}")
            except json.JSONDecodeError as e:
                return self._finish(
                    tool.name, ctx, started, error=f"arguments are not valid JSON: {e}"
                )
        if not isinstance(args, dict):
            return self._finish(
                tool.name, ctx, started,
                error=f"arguments must be a JSON object, not {type(args).__name__}",
            )
        problem = _validation_problem(self._validators[tool.name], tool.parameters, args)
        if problem is not None:
            return self._finish(tool.name, ctx, started, error=f"invalid arguments: {problem}")

        deadline = asyncio.timeout(tool.timeout_s)
        try:
            async with deadline:
                # A copy: a handler that normalises its arguments in place must not change
                # the caller's dict (the conversation history).
                value = await tool.handler(dict(args), ctx)
            if not isinstance(value, dict):
                raise TypeError(f"handler returned {type(value).__name__}, not a dict")
            json.dumps(value)  # the result goes to a model as JSON: fail here, not there
        except ToolError as e:
            return self._finish(tool.name, ctx, started, error=e.message, value=e.value)
        except TimeoutError as e:
            if deadline.expired():
                return self._finish(
                    tool.name, ctx, started, error=f"timed out after {tool.timeout_s:g}s"
                )
            return self._crashed(tool.name, ctx, started, e)
        except Exception as e:
            return self._crashed(tool.name, ctx, started, e)
        return self._finish(tool.name, ctx, started, value=value)

    def _crashed(
        self, name: str, ctx: ToolContext, started: float, exc: Exception
    ) -> ToolResult:
        log.exception("tool_crashed", tool=name, call_sid=ctx.call_sid, exc_info=exc)
        return self._finish(name, ctx, started, error=f"internal error: {exc}", logged=True)

    @staticmethod
    def _finish(
        name: str,
        ctx: ToolContext,
        started: float,
        *,
        error: str | None = None,
        value: dict[str, Any] | None = None,
        logged: bool = False,
    ) -> ToolResult:
        ms = (time.perf_counter() - started) * 1000.0
        if not logged:
            # Arguments and values are not logged: they hold callers' names and numbers.
            log.info("tool_call", tool=name, call_sid=ctx.call_sid, ok=error is None,
                     ms=round(ms, 1), error=error)
        return ToolResult(ok=error is None, value=value or {}, error=error, duration_ms=ms)


def _validation_problem(validator: Any, schema: dict[str, Any], args: dict[str, Any]) -> str | None:
    """Every schema violation, each naming its argument, or None when the args are valid."""
    errors: list[ValidationError] = sorted(
        validator.iter_errors(args),
        key=lambda e: ([str(p) for p in e.absolute_path], str(e.validator)),
    )
    if not errors:
        return None
    # dict.fromkeys: jsonschema reports `required` once per missing name, each described
    # with all of them.
    return "; ".join(list(dict.fromkeys(_describe(e, schema) for e in errors))[:5])


def _describe(error: ValidationError, schema: dict[str, Any]) -> str:
    path = [str(p) for p in error.absolute_path]
    where = ".".join(path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [str(r) for r in error.validator_value if r not in instance]
        return "missing required argument " + ", ".join(repr(m) for m in missing)
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = error.schema.get("properties", {})
        extra = sorted(str(k) for k in instance if k not in allowed)
        return f"unexpected argument {', '.join(repr(x) for x in extra)}" + (
            f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
        )
    if error.validator in ("anyOf", "oneOf") and _only_required(error.validator_value):
        options = [
            " and ".join(repr(r) for r in sub["required"]) for sub in error.validator_value
        ]
        return "give " + " or ".join(options)
    hint = _description_at(schema, path)
    text = f"argument {where!r}: {error.message}" if where else f"arguments: {error.message}"
    return f"{text} ({hint})" if hint else text


def _only_required(subschemas: Any) -> bool:
    return isinstance(subschemas, list) and all(
        isinstance(s, dict) and set(s) == {"required"} for s in subschemas
    )


def _description_at(schema: dict[str, Any], path: list[str]) -> str:
    """The `description` of the property an error is about: says what a valid value is."""
    node: Any = schema
    for part in path:
        if not isinstance(node, dict):
            return ""
        props = node.get("properties")
        if isinstance(props, dict) and part in props:
            node = props[part]
        elif isinstance(node.get("items"), dict):
            node = node["items"]
        else:
            return ""
    desc = node.get("description") if isinstance(node, dict) else None
    return desc if isinstance(desc, str) else ""


def default_registry(db_path: Path | str) -> ToolRegistry:
    """A registry with every built-in tool, its contexts on `db_path`."""
    registry = ToolRegistry(db_path)
    for tool in (*bookings.TOOLS, *lookups.TOOLS):
        registry.register(tool)
    return registry
