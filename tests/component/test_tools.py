"""Tools: the registry's contract (validation, timeouts, contained failures), bookings on a
real database of each back end, a SQLite file and PostgreSQL (availability, book, cancel,
reschedule, concurrent callers racing for one slot), each caller reaching only their own
bookings, orders and account, lookups and the demo seed."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from structlog.testing import capture_logs

from ivr.store.backend import UniqueViolation, connect
from ivr.store.db import SCHEMA_VERSION, CallStore
from ivr.tools import (
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    default_registry,
    seed,
)
from ivr.tools.builtin import bookings
from ivr.tools.builtin.availability import SLOTS
from ivr.tools.builtin.lookups import spoken_money
from ivr.tools.phone import ANONYMOUS_CALLER, OTHER_NUMBER, normalize_phone

# The business clock: a fixed Monday morning in a non-UTC zone, so "today" and "past"
# are read in the context's zone, not the host's.
TZ = timezone(timedelta(hours=-5))
MONDAY = date(2030, 1, 7)
TUESDAY, WEDNESDAY, THURSDAY, FRIDAY, SATURDAY = (MONDAY + timedelta(days=i) for i in range(1, 6))
NOW = datetime(2030, 1, 7, 10, 10, tzinfo=TZ)
ALICE = "+15550100001"  # seeded: booking BK-SEED2 on TUESDAY at 10:00, order 4567
BOB = "+15550100002"  # seeded: order 3141
CAROL = "+15550100003"  # seeded: booking BK-SEED3 on WEDNESDAY at 14:30
DAVID = "+15550100004"  # seeded: an account


Db = Path | str  # a SQLite file or a PostgreSQL URL (conftest's `db_target`)


@pytest.fixture
async def db(db_target: Db) -> Db:
    await seed(db_target, today=MONDAY)
    return db_target


@pytest.fixture
def registry(db: Db) -> ToolRegistry:
    return default_registry(db)


def ctx_for(db: Db, caller: str = ALICE, now: datetime = NOW) -> ToolContext:
    return ToolContext(call_sid="CA" + "1" * 32, caller=caller, db_path=db, now=now)


async def query(db: Db, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = await connect(db)
    try:
        return [tuple(r.values()) for r in await conn.fetch(sql, params)]
    finally:
        await conn.close()


async def booked_rows(db: Db) -> list[tuple[Any, ...]]:
    return await query(db, "SELECT ref, day, start, status FROM bookings ORDER BY ref")


def book_args(day: date, start: str, name: str = "Dana Scully", **extra: Any) -> dict[str, Any]:
    return {"service": "cleaning", "day": day.isoformat(), "start": start, "name": name,
            **extra}


# ------------------------------------------------------------------------ registry


async def _echo(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return {"echo": args}


def _tool(name: str = "test.echo", handler: Any = _echo, timeout_s: float = 5.0) -> Tool:
    return Tool(
        name=name, description="test", handler=handler, timeout_s=timeout_s,
        parameters={"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}},
                    "required": ["n"], "additionalProperties": False},
    )


def test_schemas_are_openai_function_definitions(registry: ToolRegistry) -> None:
    schemas = registry.schemas()
    names = [s["function"]["name"] for s in schemas]
    assert "bookings__book" in names and "lookups__order_status" in names
    assert all(s["type"] == "function" for s in schemas)
    assert all(s["function"]["parameters"]["type"] == "object" for s in schemas)
    assert all(n.replace("_", "").isalnum() for n in names)
    assert registry.get("bookings__book") is registry.get("bookings.book") is not None
    assert registry.names() == sorted(registry.names())


def test_register_refuses_bad_tools() -> None:
    reg = ToolRegistry()
    reg.register(_tool())
    with pytest.raises(ValueError, match="already registered"):
        reg.register(_tool())
    with pytest.raises(ValueError, match="dotted lower-case"):
        reg.register(_tool(name="bad__name"))
    with pytest.raises(ValueError, match="invalid parameters schema"):
        reg.register(Tool(name="test.bad", description="", handler=_echo,
                          parameters={"type": "object", "properties": {"n": {"type": 5}}}))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, "missing required argument 'n'"),
        ({"n": "two"}, "argument 'n': 'two' is not of type 'integer'"),
        ({"n": 0}, "argument 'n': 0 is less than the minimum of 1"),
        ({"n": 1, "x": 2}, "unexpected argument 'x' (allowed: n)"),
        ("[1]", "arguments must be a JSON object"),
        ("{nope", "arguments are not valid JSON"),
    ],
)
async def test_invalid_arguments_are_refused_before_the_handler_runs(
    tmp_path: Path, args: Any, expected: str
) -> None:
    ran = False

    async def handler(a: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        nonlocal ran
        ran = True
        return {}

    reg = ToolRegistry()
    reg.register(_tool(handler=handler))
    result = await reg.call("test.echo", args, ctx_for(tmp_path / "none.db"))
    assert not result.ok and result.error is not None
    assert expected in result.error
    assert not ran


async def test_arguments_as_model_json_text_and_openai_name(tmp_path: Path) -> None:
    reg = ToolRegistry()
    reg.register(_tool())
    result = await reg.call("test__echo", '{"n": 3}', ctx_for(tmp_path / "none.db"))
    assert result.ok and result.value == {"echo": {"n": 3}} and result.error is None


async def test_builtin_schema_errors_name_the_field(registry: ToolRegistry, db: Db) -> None:
    result = await registry.call("bookings.book", {"service": "cleaning", "day": "tomorrow",
                                                   "start": "9am"}, ctx_for(db))
    assert not result.ok and result.error is not None
    assert "missing required argument 'name'" in result.error
    assert "argument 'day': 'tomorrow' is not a 'date'" in result.error
    assert "argument 'start'" in result.error
    cancel = await registry.call("bookings.cancel", {}, ctx_for(db))
    assert cancel.error == "invalid arguments: give 'ref' or 'day'"


async def test_unknown_tool(registry: ToolRegistry, db: Db) -> None:
    result = await registry.call("bookings.teleport", {}, ctx_for(db))
    assert not result.ok and result.error is not None
    assert result.error.startswith("unknown tool 'bookings.teleport'")
    assert "bookings.book" in result.error


async def test_slow_tool_times_out(tmp_path: Path) -> None:
    async def slow(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    reg = ToolRegistry()
    reg.register(_tool(handler=slow, timeout_s=0.05))
    result = await reg.call("test.echo", {"n": 1}, ctx_for(tmp_path / "none.db"))
    assert not result.ok and result.error == "timed out after 0.05s"
    assert 40 <= result.duration_ms < 2000


async def test_handler_failures_are_contained(tmp_path: Path) -> None:
    async def crash(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        raise RuntimeError("boom")

    async def refuse(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        raise ToolError("no can do", {"why": "because"})

    async def own_timeout(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        raise TimeoutError("upstream")  # not the registry's deadline

    async def bad_value(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        return {"when": datetime.now()}  # not JSON

    reg = ToolRegistry()
    for name, handler in [("t.crash", crash), ("t.refuse", refuse),
                          ("t.own_timeout", own_timeout), ("t.bad_value", bad_value)]:
        reg.register(_tool(name=name, handler=handler))
    ctx = ctx_for(tmp_path / "none.db")
    with capture_logs() as logs:
        crashed = await reg.call("t.crash", {"n": 1}, ctx)
        refused = await reg.call("t.refuse", {"n": 1}, ctx)
        timed = await reg.call("t.own_timeout", {"n": 1}, ctx)
        bad = await reg.call("t.bad_value", {"n": 1}, ctx)
    assert crashed.error == "internal error: boom" and not crashed.ok
    assert refused.error == "no can do" and refused.value == {"why": "because"}
    assert timed.error == "internal error: upstream"
    assert bad.error is not None and bad.error.startswith("internal error:")
    crashes = [e for e in logs if e["event"] == "tool_crashed"]
    assert [e["tool"] for e in crashes] == ["t.crash", "t.own_timeout", "t.bad_value"]
    assert all(e["log_level"] == "error" for e in crashes)


def test_context_needs_an_aware_clock(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ToolContext(call_sid=None, caller="", db_path=tmp_path, now=datetime(2030, 1, 7))


async def test_unmigrated_or_missing_database_is_an_internal_error(tmp_path: Path) -> None:
    reg = default_registry(tmp_path / "missing.db")
    missing = await reg.call("lookups.order_status", {"order_number": "4567"},
                             ctx_for(tmp_path / "missing.db"))
    assert missing.error is not None and "cannot open the database" in missing.error
    assert not (tmp_path / "missing.db").exists()
    old = tmp_path / "old.db"
    sqlite3.connect(old).execute("CREATE TABLE x (y)")
    result = await reg.call("lookups.order_status", {"order_number": "4567"}, ctx_for(old))
    assert result.error is not None and "schema v0, tools need v2" in result.error


# ------------------------------------------------------------------------ bookings


async def test_availability_excludes_booked_and_past_slots(
    registry: ToolRegistry, db: Db
) -> None:
    tuesday = await registry.call("bookings.check_availability",
                                  {"day": TUESDAY.isoformat()}, ctx_for(db))
    assert tuesday.ok
    assert tuesday.value["weekday"] == "Tuesday"
    assert "10:00" not in tuesday.value["available"]  # seeded booking
    assert len(tuesday.value["available"]) == len(SLOTS) - 1
    # Monday at 10:10: 09:00-10:00 have started; 10:30 is the first bookable time.
    today = await registry.call("bookings.check_availability",
                                {"day": MONDAY.isoformat(), "service": "Whitening"},
                                ctx_for(db))
    assert today.value["available"][0] == "10:30"
    assert today.value["available"][-1] == SLOTS[-1]
    assert today.value["service"] == "whitening"
    late = await registry.call("bookings.check_availability", {"day": MONDAY.isoformat()},
                               ctx_for(db, now=NOW.replace(hour=16, minute=45)))
    assert late.value["available"] == [] and late.value["reason"] == "no times are left today"


async def test_availability_on_closed_days(registry: ToolRegistry, db: Db) -> None:
    saturday = await registry.call("bookings.check_availability",
                                   {"day": SATURDAY.isoformat()}, ctx_for(db))
    assert saturday.ok and saturday.value["available"] == []
    assert "closed on Saturdays" in saturday.value["reason"]
    past = await registry.call("bookings.check_availability",
                               {"day": (MONDAY - timedelta(days=3)).isoformat()}, ctx_for(db))
    assert past.value["available"] == [] and "already passed" in past.value["reason"]
    bad_service = await registry.call("bookings.check_availability",
                                      {"day": TUESDAY.isoformat(), "service": "massage"},
                                      ctx_for(db))
    assert not bad_service.ok and "we don't offer 'massage'" in (bad_service.error or "")
    assert "cleaning" in bad_service.value["services"]


async def test_book_then_find_then_cancel(registry: ToolRegistry, db: Db) -> None:
    booked = await registry.call("bookings.book", book_args(THURSDAY, "9:30"), ctx_for(db))
    assert booked.ok, booked.error
    ref = booked.value["ref"]
    assert ref.startswith("BK-") and len(ref) == 8
    assert booked.value == {"ref": ref, "service": "cleaning", "day": THURSDAY.isoformat(),
                            "weekday": "Thursday", "start": "09:30"}
    [row] = await query(db, "SELECT name, phone, call_sid, status FROM bookings WHERE ref = ?",
                        (ref,))
    assert row == ("Dana Scully", ALICE, "CA" + "1" * 32, "booked")  # phone: the caller's

    found = await registry.call("bookings.find", {}, ctx_for(db))
    assert [b["ref"] for b in found.value["bookings"]] == ["BK-SEED2", ref]

    # Spoken back loosely: lower case, spaces, no dash.
    cancelled = await registry.call("bookings.cancel",
                                    {"ref": "bk " + ref[3:].lower()}, ctx_for(db))
    assert cancelled.ok and cancelled.value["status"] == "cancelled"
    again = await registry.call("bookings.cancel", {"ref": ref}, ctx_for(db))
    assert again.error == f"booking {ref} is already cancelled"
    free = await registry.call("bookings.check_availability", {"day": THURSDAY.isoformat()},
                               ctx_for(db))
    assert "09:30" in free.value["available"]
    # The slot is free again, so it can be booked again (the cancelled row stays).
    rebooked = await registry.call("bookings.book", book_args(THURSDAY, "09:30", "Fox"),
                                   ctx_for(db, caller=CAROL))
    assert rebooked.ok


async def test_cancel_by_phone_and_day(registry: ToolRegistry, db: Db) -> None:
    none = await registry.call("bookings.cancel", {"day": FRIDAY.isoformat()}, ctx_for(db))
    assert none.error == f"no booking for the caller's number on Friday {FRIDAY.isoformat()}"
    for start in ("09:00", "15:00"):
        assert (await registry.call("bookings.book", book_args(FRIDAY, start),
                                    ctx_for(db))).ok
    ambiguous = await registry.call("bookings.cancel", {"day": FRIDAY.isoformat()},
                                    ctx_for(db))
    assert not ambiguous.ok and "at 09:00, 15:00; which one?" in (ambiguous.error or "")
    assert len(ambiguous.value["bookings"]) == 2
    # The caller's own number given, formatted as a person would say it.
    cancel = await registry.call("bookings.cancel",
                                 {"day": WEDNESDAY.isoformat(), "phone": "(555) 010-0003"},
                                 ctx_for(db, caller=CAROL))
    assert cancel.ok and cancel.value["ref"] == "BK-SEED3"
    one = await registry.call("bookings.cancel",
                              {"day": FRIDAY.isoformat(), "start": "15:00"}, ctx_for(db))
    assert one.ok and one.value["start"] == "15:00"


@pytest.mark.parametrize(
    ("day", "start", "error"),
    [
        (SATURDAY, "10:00", "we are closed on Saturdays"),
        (MONDAY, "09:30", "09:30 today has already passed"),
        (MONDAY - timedelta(days=7), "10:00", "has already passed"),
        (TUESDAY, "09:15", "appointments start every 30 minutes"),
        (TUESDAY, "17:00", "outside opening hours"),
        (TUESDAY, "08:30", "outside opening hours"),
        (TUESDAY, "25:00", "start must be a 24-hour time"),
        (MONDAY + timedelta(days=365), "10:00", "up to 90 days ahead"),
    ],
)
async def test_book_refuses_impossible_times(
    registry: ToolRegistry, db: Db, day: date, start: str, error: str
) -> None:
    before = await booked_rows(db)
    result = await registry.call("bookings.book", book_args(day, start), ctx_for(db))
    assert not result.ok and error in (result.error or "")
    assert await booked_rows(db) == before


async def test_book_refuses_unknown_service_and_bad_dates(
    registry: ToolRegistry, db: Db
) -> None:
    result = await registry.call("bookings.book", {**book_args(TUESDAY, "11:00"),
                                                   "service": "massage"}, ctx_for(db))
    assert "we don't offer 'massage'" in (result.error or "")
    result = await registry.call("bookings.book", book_args(TUESDAY, "11:00") | {
        "day": "2030-02-30"}, ctx_for(db))
    assert not result.ok and "2030-02-30" in (result.error or "")


async def test_taken_slot_offers_the_nearest_free_times(
    registry: ToolRegistry, db: Db
) -> None:
    result = await registry.call("bookings.book", book_args(TUESDAY, "10:00"), ctx_for(db))
    assert not result.ok and result.error is not None
    assert result.error.startswith("that time is taken")
    starts = [(a["day"], a["start"]) for a in result.value["alternatives"]]
    day = TUESDAY.isoformat()
    assert starts == [(day, "09:00"), (day, "09:30"), (day, "10:30")]
    assert "Tuesday 2030-01-08 at 09:30" in result.error


async def test_reschedule_moves_the_booking_atomically(registry: ToolRegistry, db: Db) -> None:
    moved = await registry.call("bookings.reschedule",
                                {"ref": "BK-SEED2", "day": THURSDAY.isoformat(),
                                 "start": "16:30"}, ctx_for(db))
    assert moved.ok, moved.error
    assert moved.value["previous"] == {"day": TUESDAY.isoformat(), "start": "10:00"}
    assert moved.value["ref"] == "BK-SEED2" and moved.value["start"] == "16:30"
    tuesday = await registry.call("bookings.check_availability",
                                  {"day": TUESDAY.isoformat()}, ctx_for(db))
    assert "10:00" in tuesday.value["available"]  # the old slot is free
    thursday = await registry.call("bookings.check_availability",
                                   {"day": THURSDAY.isoformat()}, ctx_for(db))
    assert "16:30" not in thursday.value["available"]
    same = await registry.call("bookings.reschedule",
                               {"ref": "BK-SEED2", "day": THURSDAY.isoformat(),
                                "start": "16:30"}, ctx_for(db))
    assert same.ok and same.value["changed"] is False


async def test_reschedule_onto_a_taken_slot_changes_nothing(
    registry: ToolRegistry, db: Db
) -> None:
    before = await booked_rows(db)
    result = await registry.call("bookings.reschedule",
                                 {"ref": "BK-SEED2", "day": WEDNESDAY.isoformat(),
                                  "start": "14:30"}, ctx_for(db))
    assert not result.ok and (result.error or "").startswith("that time is taken")
    assert await booked_rows(db) == before
    unknown = await registry.call("bookings.reschedule",
                                  {"ref": "BK-ZZZZZ", "day": WEDNESDAY.isoformat(),
                                   "start": "09:00"}, ctx_for(db))
    assert unknown.error == "no booking with reference BK-ZZZZZ under the caller's number"


async def test_the_database_refuses_a_double_booking_the_tools_did_not_check(db: Db) -> None:
    """The partial unique index is the backstop, whatever writes to the table."""
    conn = await connect(db)
    try:
        insert = ("INSERT INTO bookings (ref, service, day, start, name, status, created_at, "
                  "updated_at) VALUES (?, 'checkup', ?, '10:00', 'X', ?, 'now', 'now')")
        await conn.execute(insert, ("BK-AAAAA", TUESDAY.isoformat(), "cancelled"))  # fine
        with pytest.raises(UniqueViolation,
                           match=r"bookings\.day, bookings\.start|bookings_one_per_slot"):
            await conn.execute(insert, ("BK-BBBBB", TUESDAY.isoformat(), "booked"))
    finally:
        await conn.close()


@pytest.mark.parametrize("check", ["tools check first", "only the index"])
async def test_fifty_callers_racing_for_one_slot_get_exactly_one_booking(
    registry: ToolRegistry, db: Db, monkeypatch: pytest.MonkeyPatch, check: str
) -> None:
    if check == "only the index":
        # Without the tools' own check the unique index alone must refuse the 49.
        async def never_taken(*args: Any) -> bool:
            return False

        monkeypatch.setattr(bookings, "slot_taken", never_taken)
    connects = 0
    real_connect = aiosqlite.connect

    def counting_connect(*args: Any, **kwargs: Any) -> aiosqlite.Connection:
        nonlocal connects
        connects += 1
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(aiosqlite, "connect", counting_connect)
    results = await asyncio.gather(*(
        registry.call("bookings.book", book_args(THURSDAY, "11:00", f"Caller {i}",
                                                 phone=f"+1555020{i:04d}"),
                      ctx_for(db, caller=f"+1555020{i:04d}"))
        for i in range(50)
    ))
    if not isinstance(db, str):
        assert connects == 50  # each call raced on its own connection (PostgreSQL: a pool)
    winners = [r for r in results if r.ok]
    losers = [r for r in results if not r.ok]
    assert len(winners) == 1
    assert len(losers) == 49
    assert all((r.error or "").startswith("that time is taken") for r in losers), {
        r.error for r in losers}
    assert all(r.value["alternatives"] for r in losers)
    rows = await query(db, "SELECT ref, name FROM bookings WHERE day = ? AND start = '11:00'",
                       (THURSDAY.isoformat(),))
    assert rows == [(winners[0].value["ref"], rows[0][1])]


async def test_fifty_callers_on_two_processes_racing_for_one_slot_get_one_booking(
    registry: ToolRegistry, db: Db
) -> None:
    """Two event loops in two threads, each with its own connections (a pool each on
    PostgreSQL), as two server processes would have: 25 callers on each, one booking."""

    def process(first: int) -> list[bool]:
        async def run() -> list[bool]:
            results = await asyncio.gather(*(
                registry.call("bookings.book", book_args(THURSDAY, "14:00", f"Caller {i}",
                                                         phone=f"+1555030{i:04d}"),
                              ctx_for(db, caller=f"+1555030{i:04d}"))
                for i in range(first, first + 25)))
            return [r.ok for r in results]

        return asyncio.run(run())

    both = await asyncio.gather(asyncio.to_thread(process, 0), asyncio.to_thread(process, 25))
    assert sum(both[0]) + sum(both[1]) == 1
    rows = await query(db, "SELECT ref FROM bookings WHERE day = ? AND start = '14:00'",
                       (THURSDAY.isoformat(),))
    assert len(rows) == 1


async def test_concurrent_cancels_of_one_booking_cancel_it_once(
    registry: ToolRegistry, db: Db
) -> None:
    results = await asyncio.gather(*(
        registry.call("bookings.cancel", {"ref": "BK-SEED2"}, ctx_for(db)) for _ in range(10)))
    assert sum(r.ok for r in results) == 1
    assert {r.error for r in results if not r.ok} == {"booking BK-SEED2 is already cancelled"}


async def test_concurrent_reschedules_and_bookings_for_one_slot(
    registry: ToolRegistry, db: Db
) -> None:
    """Two moves and ten bookings race for one slot: one wins, the movers who lose stay put."""
    target = {"day": FRIDAY.isoformat(), "start": "12:00"}
    moves = [registry.call("bookings.reschedule", {"ref": ref, **target},
                           ctx_for(db, caller=owner))
             for ref, owner in (("BK-SEED2", ALICE), ("BK-SEED3", CAROL))]
    books = [registry.call("bookings.book", book_args(FRIDAY, "12:00", f"N{i}"), ctx_for(db))
             for i in range(10)]
    results = await asyncio.gather(*moves, *books)
    assert sum(r.ok for r in results) == 1
    rows = {ref: (day, start, status) for ref, day, start, status in await booked_rows(db)}
    in_slot = [ref for ref, (day, start, status) in rows.items()
               if (day, start, status) == (FRIDAY.isoformat(), "12:00", "booked")]
    assert len(in_slot) == 1
    for ref, home in (("BK-SEED2", (TUESDAY.isoformat(), "10:00")),
                      ("BK-SEED3", (WEDNESDAY.isoformat(), "14:30"))):
        assert rows[ref][:2] in (home, (FRIDAY.isoformat(), "12:00"))


# ------------------------------------------------------------------------- lookups


async def test_order_status(registry: ToolRegistry, db: Db) -> None:
    for number in ("4567", "#4567", 4567, "45 67"):
        result = await registry.call("lookups.order_status", {"order_number": number},
                                     ctx_for(db))
        assert result.value == {"number": "4567", "verified": True, "status": "shipped",
                                "item": "wireless headphones",
                                "eta": (MONDAY + timedelta(days=2)).isoformat()}
    missing = await registry.call("lookups.order_status", {"order_number": "0000"},
                                  ctx_for(db))
    assert not missing.ok and missing.error == "no order with number 0000"
    cancelled = await registry.call("lookups.order_status", {"order_number": "3141"},
                                    ctx_for(db, caller=BOB))
    assert cancelled.value["status"] == "cancelled" and cancelled.value["eta"] is None


async def test_account_by_phone(registry: ToolRegistry, db: Db) -> None:
    mine = await registry.call("lookups.account_by_phone", {}, ctx_for(db))
    assert mine.value == {"name": "Alice Johnson", "plan": "Gold",
                          "balance": "12 dollars and 50 cents", "balance_cents": 1250}
    keyed = await registry.call("lookups.account_by_phone", {"phone": "555-010-0004"},
                                ctx_for(db, caller=DAVID))
    assert keyed.value["name"] == "David Lee"
    assert keyed.value["balance"] == "1 dollar and 1 cent"
    stranger = await registry.call("lookups.account_by_phone", {}, ctx_for(db, caller=CAROL[:-1]
                                                                            + "9"))
    assert stranger.error == "no account under the caller's number"
    junk = await registry.call("lookups.account_by_phone", {"phone": "call me"}, ctx_for(db))
    assert junk.error == "'call me' is not a phone number"


# ------------------------------------------------------------------ the caller's own


async def test_someone_elses_booking_is_not_found_and_stays_booked(
    registry: ToolRegistry, db: Db
) -> None:
    """Alice names Carol's reference or Carol's day: "not found", worded exactly as for a
    reference that does not exist, and Carol's booking is untouched."""
    before = await booked_rows(db)
    for name, args in (
        ("bookings.cancel", {"ref": "BK-SEED3"}),
        ("bookings.reschedule", {"ref": "BK-SEED3", "day": FRIDAY.isoformat(),
                                 "start": "09:00"}),
    ):
        result = await registry.call(name, args, ctx_for(db))
        assert result.error == "no booking with reference BK-SEED3 under the caller's number"
        assert result.value == {}
    by_day = await registry.call("bookings.cancel", {"day": WEDNESDAY.isoformat()},
                                 ctx_for(db))
    assert by_day.error == (f"no booking for the caller's number on Wednesday "
                            f"{WEDNESDAY.isoformat()}")
    assert await booked_rows(db) == before
    # Carol herself still can.
    assert (await registry.call("bookings.cancel", {"ref": "BK-SEED3"},
                                ctx_for(db, caller=CAROL))).ok


