"""`ivr bench conversation`: callers with goals, through a real server, judged by the database.

Each call has a `Goal` (`bench.goals`): book a cleaning on a weekday at a time, cancel a
booking on a day, or hear an order's status; it enters at the front door (`main_menu`)
and says what it wants with the flow's own words, as people say it, or by keypad. Voice
callers speak in several espeak voices and rates, on a clean line or with white noise
15 dB below their voice, through the 8 kHz µ-law path. The caller reacts to what the bot
said: once the bot has gone quiet it reads the words of the prompts whose marks it has
heard come back from the server's own prompt record (`GET /api/calls/{sid}/prompts`,
behind the API token) and answers them (`goals.Listener`).

Judged by the database: a booking call succeeds when a booked row of the caller's
number matches its goal (service, day, start); a cancel call when its booking on that
day is cancelled and its other booking (the same weekday a week later) is not; an order
call when the bot read the status the goal expects. A *wrong action* is any booking,
cancellation or move of a row the caller did not ask for. Every caller calls from a
number of its own, whose rows are set up before the call and removed after it, so slots
are reused; order callers call from the seeded accounts, whose rows must never change.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

import aiohttp

from ivr.bench.goals import Goal, Listener, Style
from ivr.bench.listening import converse
from ivr.bench.server import ServerProcess
from ivr.tools.seed import BOOKINGS, ORDERS

__all__ = ["HELD_OUT", "VOICES", "Bench", "CallResult", "Plan", "Slots", "conversation_main",
           "judge", "plan_goals"]

# The tuned-on voices (the tests' and the other benches') and two used nowhere else.
VOICES: Final = ("en-us", "en-gb", "en-us+m3", "en-us+f3", "en-gb-x-rp", "en-us+f2")
HELD_OUT: Final = frozenset({"en-gb-x-rp", "en-us+f2"})
RATES: Final = (145, 165, 190)  # words a minute: slow, the flows' own, brisk
NOISE_SNR_DB: Final = 15.0
ZONE: Final = ZoneInfo("America/New_York")  # dental_booking's timezone
NAMES: Final = ("john smith", "mary jones", "david brown", "susan miller")
SLOT_TIMES: Final = tuple(clock(h, m) for h in range(9, 17) for m in (0, 30))
ORDER_STATUS: Final = {number: (status, item, phone) for number, status, item, _, phone
                       in ORDERS if status in ("shipped", "processing", "delivered")}
SEEDED_PHONES: Final = frozenset(phone for *_, phone in BOOKINGS)


@dataclass(slots=True)
class CallResult:
    kind: str
    style: str
    voice: str
    rate: int
    noise: bool
    success: bool = False
    wrong_actions: list[str] = field(default_factory=list)
    reasks: int = 0
    keyed: int = 0  # answers given by keys after a miss (the bot offered them)
    answers: int = 0
    outcome: str | None = None
    seconds: float = 0.0
    call_sid: str = ""
    heard: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    understood: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Plan:
    goal_kind: str
    style: Style
    voice: str
    rate: int
    noise: bool


def plan_goals(calls: int, voices: tuple[str, ...], keypad_per_goal: int,
               seed: int = 15) -> list[Plan]:
    """`calls` voice calls spread evenly over goal x style x voice x noise (rates drawn),
    then `keypad_per_goal` keypad calls of each goal."""
    rng = random.Random(seed)
    combos = [(k, s, v, n) for n in (False, True) for v in voices
              for s in ("flow", "people") for k in ("book", "cancel", "order")]
    rng.shuffle(combos)
    plans = [Plan(k, s, v, rng.choice(RATES), n)  # type: ignore[arg-type]
             for k, s, v, n in (combos[i % len(combos)] for i in range(calls))]
    plans += [Plan(k, "keys", "en-us", 165, False) for k in ("book", "cancel", "order")
              for _ in range(keypad_per_goal)]
    return plans


class Slots:
    """Free (day, start) slots of the coming week's open days, lent to one call at a
    time: a call's own rows are removed before its slot is lent again."""

    def __init__(self, today: date, taken: set[tuple[str, str]], rng: random.Random) -> None:
        days = [today + timedelta(days=n) for n in range(1, 8)]
        self.free = [(d, t) for d in days if d.weekday() < 5 for t in SLOT_TIMES
                     if (d.isoformat(), t.strftime("%H:%M")) not in taken]
        rng.shuffle(self.free)
        self.ready = asyncio.Condition()

    async def take(self) -> tuple[date, clock]:
        async with self.ready:
            await self.ready.wait_for(lambda: bool(self.free))
            return self.free.pop()

    async def give_back(self, slot: tuple[date, clock]) -> None:
        async with self.ready:
            self.free.insert(0, slot)
            self.ready.notify()


