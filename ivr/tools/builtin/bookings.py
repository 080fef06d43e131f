"""Appointment tools that touch a person's bookings: book, cancel, reschedule, find.

The caller's own, only: every one of them acts for the verified caller
(`ivr.tools.phone.own_number`). A booking is made under the caller's number; a booking
reference that is someone else's is "not found", exactly like one that does not exist,
so references cannot be probed; a `phone` argument naming another number is refused; an
anonymous caller can do none of it. Availability (`availability`) is open to anyone.

Never double-booked, never lost: every write runs in its own write transaction
(`store.backend`). On SQLite that is `BEGIN IMMEDIATE`, so writers queue at the write lock
and each sees the others' committed rows; on PostgreSQL two writers may both find a slot
free, and the partial unique index on (day, start) for booked rows decides: the second
INSERT waits for the first to commit, then fails and is answered "taken". The index is
the backstop that makes a double booking impossible in both, even for a writer that
skipped the check. A write
that fails rolls back whole: a reschedule onto a taken slot leaves the old booking as it
was.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

from ivr.store.backend import Busy, Database, Row, UniqueViolation
from ivr.store.db import utc_now
from ivr.tools.base import Tool, ToolContext, ToolError
from ivr.tools.builtin import availability
from ivr.tools.builtin.availability import (
    DAY_ARG,
    SERVICE_ARG,
    START_ARG,
    TIMEOUT_S,
    bookable,
    is_past,
    parse_day,
    parse_start,
    rows,
    service_named,
    slot_taken,
    taken_error,
    tool_schema,
    weekday,
)
from ivr.tools.phone import own_number

__all__ = ["REF_PREFIX", "TOOLS", "book", "cancel", "find", "normalize_ref", "reschedule"]

REF_PREFIX = "BK-"
# No 0/O, 1/I/L: a reference is read out and spoken back over the phone.
REF_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
REF_LENGTH = 5

# What the caller-scoped refusals say the tool could not do (`own_number`).
_BOOK = "book an appointment"
_CHANGE = "look up or change bookings"

_REF_RE = re.compile(r"^[A-Z0-9]{5}$")


def normalize_ref(text: str) -> str:
    """A booking reference as stored; accepts "bk 7f3k2", "BK7F3K2" or just "7F3K2"."""
    s = re.sub(r"[\s\-]", "", text).upper()
    if s.startswith(REF_PREFIX[:-1]) and len(s) == len(REF_PREFIX) - 1 + REF_LENGTH:
        s = s[len(REF_PREFIX) - 1:]
    if not _REF_RE.match(s):
        raise ToolError(f"{text!r} is not a booking reference; they look like BK-7F3K2")
    return REF_PREFIX + s


def _new_ref() -> str:
    return REF_PREFIX + "".join(secrets.choice(REF_ALPHABET) for _ in range(REF_LENGTH))


# --------------------------------------------------------------------------- database


@asynccontextmanager
async def _writing(ctx: ToolContext) -> AsyncIterator[Database]:
    """One write transaction on a database of this tool call's own; a lock not had in
    time is "busy", in words the bot can relay."""
    try:
        async with ctx.db() as db, db.transaction() as tx:
            yield tx
    except Busy as e:
        raise ToolError("the booking system is busy; please try again") from e


def _for_update(conn: Database) -> str:
    # PostgreSQL: the row read is locked until the transaction ends, so two cancels of
    # one booking go one after the other (the second finds it cancelled), as under
    # SQLite's BEGIN IMMEDIATE.
    return " FOR UPDATE" if conn.dialect == "postgresql" else ""


def _is_slot_conflict(e: UniqueViolation) -> bool:
    # SQLite names the partial unique index's columns (the ref's UNIQUE names
    # bookings.ref); PostgreSQL names the index.
    return "bookings.day" in e.what or "bookings_one_per_slot" in e.what


async def _own_booking(conn: Database, ref: str, phone: str) -> Row:
    """The caller's booking `ref`; someone else's is not found, like a missing one."""
    found = await rows(conn, "SELECT * FROM bookings WHERE ref = ? AND phone = ?"
                       + _for_update(conn), (ref, phone))
    if not found:
        raise ToolError(f"no booking with reference {ref} under the caller's number")
    return found[0]


async def _own_booking_on(
    conn: Database, args: dict[str, Any], phone: str
) -> Row:
    """The caller's one booked appointment on `args["day"]` (at `args["start"]`, if given)."""
    day = parse_day(args["day"])
    sql = "SELECT * FROM bookings WHERE phone = ? AND day = ? AND status = 'booked'"
    params: list[Any] = [phone, day.isoformat()]
    if args.get("start"):
        sql += " AND start = ?"
        params.append(parse_start(args["start"]))
    found = await rows(conn, sql + " ORDER BY start" + _for_update(conn), params)
    if not found:
        raise ToolError(f"no booking for the caller's number on {weekday(day)} "
                        f"{day.isoformat()}")
    if len(found) > 1:
        times = [str(r["start"]) for r in found]
        raise ToolError(
            f"there are {len(found)} bookings for the caller's number that day, at "
            f"{', '.join(times)}; which one?",
            {"bookings": [_booking_out(r) for r in found]},
        )
    return found[0]


