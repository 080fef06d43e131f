"""Appointment tools: availability, book, cancel, reschedule, find.

One chair: a slot holds at most one booking whatever the service, and service durations
are informational (a 60-minute whitening still occupies one 30-minute slot). Slots are
`SLOT_MINUTES` long inside `OPENS`-`CLOSES` on `OPEN_WEEKDAYS`, read on the business clock
(`ToolContext.now`, in its own time zone).

Never double-booked, never lost: every write runs in its own connection inside
`BEGIN IMMEDIATE`, so writers queue at SQLite's write lock and each sees the others'
committed rows; the partial unique index on (day, start) for booked rows is the backstop
that makes a double booking impossible even for a writer that skipped the check. A write
that fails rolls back whole: a reschedule onto a taken slot leaves the old booking as it
was.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import date, datetime, time, timedelta
from typing import Any

import aiosqlite

from ivr.store.db import utc_now
from ivr.tools.base import BUSY_TIMEOUT_S, Tool, ToolContext, ToolError
from ivr.tools.phone import phone_arg

OPEN_WEEKDAYS = frozenset({0, 1, 2, 3, 4})  # Monday..Friday (date.weekday())
OPENS = time(9, 0)
CLOSES = time(17, 0)
SLOT_MINUTES = 30
HOURS_TEXT = "Monday to Friday, 09:00 to 17:00"
HORIZON_DAYS = 90  # how far ahead bookings are taken
ALTERNATIVES = 3  # free times offered when the asked-for one is taken
ALTERNATIVE_SEARCH_DAYS = 14  # how far past the asked-for day alternatives are looked for

REF_PREFIX = "BK-"
# No 0/O, 1/I/L: a reference is read out and spoken back over the phone.
REF_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
REF_LENGTH = 5

# Writers wait up to BUSY_TIMEOUT_S for the write lock; the tools' time limit is longer, so
# a busy database is answered by SQLite (rolled back, "busy") and not by a cancellation
# that could land while a COMMIT is already under way.
TIMEOUT_S = 2 * BUSY_TIMEOUT_S

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _slot_starts() -> tuple[str, ...]:
    starts: list[str] = []
    t = datetime.combine(date.min, OPENS)
    end = datetime.combine(date.min, CLOSES)
    while t + timedelta(minutes=SLOT_MINUTES) <= end:
        starts.append(t.strftime("%H:%M"))
        t += timedelta(minutes=SLOT_MINUTES)
    return tuple(starts)


SLOTS = _slot_starts()  # "09:00" .. "16:30"

# ---------------------------------------------------------------------------- parsing

_DAY_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_START_RE = re.compile(r"^([0-9]{1,2}):([0-9]{2})$")
_REF_RE = re.compile(r"^[A-Z0-9]{5}$")


def parse_day(text: str) -> date:
    if not _DAY_RE.match(text.strip()):
        raise ToolError(f"day must be an ISO date like 2025-03-14, not {text!r}")
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ToolError(f"{text!r} is not a real date") from None


def parse_start(text: str) -> str:
    """A slot start as stored ("9:30" -> "09:30"), or ToolError saying what is allowed."""
    m = _START_RE.match(text.strip())
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ToolError(f"start must be a 24-hour time like 09:30, not {text!r}")
    start = f"{int(m[1]):02d}:{m[2]}"
    if start in SLOTS:
        return start
    if int(m[2]) % SLOT_MINUTES:
        raise ToolError(f"appointments start every {SLOT_MINUTES} minutes (09:00, 09:30, ...)")
    raise ToolError(f"{start} is outside opening hours; the first appointment is at "
                    f"{SLOTS[0]} and the last at {SLOTS[-1]}")


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


def _weekday(day: date) -> str:
    # Not strftime("%A"): that follows the process locale.
    return WEEKDAYS[day.weekday()]


def _closed_reason(day: date, now: datetime) -> str | None:
    """Why nothing can be booked on `day`, or None if it is a bookable day."""
    today = now.date()
    if day < today:
        return f"{day.isoformat()} has already passed"
    if day > today + timedelta(days=HORIZON_DAYS):
        return f"we only take bookings up to {HORIZON_DAYS} days ahead"
    if day.weekday() not in OPEN_WEEKDAYS:
        return f"we are closed on {_weekday(day)}s; we are open {HOURS_TEXT}"
    return None


def _is_past(day: date, start: str, now: datetime) -> bool:
    # A slot that has started is gone: nobody can be booked into 10:00 at 10:05.
    return datetime.combine(day, time.fromisoformat(start), tzinfo=now.tzinfo) <= now


def _minutes(start: str) -> int:
    return int(start[:2]) * 60 + int(start[3:])


# --------------------------------------------------------------------------- database


@asynccontextmanager
async def _immediate(conn: aiosqlite.Connection) -> AsyncIterator[None]:
    """One write transaction: the write lock is taken at BEGIN, so reads inside it are
    consistent with the writes that follow (no other writer can slip in between)."""
    try:
        await conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if e.sqlite_errorcode == sqlite3.SQLITE_BUSY:
            raise ToolError("the booking system is busy; please try again") from e
        raise
    try:
        yield
    except BaseException:
        # Closing the connection would roll back too; this just does it now.
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


async def _rows(
    conn: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, tuple(params)))


async def _service(conn: aiosqlite.Connection, name: str) -> str:
    key = name.strip().lower()
    rows = await _rows(conn, "SELECT name FROM services WHERE name = ?", (key,))
    if rows:
        return str(rows[0]["name"])
    offered = [str(r["name"]) for r in await _rows(conn, "SELECT name FROM services ORDER BY name")]
    raise ToolError(f"we don't offer {name!r}; services are: {', '.join(offered)}",
                    {"services": offered})


async def _free_slots(conn: aiosqlite.Connection, day: date, now: datetime) -> list[str]:
    if _closed_reason(day, now) is not None:
        return []
    taken = {
        str(r["start"])
        for r in await _rows(
            conn, "SELECT start FROM bookings WHERE day = ? AND status = 'booked'",
            (day.isoformat(),),
        )
    }
    return [s for s in SLOTS if s not in taken and not _is_past(day, s, now)]


async def _slot_taken(conn: aiosqlite.Connection, day: date, start: str) -> bool:
    rows = await _rows(
        conn, "SELECT 1 FROM bookings WHERE day = ? AND start = ? AND status = 'booked'",
        (day.isoformat(), start),
    )
    return bool(rows)


async def _taken_error(
    conn: aiosqlite.Connection, day: date, start: str, now: datetime
) -> ToolError:
    """'that time is taken' with the nearest free times: same day first, then later days."""
    target = _minutes(start)
    same_day = sorted(await _free_slots(conn, day, now),
                      key=lambda s: (abs(_minutes(s) - target), _minutes(s)))
    found = [(day, s) for s in sorted(same_day[:ALTERNATIVES])]
    d = day
    for _ in range(ALTERNATIVE_SEARCH_DAYS):
        if len(found) >= ALTERNATIVES:
            break
        d += timedelta(days=1)
        free = await _free_slots(conn, d, now)
        found.extend((d, s) for s in free[: ALTERNATIVES - len(found)])
    alternatives = [
        {"day": d.isoformat(), "weekday": _weekday(d), "start": s} for d, s in found
    ]
    if alternatives:
        spoken = ", ".join(f"{a['weekday']} {a['day']} at {a['start']}" for a in alternatives)
        message = f"that time is taken; the nearest free times are {spoken}"
    else:
        message = "that time is taken and nothing is free in the next two weeks"
    return ToolError(message, {"taken": {"day": day.isoformat(), "start": start},
                               "alternatives": alternatives})


def _is_slot_conflict(e: sqlite3.IntegrityError) -> bool:
    # The partial unique index names its columns; the ref's UNIQUE names bookings.ref.
    return "bookings.day" in str(e)


async def _booking_by_ref(conn: aiosqlite.Connection, ref: str) -> sqlite3.Row:
    rows = await _rows(conn, "SELECT * FROM bookings WHERE ref = ?", (ref,))
    if not rows:
        raise ToolError(f"no booking with reference {ref}")
    return rows[0]


def _booking_out(row: sqlite3.Row) -> dict[str, Any]:
    day = date.fromisoformat(row["day"])
    return {"ref": row["ref"], "service": row["service"], "day": row["day"],
            "weekday": _weekday(day), "start": row["start"]}


def _bookable(day: date, start: str, now: datetime) -> None:
    reason = _closed_reason(day, now)
    if reason is not None:
        raise ToolError(reason)
    if _is_past(day, start, now):
        raise ToolError(f"{start} today has already passed")


# ------------------------------------------------------------------------------ tools


async def check_availability(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    day = parse_day(args["day"])
    out: dict[str, Any] = {"day": day.isoformat(), "weekday": _weekday(day)}
    async with ctx.db() as conn:
        if args.get("service") is not None:
            out["service"] = await _service(conn, args["service"])
        reason = _closed_reason(day, ctx.now)
        free = [] if reason else await _free_slots(conn, day, ctx.now)
    out["available"] = free
    if reason:
        out["reason"] = reason
    elif not free:
        out["reason"] = ("no times are left today" if day == ctx.now.date()
                         else "that day is fully booked")
    return out


async def book(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    day = parse_day(args["day"])
    start = parse_start(args["start"])
    name = " ".join(str(args["name"]).split())
    if not name:
        raise ToolError("a booking needs the caller's name")
    phone = phone_arg(args, ctx)
    _bookable(day, start, ctx.now)
    now = utc_now()
    async with ctx.db() as conn, _immediate(conn):
        service = await _service(conn, args["service"])
        # Under BEGIN IMMEDIATE this check cannot go stale before the INSERT; the
        # unique index would still refuse a second booking if it did.
        if await _slot_taken(conn, day, start):
            raise await _taken_error(conn, day, start, ctx.now)
        while True:
            ref = _new_ref()
            try:
                await conn.execute(
                    """INSERT INTO bookings (ref, service, day, start, name, phone, status,
                                             created_at, updated_at, call_sid)
                       VALUES (?, ?, ?, ?, ?, ?, 'booked', ?, ?, ?)""",
                    (ref, service, day.isoformat(), start, name, phone, now, now,
                     ctx.call_sid),
                )
                break
            except sqlite3.IntegrityError as e:
                if _is_slot_conflict(e):
                    raise await _taken_error(conn, day, start, ctx.now) from None
                if "bookings.ref" not in str(e):
                    raise
                # A reference collision (1 in ~28 million per booking): draw again.
    return {"ref": ref, "service": service, "day": day.isoformat(), "weekday": _weekday(day),
            "start": start}


async def cancel(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    async with ctx.db() as conn, _immediate(conn):
        if args.get("ref"):
            row = await _booking_by_ref(conn, normalize_ref(args["ref"]))
        else:
            row = await _booking_by_phone_and_day(conn, args, ctx)
        if row["status"] == "cancelled":
            raise ToolError(f"booking {row['ref']} is already cancelled")
        if _is_past(date.fromisoformat(row["day"]), row["start"], ctx.now):
            raise ToolError(f"booking {row['ref']} has already taken place")
        await conn.execute(
            "UPDATE bookings SET status = 'cancelled', updated_at = ? WHERE id = ?",
            (utc_now(), row["id"]),
        )
    return {**_booking_out(row), "status": "cancelled"}


async def _booking_by_phone_and_day(
    conn: aiosqlite.Connection, args: dict[str, Any], ctx: ToolContext
) -> sqlite3.Row:
    phone = phone_arg(args, ctx)
    if not phone:
        raise ToolError("I need the booking reference, or the phone number the booking is "
                        "under")
    day = parse_day(args["day"])
    sql = "SELECT * FROM bookings WHERE phone = ? AND day = ? AND status = 'booked'"
    params: list[Any] = [phone, day.isoformat()]
    if args.get("start"):
        sql += " AND start = ?"
        params.append(parse_start(args["start"]))
    rows = await _rows(conn, sql + " ORDER BY start", params)
    if not rows:
        raise ToolError(f"no booking for that number on {_weekday(day)} {day.isoformat()}")
    if len(rows) > 1:
        times = [str(r["start"]) for r in rows]
        raise ToolError(
            f"there are {len(rows)} bookings for that number that day, at "
            f"{', '.join(times)}; which one?",
            {"bookings": [_booking_out(r) for r in rows]},
        )
    return rows[0]


async def reschedule(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    ref = normalize_ref(args["ref"])
    day = parse_day(args["day"])
    start = parse_start(args["start"])
    _bookable(day, start, ctx.now)
    async with ctx.db() as conn, _immediate(conn):
        row = await _booking_by_ref(conn, ref)
        if row["status"] != "booked":
            raise ToolError(f"booking {ref} is cancelled; make a new booking instead")
        if _is_past(date.fromisoformat(row["day"]), row["start"], ctx.now):
            raise ToolError(f"booking {ref} has already taken place")
        previous = {"day": row["day"], "start": row["start"]}
        if (row["day"], row["start"]) == (day.isoformat(), start):
            return {**_booking_out(row), "previous": previous, "changed": False}
        if await _slot_taken(conn, day, start):
            raise await _taken_error(conn, day, start, ctx.now)
        try:
            # Moving the row frees the old slot and takes the new one in one statement,
            # inside the transaction: there is no moment with both or neither.
            await conn.execute(
                "UPDATE bookings SET day = ?, start = ?, updated_at = ? WHERE id = ?",
                (day.isoformat(), start, utc_now(), row["id"]),
            )
        except sqlite3.IntegrityError as e:
            if _is_slot_conflict(e):
                raise await _taken_error(conn, day, start, ctx.now) from None
            raise
    return {"ref": ref, "service": row["service"], "day": day.isoformat(),
            "weekday": _weekday(day), "start": start, "previous": previous, "changed": True}


async def find(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    phone = phone_arg(args, ctx)
    if not phone:
        raise ToolError("I need a phone number to look bookings up")
    async with ctx.db() as conn:
        rows = await _rows(
            conn,
            """SELECT * FROM bookings WHERE phone = ? AND status = 'booked' AND day >= ?
               ORDER BY day, start""",
            (phone, ctx.now.date().isoformat()),
        )
    upcoming = [
        _booking_out(r) for r in rows
        if not _is_past(date.fromisoformat(r["day"]), r["start"], ctx.now)
    ]
    return {"phone": phone, "bookings": upcoming}


async def list_services(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    async with ctx.db() as conn:
        rows = await _rows(conn, "SELECT * FROM services ORDER BY name")
    return {
        "services": [{"name": r["name"], "duration_min": r["duration_min"],
                      "description": r["description"]} for r in rows],
        "hours": HOURS_TEXT,
    }


# ---------------------------------------------------------------------------- schemas

_DAY = {"type": "string", "format": "date", "description": "ISO date, e.g. 2025-03-14"}
_START = {
    "type": "string", "pattern": "^[0-9]{1,2}:[0-9]{2}$",
    "description": f"24-hour start time, on the hour or half past, {SLOTS[0]} to {SLOTS[-1]}",
}
_SERVICE = {"type": "string", "minLength": 1, "maxLength": 40,
            "description": "service name, e.g. cleaning (see bookings.list_services)"}
_PHONE = {"type": "string", "maxLength": 32,
          "description": "phone number; omit to use the caller's own number"}
_REF = {"type": "string", "minLength": 1, "maxLength": 16,
        "description": "booking reference, e.g. BK-7F3K2"}


def _schema(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}


TOOLS: tuple[Tool, ...] = (
    Tool(
        name="bookings.list_services",
        description=f"List the services that can be booked and the opening hours ({HOURS_TEXT}).",
        parameters=_schema([]),
        handler=list_services,
        timeout_s=TIMEOUT_S,
    ),
    Tool(
        name="bookings.check_availability",
        description=(f"Free appointment start times on a day ({SLOT_MINUTES}-minute slots, "
                     f"{HOURS_TEXT}). Past times and closed days come back empty with a "
                     "reason."),
        parameters=_schema(["day"], day=_DAY, service=_SERVICE),
        handler=check_availability,
        timeout_s=TIMEOUT_S,
    ),
    Tool(
        name="bookings.book",
        description=("Book an appointment. Returns the booking reference to read back to the "
                     "caller. If the time is taken the error lists the nearest free times."),
        parameters=_schema(
            ["service", "day", "start", "name"],
            service=_SERVICE, day=_DAY, start=_START,
            name={"type": "string", "minLength": 1, "maxLength": 100,
                  "description": "the name the booking is under"},
            phone=_PHONE,
        ),
        handler=book,
        timeout_s=TIMEOUT_S,
    ),
    Tool(
        name="bookings.cancel",
        description=("Cancel a booking by its reference, or by phone number and day (add "
                     "start when the number has several bookings that day)."),
        parameters={
            **_schema([], ref=_REF, phone=_PHONE, day=_DAY, start=_START),
            "anyOf": [{"required": ["ref"]}, {"required": ["day"]}],
        },
        handler=cancel,
        timeout_s=TIMEOUT_S,
    ),
    Tool(
        name="bookings.reschedule",
        description=("Move a booking to another day and time, keeping its reference. If the "
                     "new time is taken nothing changes and the error lists free times."),
        parameters=_schema(["ref", "day", "start"], ref=_REF, day=_DAY, start=_START),
        handler=reschedule,
        timeout_s=TIMEOUT_S,
    ),
    Tool(
        name="bookings.find",
        description="The caller's upcoming bookings (by phone number, default the caller's).",
        parameters=_schema([], phone=_PHONE),
        handler=find,
        timeout_s=TIMEOUT_S,
    ),
)