def _rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db, timeout=30)
    try:
        with con:
            return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _bookings(db: Path, phone: str) -> list[tuple[Any, ...]]:
    return _rows(db, "SELECT ref, service, day, start, status FROM bookings WHERE phone = ? "
                     "ORDER BY ref", (phone,))


def _set_up_cancel(db: Path, phone: str, slot: tuple[date, clock], name: str) -> None:
    """The caller's booking to cancel, and the same weekday a week later (to be kept)."""
    now = datetime.now().isoformat()
    day, start = slot
    for ref, when in ((f"BK-{phone[-6:]}T", day), (f"BK-{phone[-6:]}K", day + timedelta(7))):
        _rows(db, "INSERT INTO bookings (ref, service, day, start, name, phone, status, "
                  "created_at, updated_at) VALUES (?, 'cleaning', ?, ?, ?, ?, 'booked', ?, ?)",
              (ref, when.isoformat(), start.strftime("%H:%M"), name, phone, now, now))


def judge(goal: Goal, before: list[tuple[Any, ...]], after: list[tuple[Any, ...]],
          listener: Listener) -> tuple[bool, list[str]]:
    """(goal reached, wrong actions) from the caller's rows before and after its call."""
    old = {r[0]: r[1:] for r in before}
    new = {r[0]: r[1:] for r in after}
    changed = {ref: row for ref, row in new.items() if old.get(ref) != row}
    wanted = (goal.service, goal.day.isoformat() if goal.day else "",
              goal.start.strftime("%H:%M") if goal.start else "")
    wrong: list[str] = []
    success = False
    for ref, (service, day, start, status) in changed.items():
        what = f"{ref} {service} {day} {start} -> {status}"
        if goal.kind == "book" and ref not in old and status == "booked" and (
                service, day, start) == wanted and not success:
            success = True
        elif goal.kind == "cancel" and ref.endswith("T") and status == "cancelled" and (
                day, start) == wanted[1:]:
            success = True
        else:
            wrong.append(what)
    if goal.kind == "order":
        success = listener.status_heard and not wrong
    return success, wrong


class Served(Protocol):
    """Where the server under test answers, and its SQLite file."""

    @property
    def base(self) -> str: ...

    @property
    def db(self) -> Path: ...


