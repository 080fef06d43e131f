"""Tools a conversation can call: lookups and bookings against the project's database.

A tool is a dotted name, a JSON Schema for its arguments and an async handler. Tools only
run through `ToolRegistry.call`, which validates the arguments before the handler sees
them, bounds the handler's time and turns every failure into a `ToolResult`: a failed
lookup must become something the bot can say, never an exception that drops the call.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite
import structlog
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from ivr.errors import InvalidValue, IvrError, StoreError

__all__ = [
    "BUSY_TIMEOUT_S",
    "Handler",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "default_registry",
    "normalize_phone",
    "phone_arg",
]

log = structlog.get_logger("ivr.tools")

# How long a tool's connection waits for another call's write transaction. Tools that
# write get a longer time limit than this, so a busy database ends in a clean, rolled-back
# "busy" error decided by SQLite rather than a cancellation racing a commit.
BUSY_TIMEOUT_S = 5.0
# The first schema version (ivr.store.db.MIGRATIONS) that has the tools' tables.
TOOLS_SCHEMA_VERSION = 2

# Dotted lower-case words; "__" is reserved because it stands for "." in OpenAI names.
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*(?:\.[a-z][a-z0-9]*(?:_[a-z0-9]+)*)*$")
_OPENAI_NAME_MAX = 64


class ToolError(IvrError):
    """A tool could not do what was asked, in words the bot can relay.

    `value` carries structured detail for the model (free alternatives, candidates).
    """

    def __init__(self, message: str, value: dict[str, Any] | None = None) -> None:
        # Both in args so the exception pickles (BaseException re-calls cls(*args)).
        super().__init__(message, value)
        self.message = message
        self.value: dict[str, Any] = dict(value or {})

    def __str__(self) -> str:
        return self.message


@dataclass(slots=True)
class ToolContext:
    """What a handler knows about the call it serves.

    `now` is the business clock: opening hours and "today" are read in its time zone.
    """

    call_sid: str | None
    caller: str
    db_path: Path
    now: datetime

    def __post_init__(self) -> None:
        # A naive `now` would silently compare in whatever zone the host runs in.
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise InvalidValue("ToolContext.now must be timezone-aware")

    @asynccontextmanager
    async def db(self) -> AsyncIterator[aiosqlite.Connection]:
        """A short-lived connection of this tool call's own.

        One connection per call (not the call store's shared one) so concurrent calls
        really race at the database, where the constraints and locks decide. Autocommit
        mode: writers open their own `BEGIN IMMEDIATE` transactions.
        """
        # mode=rw: a mistyped IVR_DB must not quietly create an empty database file.
        uri = f"file:{quote(str(self.db_path.resolve()))}?mode=rw"
        try:
            conn = await aiosqlite.connect(
                uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None
            )
        except sqlite3.OperationalError as e:
            raise StoreError(f"cannot open the database {self.db_path}: {e}") from e
        try:
            conn.row_factory = aiosqlite.Row
            async with conn.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
            version = int(row[0]) if row else 0
            if version < TOOLS_SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.db_path} has schema v{version}, tools need "
                    f"v{TOOLS_SCHEMA_VERSION}: open it with the server or `ivr db seed` first"
                )
            await conn.execute("PRAGMA journal_mode=WAL")
            # FULL, not the store's NORMAL: a confirmed booking must survive a power cut,
            # and the cost is one fsync per (rare) write.
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            await conn.close()


Handler = Callable[[dict[str, Any], ToolContext], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str  # dotted, e.g. "bookings.book"
    description: str  # for the model: what it does and when to use it
    parameters: dict[str, Any]  # JSON Schema of the arguments (an object schema)
    handler: Handler
    timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class ToolResult:
    ok: bool
    value: dict[str, Any]
    error: str | None
    duration_ms: float

    def to_json(self) -> str:
        """The result as the model should see it (a tool message's content)."""
        body: dict[str, Any] = {**self.value, "ok": self.ok}
        if self.error is not None:
            body["error"] = self.error
        return json.dumps(body, ensure_ascii=False)


def openai_name(name: str) -> str:
    """OpenAI function names allow [a-zA-Z0-9_-], so "bookings.book" -> "bookings__book"."""
    return name.replace(".", "__")


class ToolRegistry:
    def __init__(self, db_path: Path | None = None) -> None:
        self.db_path = db_path  # what `context()` puts in a ToolContext
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Any] = {}

    def register(self, tool: Tool) -> None:
        if not _NAME_RE.match(tool.name):
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


_PHONE_JUNK_RE = re.compile(r"[\s().\-/]")
_PHONE_RE = re.compile(r"^\+?[0-9]{3,15}$")


def normalize_phone(text: str) -> str:
    """A phone number as stored: E.164 when we can tell, else its digits.

    Ten digits are read as a North American number (+1), as Twilio numbers here are; that
    makes a number the caller keys in match the caller ID Twilio reports.
    """
    s = _PHONE_JUNK_RE.sub("", text.strip())
    if not s:
        return ""
    if not _PHONE_RE.match(s):
        raise ToolError(f"{text!r} is not a phone number")
    if s.startswith("+"):
        return s
    if len(s) == 10:
        return "+1" + s
    if len(s) == 11 and s.startswith("1"):
        return "+" + s
    return s


def phone_arg(args: dict[str, Any], ctx: ToolContext, key: str = "phone") -> str:
    """The phone argument, or the caller's number when it was omitted; "" if neither.

    A caller ID that is not a number ("anonymous", a SIP client) counts as no number
    rather than an error: the bot should ask for one.
    """
    given = args.get(key)
    if isinstance(given, str) and given.strip():
        return normalize_phone(given)
    try:
        return normalize_phone(ctx.caller)
    except ToolError:
        return ""


def default_registry(db_path: Path) -> ToolRegistry:
    """A registry with every built-in tool, its contexts on `db_path`."""
    # Imported here: the tool modules import this one for Tool and ToolError.
    from ivr.tools import bookings, lookups

    registry = ToolRegistry(db_path)
    for tool in (*bookings.TOOLS, *lookups.TOOLS):
        registry.register(tool)
    return registry