def _booking_out(row: Row) -> dict[str, Any]:
    day = date.fromisoformat(row["day"])
    return {"ref": row["ref"], "service": row["service"], "day": row["day"],
            "weekday": weekday(day), "start": row["start"]}


# ------------------------------------------------------------------------------ tools


async def book(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    phone = own_number(args, ctx, what=_BOOK)
    day = parse_day(args["day"])
    start = parse_start(args["start"])
    name = " ".join(str(args["name"]).split())
    if not name:
        raise ToolError("a booking needs the caller's name")
    bookable(day, start, ctx.now)
    now = utc_now()
    async with _writing(ctx) as conn:
        service = await service_named(conn, args["service"])
        # Under BEGIN IMMEDIATE this check cannot go stale before the INSERT; the
        # unique index would still refuse a second booking if it did.
        if await slot_taken(conn, day, start):
            raise await taken_error(conn, day, start, ctx.now)
        while True:
            ref = _new_ref()
            try:
                # A savepoint: after a refused INSERT the transaction goes on (PostgreSQL
                # would otherwise refuse every statement until the rollback).
                async with conn.savepoint():
                    await conn.execute(
                        """INSERT INTO bookings (ref, service, day, start, name, phone,
                                                 status, created_at, updated_at, call_sid)
                           VALUES (?, ?, ?, ?, ?, ?, 'booked', ?, ?, ?)""",
                        (ref, service, day.isoformat(), start, name, phone, now, now,
                         ctx.call_sid),
                    )
                break
            except UniqueViolation as e:
                if _is_slot_conflict(e):
                    raise await taken_error(conn, day, start, ctx.now) from None
                if "bookings.ref" not in e.what and "bookings_ref_key" not in e.what:
                    raise
                # A reference collision (1 in ~28 million per booking): draw again.
    return {"ref": ref, "service": service, "day": day.isoformat(), "weekday": weekday(day),
            "start": start}


async def cancel(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    phone = own_number(args, ctx, what=_CHANGE)
    ref = normalize_ref(args["ref"]) if args.get("ref") else None
    async with _writing(ctx) as conn:
        if ref is not None:
            row = await _own_booking(conn, ref, phone)
        else:
            row = await _own_booking_on(conn, args, phone)
        if row["status"] == "cancelled":
            raise ToolError(f"booking {row['ref']} is already cancelled")
        if is_past(date.fromisoformat(row["day"]), row["start"], ctx.now):
            raise ToolError(f"booking {row['ref']} has already taken place")
        await conn.execute(
            "UPDATE bookings SET status = 'cancelled', updated_at = ? WHERE id = ?",
            (utc_now(), row["id"]),
        )
    return {**_booking_out(row), "status": "cancelled"}


async def reschedule(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    phone = own_number(args, ctx, what=_CHANGE)
    ref = normalize_ref(args["ref"])
    day = parse_day(args["day"])
    start = parse_start(args["start"])
    bookable(day, start, ctx.now)
    async with _writing(ctx) as conn:
        row = await _own_booking(conn, ref, phone)
        if row["status"] != "booked":
            raise ToolError(f"booking {ref} is cancelled; make a new booking instead")
        if is_past(date.fromisoformat(row["day"]), row["start"], ctx.now):
            raise ToolError(f"booking {ref} has already taken place")
        previous = {"day": row["day"], "start": row["start"]}
        if (row["day"], row["start"]) == (day.isoformat(), start):
            return {**_booking_out(row), "previous": previous, "changed": False}
        if await slot_taken(conn, day, start):
            raise await taken_error(conn, day, start, ctx.now)
        try:
            # Moving the row frees the old slot and takes the new one in one statement,
            # inside the transaction: there is no moment with both or neither.
            async with conn.savepoint():
                await conn.execute(
                    "UPDATE bookings SET day = ?, start = ?, updated_at = ? WHERE id = ?",
                    (day.isoformat(), start, utc_now(), row["id"]),
                )
        except UniqueViolation as e:
            if _is_slot_conflict(e):
                raise await taken_error(conn, day, start, ctx.now) from None
            raise
    return {"ref": ref, "service": row["service"], "day": day.isoformat(),
            "weekday": weekday(day), "start": start, "previous": previous, "changed": True}


async def find(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    # The number itself is not in the result: it would reach a model's context.
    phone = own_number(args, ctx, what=_CHANGE)
    async with ctx.db() as conn:
        found = await rows(
            conn,
            """SELECT * FROM bookings WHERE phone = ? AND status = 'booked' AND day >= ?
               ORDER BY day, start""",
            (phone, ctx.now.date().isoformat()),
        )
    upcoming = [
        _booking_out(r) for r in found
        if not is_past(date.fromisoformat(r["day"]), r["start"], ctx.now)
    ]
    return {"bookings": upcoming}


# ---------------------------------------------------------------------------- schemas

_PHONE = {"type": "string", "maxLength": 32,
          "description": "leave out: always the caller's own number (another is refused)"}
_REF = {"type": "string", "minLength": 1, "maxLength": 16,
        "description": "booking reference, e.g. BK-7F3K2"}


TOOLS: tuple[Tool, ...] = (
    *availability.TOOLS,
    Tool(
        name="bookings.book",
        description=("Book an appointment for the caller, under their own number. Returns "
                     "the booking reference to read back. If the time is taken the error "
                     "lists the nearest free times."),
        parameters=tool_schema(
            ["service", "day", "start", "name"],
            service=SERVICE_ARG, day=DAY_ARG, start=START_ARG,
            name={"type": "string", "minLength": 1, "maxLength": 100,
                  "description": "the name the booking is under"},
            phone=_PHONE,
        ),
        handler=book,
        timeout_s=TIMEOUT_S,
    ),
    Tool(
        name="bookings.cancel",
        description=("Cancel one of the caller's bookings, by its reference or by day (add "
                     "start when the caller has several bookings that day)."),
        parameters={
            **tool_schema([], ref=_REF, phone=_PHONE, day=DAY_ARG, start=START_ARG),
            "anyOf": [{"required": ["ref"]}, {"required": ["day"]}],
        },
        handler=cancel,
        timeout_s=TIMEOUT_S,
    ),
    Tool(
        name="bookings.reschedule",
        description=("Move one of the caller's bookings to another day and time, keeping its "
                     "reference. If the new time is taken nothing changes and the error "
                     "lists free times."),
        parameters=tool_schema(["ref", "day", "start"], ref=_REF, day=DAY_ARG,
                               start=START_ARG),
        handler=reschedule,
        timeout_s=TIMEOUT_S,
    ),
    Tool(
        name="bookings.find",
        description="The caller's own upcoming bookings (found by the number they call from).",
        parameters=tool_schema([], phone=_PHONE),
        handler=find,
        timeout_s=TIMEOUT_S,
    ),
)