async def test_a_phone_argument_naming_another_number_is_refused(
    registry: ToolRegistry, db: Db
) -> None:
    """"Her number is 555 010 0003": every tool refuses, says why, and reveals nothing."""
    before = await booked_rows(db)
    carol = "(555) 010-0003"
    for name, args in (
        ("bookings.find", {"phone": carol}),
        ("bookings.cancel", {"day": WEDNESDAY.isoformat(), "phone": carol}),
        ("bookings.cancel", {"ref": "BK-SEED3", "phone": carol}),
        ("bookings.book", book_args(FRIDAY, "09:00", phone=carol)),
        ("lookups.account_by_phone", {"phone": carol}),
    ):
        result = await registry.call(name, args, ctx_for(db))
        assert not result.ok and result.value == {"reason": OTHER_NUMBER}, name
        assert "only" in (result.error or "") and "another number" in (result.error or "")
        for secret in ("BK-SEED3", "whitening", "Carol", "45.99", "4599"):
            assert secret not in result.to_json(), (name, secret)
    assert await booked_rows(db) == before
    # The caller's own number, however it is written, is no other number.
    mine = await registry.call("bookings.find", {"phone": "555-010-0001"}, ctx_for(db))
    assert mine.ok and [b["ref"] for b in mine.value["bookings"]] == ["BK-SEED2"]
    assert ALICE not in mine.to_json()  # the number does not travel back to a model