class Bench:
    """Places the calls of a run and judges each (`call`)."""

    def __init__(self, server: Served, http: aiohttp.ClientSession, token: str,
                 slots: Slots, today: date) -> None:
        self.server, self.http, self.token = server, http, token
        self.slots, self.today = slots, today
        self.numbers = iter(range(1, 10**6))

    def goal(self, plan: Plan, slot: tuple[date, clock] | None, i: int) -> Goal:
        if plan.goal_kind == "order":
            number = sorted(ORDER_STATUS)[i % len(ORDER_STATUS)]
            status, item, _ = ORDER_STATUS[number]
            return Goal("order", plan.style, order=number, item=item, status=status)
        day, start = slot or (None, None)
        return Goal(plan.goal_kind, plan.style, day=day, start=start,  # type: ignore[arg-type]
                    name=NAMES[i % len(NAMES)])

    async def call(self, plan: Plan, i: int) -> CallResult:
        result = CallResult(plan.goal_kind, plan.style, plan.voice, plan.rate, plan.noise)
        slot = await self.slots.take() if plan.goal_kind != "order" else None
        goal = self.goal(plan, slot, i)
        phone = (ORDER_STATUS[goal.order][2] if goal.kind == "order"
                 else f"+1555030{next(self.numbers):04d}")
        db = self.server.db
        try:
            if goal.kind == "cancel" and slot is not None:
                await asyncio.to_thread(_set_up_cancel, db, phone, slot, goal.name)
            before = await asyncio.to_thread(_bookings, db, phone)
            listener = Listener(goal)
            started = time.monotonic()
            t = await converse(
                self.server.base, self.http, self.token, listener, flow="main_menu",
                voice=plan.voice, rate=plan.rate, from_number=phone, call_timeout=300.0,
                noise_snr_db=NOISE_SNR_DB if plan.noise else None, noise_seed=i)
            result.seconds = time.monotonic() - started
            result.understood = understood(t.server)
            result.call_sid = t.call_sid
            after = await asyncio.to_thread(_bookings, db, phone)
            result.success, result.wrong_actions = judge(goal, before, after, listener)
            result.reasks, result.answers = listener.reasks, t.actions_done
            result.keyed = listener.keyed
            result.heard = listener.heard
            result.said = [str(getattr(e, "text", getattr(e, "digits", "")))
                           for e in t.events if type(e).__name__ in ("CallerSaid",
                                                                     "CallerPressed")]
            result.errors = list(t.errors)
            rows = await asyncio.to_thread(
                _rows, db, "SELECT outcome FROM calls WHERE call_sid = ?", (t.call_sid,))
            result.outcome = rows[0][0] if rows else None
        finally:
            if goal.kind != "order":
                await asyncio.to_thread(_rows, db, "DELETE FROM bookings WHERE phone = ?",
                                        (phone,))
            if slot is not None:
                await self.slots.give_back(slot)
        return result


def understood(record: dict[str, Any] | None) -> list[str]:
    """step: what the server recognized (result), per answered turn of its call record."""
    return [f"{t['step']}: {t.get('input_text') or t.get('input_kind')} ({t.get('result')})"
            for t in (record or {}).get("turns") or [] if t.get("input_kind")]


def _table(results: list[CallResult], by: str) -> Iterator[str]:
    groups: dict[str, list[CallResult]] = {}
    for r in results:
        groups.setdefault(str(getattr(r, by)), []).append(r)
    for key, rs in sorted(groups.items()):
        ok = sum(r.success for r in rs)
        wrong = sum(len(r.wrong_actions) for r in rs)
        label = key + (" (held out)" if by == "voice" and key in HELD_OUT else "")
        yield (f"  {label:24} {ok:3}/{len(rs):<3} {100 * ok / len(rs):5.1f} %  re-asks/call "
               f"{sum(r.reasks for r in rs) / len(rs):4.2f}  answers/call "
               f"{sum(r.answers for r in rs) / len(rs):4.1f}  keyed/call "
               f"{sum(r.keyed for r in rs) / len(rs):4.2f}  wrong actions {wrong}")


