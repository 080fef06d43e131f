"""When an appointment can be booked: opening hours, slots, free times and the nearest
alternatives; the read-only tools `bookings.check_availability` and
`bookings.list_services`.

One chair: a slot holds at most one booking whatever the service, and service durations
are informational (a 60-minute whitening still occupies one 30-minute slot). Slots are
`SLOT_MINUTES` long inside `OPENS`-`CLOSES` on `OPEN_WEEKDAYS`, read on the business clock
(`ToolContext.now`, in its own time zone). Availability is nobody's personal data: any
caller, anonymous too, may ask.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any

from ivr.store.backend import Database, Row
from ivr.tools.base import BUSY_TIMEOUT_S, Tool, ToolContext, ToolError

__all__ = [
    "CLOSES",
    "DAY_ARG",
    "HOURS_TEXT",
    "OPENS",
    "OPEN_WEEKDAYS",
    "SERVICE_ARG",
    "SLOTS",
    "SLOT_MINUTES",
    "START_ARG",
    "TIMEOUT_S",
    "TOOLS",
    "bookable",
    "is_past",
    "parse_day",
    "parse_start",
    "rows",
    "service_named",
    "slot_taken",
    "taken_error",
    "tool_schema",
    "weekday",
]

OPEN_WEEKDAYS = frozenset({0, 1, 2, 3, 4})  # Monday..Friday (date.weekday())
OPENS = time(9, 0)
CLOSES = time(17, 0)
SLOT_MINUTES = 30
HOURS_TEXT = "Monday to Friday, 09:00 to 17:00"
HORIZON_DAYS = 90  # how far ahead bookings are taken
ALTERNATIVES = 3  # free times offered when the asked-for one is taken
ALTERNATIVE_SEARCH_DAYS = 14  # how far past the asked-for day alternatives are looked for

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


def weekday(day: date) -> str:
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
        return f"we are closed on {weekday(day)}s; we are open {HOURS_TEXT}"
    return None


def is_past(day: date, start: str, now: datetime) -> bool:
    # A slot that has started is gone: nobody can be booked into 10:00 at 10:05.
    return datetime.combine(day, time.fromisoformat(start), tzinfo=now.tzinfo) <= now


def bookable(day: date, start: str, now: datetime) -> None:
    """Nothing, or a ToolError saying why `start` on `day` cannot be booked at all."""
    reason = _closed_reason(day, now)
    if reason is not None:
        raise ToolError(reason)
    if is_past(day, start, now):
        raise ToolError(f"{start} today has already passed")


def _minutes(start: str) -> int:
    return int(start[:2]) * 60 + int(start[3:])


# --------------------------------------------------------------------------- database


async def rows(conn: Database, sql: str, params: Iterable[Any] = ()) -> list[Row]:
    return await conn.fetch(sql, tuple(params))


async def service_named(conn: Database, name: str) -> str:
    """The service as stored, or a ToolError listing the services offered."""
    key = name.strip().lower()
    found = await rows(conn, "SELECT name FROM services WHERE name = ?", (key,))
    if found:
        return str(found[0]["name"])
    offered = [str(r["name"]) for r in await rows(conn, "SELECT name FROM services ORDER BY name")]
    raise ToolError(f"we don't offer {name!r}; services are: {', '.join(offered)}",
                    {"services": offered})


async def _free_slots(conn: Database, day: date, now: datetime) -> list[str]:
    if _closed_reason(day, now) is not None:
        return []
    taken = {
        str(r["start"])
        for r in await rows(
            conn, "SELECT start FROM bookings WHERE day = ? AND status = 'booked'",
            (day.isoformat(),),
        )
    }
    return [s for s in SLOTS if s not in taken and not is_past(day, s, now)]


async def slot_taken(conn: Database, day: date, start: str) -> bool:
    found = await rows(
        conn, "SELECT 1 FROM bookings WHERE day = ? AND start = ? AND status = 'booked'",
        (day.isoformat(), start),
    )
    return bool(found)


async def taken_error(
    conn: Database, day: date, start: str, now: datetime
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
        {"day": d.isoformat(), "weekday": weekday(d), "start": s} for d, s in found
    ]
    if alternatives:
        spoken = ", ".join(f"{a['weekday']} {a['day']} at {a['start']}" for a in alternatives)
        message = f"that time is taken; the nearest free times are {spoken}"
    else:
        message = "that time is taken and nothing is free in the next two weeks"
    return ToolError(message, {"taken": {"day": day.isoformat(), "start": start},
                               "alternatives": alternatives})


# ------------------------------------------------------------------------------ tools


async def check_availability(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    day = parse_day(args["day"])
    out: dict[str, Any] = {"day": day.isoformat(), "weekday": weekday(day)}
    async with ctx.db() as conn:
        if args.get("service") is not None:
            out["service"] = await service_named(conn, args["service"])
        reason = _closed_reason(day, ctx.now)
        free = [] if reason else await _free_slots(conn, day, ctx.now)
    out["available"] = free
    if reason:
        out["reason"] = reason
    elif not free:
        out["reason"] = ("no times are left today" if day == ctx.now.date()
                         else "that day is fully booked")
    return out


async def list_services(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    async with ctx.db() as conn:
        found = await rows(conn, "SELECT * FROM services ORDER BY name")
    return {
        "services": [{"name": r["name"], "duration_min": r["duration_min"],
                      "description": r["description"]} for r in found],
        "hours": HOURS_TEXT,
    }


# ---------------------------------------------------------------------------- schemas

DAY_ARG = {"type": "string", "format": "date", "description": "ISO date, e.g. 2025-03-14"}
START_ARG = {
    "type": "string", "pattern": "^[0-9]{1,2}:[0-9]{2}$",
    "description": f"24-hour start time, on the hour or half past, {SLOTS[0]} to {SLOTS[-1]}",
}
SERVICE_ARG = {"type": "string", "minLength": 1, "maxLength": 40,
               "description": "service name, e.g. cleaning (see bookings.list_services)"}


def tool_schema(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}


TOOLS: tuple[Tool, ...] = (
    Tool(
        name="bookings.list_services",
        description=f"List the services that can be booked and the opening hours ({HOURS_TEXT}).",
        parameters=tool_schema([]),
        handler=list_services,
        timeout_s=TIMEOUT_S,
    ),
    Tool(
        name="bookings.check_availability",
        description=(f"Free appointment start times on a day ({SLOT_MINUTES}-minute slots, "
                     f"{HOURS_TEXT}). Past times and closed days come back empty with a "
                     "reason."),
        parameters=tool_schema(["day"], day=DAY_ARG, service=SERVICE_ARG),
        handler=check_availability,
        timeout_s=TIMEOUT_S,
    ),
)