@pytest.mark.parametrize("caller", ["", "anonymous", "+266696687", "client:alice"])
async def test_an_anonymous_caller_gets_nothing_that_needs_an_identity(
    registry: ToolRegistry, db: Db, caller: str
) -> None:
    """No caller ID (or Twilio's keypad spelling of ANONYMOUS, shared by every withheld
    caller): no booking, no lookup of bookings or accounts, whatever number is named."""
    before = await booked_rows(db)
    ctx = ctx_for(db, caller=caller)
    for name, args in (
        ("bookings.book", book_args(FRIDAY, "09:00")),
        ("bookings.book", book_args(FRIDAY, "09:00", phone=ALICE)),
        ("bookings.find", {}),
        ("bookings.cancel", {"ref": "BK-SEED2"}),
        ("bookings.cancel", {"day": TUESDAY.isoformat(), "phone": ALICE}),
        ("bookings.reschedule", {"ref": "BK-SEED2", "day": FRIDAY.isoformat(),
                                 "start": "09:00"}),
        ("lookups.account_by_phone", {}),
        ("lookups.account_by_phone", {"phone": ALICE}),
    ):
        result = await registry.call(name, args, ctx)
        assert not result.ok and result.value == {"reason": ANONYMOUS_CALLER}, name
        assert "the caller's number is withheld" in (result.error or ""), name
    assert await booked_rows(db) == before
    # What is nobody's in particular stays open to everyone.
    free = await registry.call("bookings.check_availability", {"day": FRIDAY.isoformat()}, ctx)
    assert free.ok and "09:00" in free.value["available"]
    assert (await registry.call("bookings.list_services", {}, ctx)).ok