def report(results: list[CallResult], command: str, seconds: float) -> None:
    voice = [r for r in results if r.style != "keys"]
    keys = [r for r in results if r.style == "keys"]
    print(f"ivr bench conversation: {len(voice)} voice calls, {len(keys)} keypad calls "
          f"({seconds:.0f} s)")
    for name, rs in (("voice", voice), ("keypad", keys)):
        if rs:
            ok = sum(r.success for r in rs)
            print(f"{name}: goal reached {ok}/{len(rs)} ({100 * ok / len(rs):.1f} %), "
                  f"re-asks/call {sum(r.reasks for r in rs) / len(rs):.2f}, wrong actions "
                  f"{sum(len(r.wrong_actions) for r in rs)}")
    if voice:
        alone = sum(r.success and not r.keyed for r in voice)
        keyed = [r for r in voice if r.keyed]
        print(f"voice calls that reached their goal by voice alone: {alone}/{len(voice)} "
              f"({100 * alone / len(voice):.1f} %); calls that keyed an answer the bot "
              f"offered after a miss: {len(keyed)} ({sum(r.success for r in keyed)} reached "
              f"their goal), {sum(r.keyed for r in voice)} keyed answers in all")
    for by in ("kind", "style", "voice", "noise", "rate"):
        print(f"by {by}:")
        for line in _table(results if by in ("kind", "style") else voice, by):
            print(line)
    for r in results:
        if not r.success or r.wrong_actions:
            print(f"  MISSED {r.kind}/{r.style}/{r.voice}/{r.rate}/"
                  f"{'noise' if r.noise else 'clean'} {r.call_sid} outcome={r.outcome} "
                  f"said={r.said} server understood={r.understood} wrong={r.wrong_actions} "
                  f"last heard={r.heard[-2:] if r.heard else []}")
    print(f"reproduce: {command}")


async def conversation_main(calls: int, concurrency: int, voices: tuple[str, ...], *,
                            keypad_per_goal: int = 2, json_path: Path | None = None,
                            workers: int = 2, seed: int = 15) -> int:
    command = (f"ivr bench conversation --calls {calls} --concurrency {concurrency} "
               f"--voices {','.join(voices)} --keypad {keypad_per_goal}")
    plans = plan_goals(calls, voices, keypad_per_goal, seed)
    token = secrets.token_hex(16)
    flows = await asyncio.to_thread(os.path.abspath, os.environ.get("IVR_FLOWS", "flows"))
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"IVR_FLOWS": flows,
               "IVR_RECOGNIZER_WORKERS": str(workers), "IVR_MAX_LOOP_LAG_MS": "0",
               "IVR_API_TOKEN": token}
        server = ServerProcess(Path(tmp) / "conversation.db", env, log=Path(tmp) / "server.log")
        async with aiohttp.ClientSession() as http:
            await server.start(http, max_wait=90)
            try:
                today = datetime.now(ZONE).date()
                seeded = await asyncio.to_thread(
                    _rows, server.db, "SELECT day, start FROM bookings WHERE status = 'booked'")
                seeded_before = await asyncio.to_thread(
                    _rows, server.db, "SELECT ref, day, start, status FROM bookings")
                slots = Slots(today, {(d, s) for d, s in seeded}, random.Random(seed))
                bench = Bench(server, http, token, slots, today)
                gate = asyncio.Semaphore(concurrency)

                async def one(i: int, plan: Plan) -> CallResult:
                    async with gate:
                        return await bench.call(plan, i)

                results = list(await asyncio.gather(*(one(i, p) for i, p in enumerate(plans))))
                seeded_after = await asyncio.to_thread(
                    _rows, server.db, "SELECT ref, day, start, status FROM bookings "
                                      "WHERE ref LIKE 'BK-SEED%'")
            finally:
                await server.stop()
    untouched = {r for r in seeded_before if str(r[0]).startswith("BK-SEED")}
    if set(seeded_after) != untouched:  # the order callers' accounts: nobody asked
        orders = [r for r in results if r.kind == "order"]
        if orders:
            orders[0].wrong_actions.append(f"seeded bookings changed: {seeded_after}")
    report(results, command, time.monotonic() - started)
    if json_path is not None:
        body = json.dumps({"command": command, "calls": [asdict(r) for r in results]},
                          indent=1)
        await asyncio.to_thread(json_path.write_text, body)
    voice = [r for r in results if r.style != "keys"]
    keys = [r for r in results if r.style == "keys"]
    wrong = sum(len(r.wrong_actions) for r in results)
    ok = (not wrong and all(r.success for r in keys)
          and sum(r.success for r in voice) >= 0.95 * len(voice))
    return 0 if ok else 1
