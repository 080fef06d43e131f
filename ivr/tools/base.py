"""What a tool is: a dotted name, a JSON Schema for its arguments and an async handler
that gets a `ToolContext` and answers with a dict, or raises `ToolError` with words the bot
can relay. Tool modules import only this (and `phone`); `ToolRegistry` runs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ivr.errors import InvalidValue, IvrError, StoreError
from ivr.store.backend import Database, connect, describe

__all__ = [
    "BUSY_TIMEOUT_S",
    "TOOLS_SCHEMA_VERSION",
    "TOOL_NAME",
    "Handler",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "openai_name",
]

# How long a tool's connection waits for another call's write transaction. Tools that
# write get a longer time limit than this, so a busy database ends in a clean, rolled-back
# "busy" error decided by SQLite rather than a cancellation racing a commit.
BUSY_TIMEOUT_S = 5.0
# The first schema version (ivr.store.db.MIGRATIONS) that has the tools' tables.
TOOLS_SCHEMA_VERSION = 2

# Dotted lower-case words; "__" is reserved because it stands for "." in OpenAI names.
TOOL_NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*(?:\.[a-z][a-z0-9]*(?:_[a-z0-9]+)*)*$")


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

    `caller` is the verified caller's number: on a phone call the one the signed stream
    token vouches for, in `ivr chat` and flow tests the one they were given; "" for an
    anonymous caller (withheld caller ID). Tools that act for a person act for this number
    only (`ivr.tools.phone.own_number`). `now` is the business clock: opening hours and
    "today" are read in its time zone.
    """

    call_sid: str | None
    caller: str
    db_path: Path | str  # a SQLite file or a PostgreSQL URL (`ivr.config.database_url`)
    now: datetime

    def __post_init__(self) -> None:
        # A naive `now` would silently compare in whatever zone the host runs in.
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise InvalidValue("ToolContext.now must be timezone-aware")

    @asynccontextmanager
    async def db(self) -> AsyncIterator[Database]:
        """A database of this tool call's own (`ivr.store.backend`).

        SQLite: a short-lived connection, not the call store's shared one, so concurrent
        calls really race at the database, where the constraints and locks decide;
        autocommit, writers open their own `transaction()` (BEGIN IMMEDIATE).
        PostgreSQL: the shared pool, a connection per statement or transaction.
        """
        # mode=rw: a mistyped IVR_DB must not quietly create an empty database file.
        # FULL, not the store's NORMAL: a confirmed booking must survive a power cut, and
        # the cost is one fsync per (rare) write.
        db = await connect(self.db_path, mode="rw", timeout_s=BUSY_TIMEOUT_S,
                           pragmas=("journal_mode=WAL", "synchronous=FULL",
                                    "foreign_keys=ON"))
        try:
            version = await db.schema_version()
            if version < TOOLS_SCHEMA_VERSION:
                raise StoreError(
                    f"database {describe(self.db_path)} has schema v{version}, tools need "
                    f"v{TOOLS_SCHEMA_VERSION}: open it with the server or `ivr db seed` first"
                )
            yield db
        finally:
            await db.close()


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