@pytest.mark.parametrize("caller", [CAROL, ""])
async def test_someone_elses_order_is_found_but_reveals_no_details(
    registry: ToolRegistry, db: Db, caller: str
) -> None:
    """Order 4567 is Alice's: Carol (or an anonymous caller) learns it exists, no more."""
    result = await registry.call("lookups.order_status", {"order_number": "4567"},
                                 ctx_for(db, caller=caller))
    assert result.ok and set(result.value) == {"number", "verified", "note"}
    assert result.value["number"] == "4567" and result.value["verified"] is False
    text = result.to_json()
    eta = (MONDAY + timedelta(days=2)).isoformat()
    for detail in ("shipped", "headphones", eta):
        assert detail not in text


@pytest.mark.parametrize(
    ("cents", "spoken"),
    [(1250, "12 dollars and 50 cents"), (100, "1 dollar"), (0, "0 dollars"), (5, "5 cents"),
     (101, "1 dollar and 1 cent"), (-250, "minus 2 dollars and 50 cents")],
)
def test_spoken_money(cents: int, spoken: str) -> None:
    assert spoken_money(cents) == spoken


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("+1 555 010 0001", ALICE), ("5550100001", ALICE), ("1-555-010-0001", ALICE),
     ("+44 20 7946 0958", "+442079460958"), ("", "")],
)
def test_normalize_phone(raw: str, normal: str) -> None:
    assert normalize_phone(raw) == normal


# ---------------------------------------------------------------------------- seed


async def test_seed_is_idempotent_and_migrates_a_fresh_file(db_target: Db) -> None:
    path = db_target
    first = await seed(path, today=MONDAY)
    assert first == {"services": 4, "accounts": 5, "orders": 10, "bookings": 2}
    conn = await connect(path)
    try:
        assert await conn.schema_version() == SCHEMA_VERSION
    finally:
        await conn.close()
    snapshot = await _dump(path)
    again = await seed(path, today=MONDAY + timedelta(days=30))  # another day, too
    assert again == {"services": 0, "accounts": 0, "orders": 0, "bookings": 0}
    assert await _dump(path) == snapshot
    # The call store still opens it (its own migrations are already applied).
    store = await CallStore.open(path)
    await store.close()


async def _dump(path: Db) -> dict[str, list[tuple[Any, ...]]]:
    return {t: await query(path, f"SELECT * FROM {t} ORDER BY 1")
            for t in ("services", "accounts", "orders", "bookings")}


async def test_seeded_bookings_are_on_upcoming_open_days(db: Db, tmp_path: Path) -> None:
    assert [(r[0], r[1], r[2]) for r in await booked_rows(db)] == [
        ("BK-SEED2", TUESDAY.isoformat(), "10:00"), ("BK-SEED3", WEDNESDAY.isoformat(), "14:30"),
    ]
    friday = await seed(tmp_path / "friday.db", today=FRIDAY)
    assert friday["bookings"] == 2
    days = {r[1] for r in await booked_rows(tmp_path / "friday.db")}
    assert days == {(FRIDAY + timedelta(days=3)).isoformat(),
                    (FRIDAY + timedelta(days=4)).isoformat()}
