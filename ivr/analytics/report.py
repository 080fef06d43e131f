"""`ivr report`: outcomes, containment, handle time, cost and latency from the call store.

Definitions (all computed over the calls selected by `since` / `flow`):

- `calls`: calls whose `started_at` is at or after `since` (and whose flow is `flow`).
- `outcomes`: count per outcome (completed, transferred, abandoned, dropped, failed,
  interrupted: the server process died mid-call, shutdown: ended by a drain);
  calls still in progress or without an outcome are counted as `open`.
- `containment_rate`: completed / eligible, where *eligible* = calls that reached a flow
  (`flow` set; status-callback-only calls never did) and were not `dropped` or
  `shutdown` (a dropped socket or an operator's drain says nothing about the bot).
  Completed means the flow finished without a transfer. None when there is no eligible call.
- `aht_s` (average handle time): mean of `duration_s` (Twilio's), else
  `stats.duration_ms / 1000`, else `ended_at - started_at`; calls with none are skipped.
- `cost`: from `stats["cost"]` (written by the session at call end, see
  `ivr.analytics.pricing`): `p50` and `mean` per call, `total`, and `by_provider`
  (the sum of each key other than `total`), `unpriced` (engines used with no rate, counted
  at $0). Calls without a cost are not counted.
- `projection` (with `--project-monthly N`): the observed mix scaled to N calls a month,
  priced through the volume tiers (`ivr.analytics.projection`); None otherwise.
- `latency_ms`: per stage, over turns, on the server clock (ms since stream start):
  `response_ms` (voice to voice: end-of-speech decision -> first frame of the reply;
  the stored `response_ms`, else `reply_first_frame - endpoint`), `recognition_ms`
  (`recognized - endpoint`), `endpoint_wait_ms` (`endpoint - speech_start`: the
  utterance itself plus the end-of-speech silence; the `caller_*` timings are on the
  caller's clock and are never mixed in). Negative or missing differences are skipped.
- Percentiles are nearest-rank: the value at rank ceil(p/100 * n) of the sorted values
  (always an observed value; p50 of [1, 2, 3, 4] is 2).
- `no_match_steps` / `no_input_steps`: steps ranked by how many turns ended with that
  result (most first, ties by name), top 5.
- `drop_off`: for abandoned and dropped calls, counts of `stats.last_step` (else the step
  of the call's last turn, else "(none)"), most first.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ivr.analytics.pricing import Pricing
from ivr.analytics.projection import project_monthly as project_monthly_cost
from ivr.config import database_url, is_database_url
from ivr.errors import ConfigError, StoreError
from ivr.store.backend import connect, describe

OUTCOMES = (
    "completed", "transferred", "abandoned", "dropped", "failed", "interrupted", "shutdown",
)
STAGES = ("response_ms", "recognition_ms", "endpoint_wait_ms")
PERCENTILES = (50, 95, 99)
TOP = 5


def nearest_rank(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the ceil(p/100*n)-th smallest value (None when empty)."""
    if not values:
        return None
    xs = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(xs)))
    return xs[min(rank, len(xs)) - 1]


def parse_since(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """"7d", "12h", "30m" (ago), or an ISO date / datetime (UTC when it has no zone)."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    m = re.fullmatch(r"(\d+)\s*([dhm])", text)
    if m:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[m.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: int(m.group(1))})
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as e:
        raise ConfigError(f"--since {text!r}: expected e.g. 7d, 12h or 2026-11-01") from e
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_timestamp(text: object) -> datetime | None:
    """A stored ISO 8601 time (UTC when it names no zone); None for anything else."""
    if not isinstance(text, str) or not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _diff(t: dict[str, Any], later: str, earlier: str) -> float | None:
    a, b = t.get(later), t.get(earlier)
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return None
    d = float(a) - float(b)
    return d if d >= 0 else None


def _duration_s(call: dict[str, Any]) -> float | None:
    if call["duration_s"] is not None:
        return float(call["duration_s"])
    ms = call["stats"].get("duration_ms")
    if isinstance(ms, int | float):
        return float(ms) / 1000
    start, end = parse_timestamp(call["started_at"]), parse_timestamp(call["ended_at"])
    if start and end and end >= start:
        return (end - start).total_seconds()
    return None


def _ranked(counter: Counter[str], top: int | None = None) -> list[dict[str, Any]]:
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"step": k, "count": v} for k, v in items[:top]]


async def _load(
    db_path: Path | str, since: datetime | None, flow: str | None
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    try:
        conn = await connect(db_path, mode="ro")
    except StoreError as e:  # missing file, no permission, no server
        raise ConfigError(f"{describe(db_path)}: cannot open database: {e}") from e
    try:
        sql, params = "SELECT * FROM calls", []
        if flow is not None:
            sql, params = sql + " WHERE flow = ?", [flow]
        rows = await conn.fetch(sql, params)
        calls = []
        for call in rows:
            started = parse_timestamp(call["started_at"])
            if since is not None and (started is None or started < since):
                continue
            try:
                stats = json.loads(call["stats"] or "{}")
            except ValueError:
                stats = {}
            call["stats"] = stats if isinstance(stats, dict) else {}
            calls.append(call)
        sids = {c["call_sid"] for c in calls}
        turns: dict[str, list[dict[str, Any]]] = {}
        for t in await conn.fetch("SELECT * FROM turns ORDER BY call_sid, seq"):
            if t["call_sid"] not in sids:
                continue
            try:
                timings = json.loads(t["timings"] or "{}")
            except ValueError:
                timings = {}
            t["timings"] = timings if isinstance(timings, dict) else {}
            turns.setdefault(t["call_sid"], []).append(t)
    finally:
        await conn.close()
    return calls, turns


async def build_report(
    db_path: Path | str, *, since: datetime | None = None, flow: str | None = None,
    project_monthly: int | None = None, pricing: Pricing | None = None,
) -> dict[str, Any]:
    """The report as plain JSON-able data (see the module docstring for definitions);
    with `project_monthly`, also the cost of that many calls a month like these
    (`analytics.projection`, priced by `pricing`, default `Pricing.load()`)."""
    calls, turns = await _load(db_path, since, flow)

    outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
    open_calls = 0
    for c in calls:
        if c["outcome"] in outcomes:
            outcomes[c["outcome"]] += 1
        else:
            open_calls += 1

    eligible = [c for c in calls if c["flow"] and c["outcome"] not in ("dropped", "shutdown")]
    contained = sum(1 for c in eligible if c["outcome"] == "completed")
    containment = contained / len(eligible) if eligible else None

    durations = [d for c in calls if (d := _duration_s(c)) is not None]

    costs: list[float] = []
    by_provider: dict[str, float] = {}
    unpriced: set[str] = set()
    for c in calls:
        cost = c["stats"].get("cost")
        if not isinstance(cost, dict):
            continue
        total = cost.get("total")
        if not isinstance(total, int | float):
            total = sum(v for k, v in cost.items() if isinstance(v, int | float))
        costs.append(float(total))
        for k, v in cost.items():
            if k.startswith("unpriced:"):
                unpriced.add(k.split(":", 1)[1])
            elif k != "total" and isinstance(v, int | float):
                by_provider[k] = by_provider.get(k, 0.0) + float(v)

    stage_values: dict[str, list[float]] = {s: [] for s in STAGES}
    no_match: Counter[str] = Counter()
    no_input: Counter[str] = Counter()
    for call_turns in turns.values():
        for t in call_turns:
            tm = t["timings"]
            resp = tm.get("response_ms")
            response = (
                float(resp) if isinstance(resp, int | float) and resp >= 0
                else _diff(tm, "reply_first_frame", "endpoint")
            )
            for stage, value in (
                ("response_ms", response),
                ("recognition_ms", _diff(tm, "recognized", "endpoint")),
                ("endpoint_wait_ms", _diff(tm, "endpoint", "speech_start")),
            ):
                if value is not None:
                    stage_values[stage].append(value)
            step = t["step"] or "(none)"
            if t["result"] == "no_match":
                no_match[step] += 1
            elif t["result"] == "no_input":
                no_input[step] += 1

    drop_off: Counter[str] = Counter()
    for c in calls:
        if c["outcome"] not in ("abandoned", "dropped"):
            continue
        step = c["stats"].get("last_step")
        if not step:
            ts = turns.get(c["call_sid"])
            step = ts[-1]["step"] if ts else None
        drop_off[str(step or "(none)")] += 1

    def r(x: float | None, nd: int = 6) -> float | None:
        return None if x is None else round(x, nd)

    return {
        "since": since.isoformat() if since else None,
        "flow": flow,
        "calls": len(calls),
        "outcomes": outcomes,
        "open": open_calls,
        "containment": {
            "rate": r(containment, 4), "completed": contained, "eligible": len(eligible),
        },
        "aht_s": r(statistics.fmean(durations) if durations else None, 3),
        "cost": {
            "calls": len(costs),
            "p50": r(nearest_rank(costs, 50)),
            "mean": r(statistics.fmean(costs) if costs else None),
            "total": round(sum(costs), 6),
            "by_provider": {k: round(v, 6) for k, v in sorted(by_provider.items())},
            "unpriced": sorted(unpriced),
        },
        "latency_ms": {
            s: {
                "n": len(vs),
                **{f"p{p}": r(nearest_rank(vs, p), 1) for p in PERCENTILES},
            }
            for s, vs in stage_values.items()
        },
        "no_match_steps": _ranked(no_match, TOP),
        "no_input_steps": _ranked(no_input, TOP),
        "drop_off": _ranked(drop_off),
        "projection": None if project_monthly is None else project_monthly_cost(
            pricing or Pricing.load(), [c["stats"] for c in calls], project_monthly),
    }


def _metrics(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """The report flattened to (metric, value) rows."""
    rows: list[tuple[str, Any]] = [
        ("calls", report["calls"]),
        *((f"outcome.{k}", v) for k, v in report["outcomes"].items()),
        ("open", report["open"]),
        ("containment.rate", report["containment"]["rate"]),
        ("containment.completed", report["containment"]["completed"]),
        ("containment.eligible", report["containment"]["eligible"]),
        ("aht_s", report["aht_s"]),
    ]
    cost = report["cost"]
    rows += [(f"cost.{k}", cost[k]) for k in ("calls", "p50", "mean", "total")]
    rows += [(f"cost.by_provider.{k}", v) for k, v in cost["by_provider"].items()]
    rows += [("cost.unpriced", name) for name in cost["unpriced"]]
    projection = report.get("projection")
    if projection is not None:
        rows += [(f"projection.{k}", projection[k]) for k in
                 ("calls_per_month", "observed_calls", "total", "per_call", "dominant")]
        rows += [(f"projection.by_provider.{k}", v)
                 for k, v in projection["by_provider"].items()]
    for stage, vals in report["latency_ms"].items():
        rows += [(f"latency.{stage}.{k}", v) for k, v in vals.items()]
    for key in ("no_match_steps", "no_input_steps", "drop_off"):
        rows += [(f"{key}.{e['step']}", e["count"]) for e in report[key]]
    return rows


def render_csv(report: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["metric", "value"])
    for name, value in _metrics(report):
        w.writerow([name, "" if value is None else value])
    return buf.getvalue()


def _fmt(v: Any, suffix: str = "") -> str:
    return "-" if v is None else f"{v}{suffix}"


def render_text(report: dict[str, Any]) -> str:
    lines = [
        f"Calls: {report['calls']}"
        + (f" since {report['since']}" if report["since"] else "")
        + (f" (flow {report['flow']})" if report["flow"] else ""),
        "Outcomes: " + ", ".join(f"{k} {v}" for k, v in report["outcomes"].items())
        + (f", open {report['open']}" if report["open"] else ""),
    ]
    c = report["containment"]
    rate = "-" if c["rate"] is None else f"{c['rate'] * 100:.1f}%"
    lines.append(f"Containment: {rate} ({c['completed']}/{c['eligible']})")
    lines.append(f"Average handle time: {_fmt(report['aht_s'], ' s')}")
    cost = report["cost"]
    lines.append(
        f"Cost per call (USD, {cost['calls']} calls): p50 {_fmt(cost['p50'])}, "
        f"mean {_fmt(cost['mean'])}, total {cost['total']}"
    )
    for k, v in cost["by_provider"].items():
        lines.append(f"  {k}: {v}")
    if cost["unpriced"]:
        lines.append(f"  unpriced: {', '.join(cost['unpriced'])} (no rate: counted at $0; "
                     "add one to the pricing file named by IVR_PRICING)")
    lines.append("Latency (ms, nearest-rank):")
    for stage, vals in report["latency_ms"].items():
        lines.append(
            f"  {stage}: n={vals['n']} p50 {_fmt(vals['p50'])} p95 {_fmt(vals['p95'])} "
            f"p99 {_fmt(vals['p99'])}"
        )
    for key, title in (
        ("no_match_steps", "Most no-match"), ("no_input_steps", "Most no-input"),
        ("drop_off", "Drop-off (abandoned/dropped, last step)"),
    ):
        entries = report[key]
        lines.append(f"{title}: " + (
            ", ".join(f"{e['step']} {e['count']}" for e in entries) if entries else "-"
        ))
    lines += _projection_lines(report.get("projection"))
    return "\n".join(lines) + "\n"


def _projection_lines(p: dict[str, Any] | None) -> list[str]:
    if p is None:
        return []
    head = f"Projection: {p['calls_per_month']:,} calls a month"
    if not p["observed_calls"]:
        return [head + ": no calls with a duration or usage to project from"]
    lines = [head + f", from the mix of {p['observed_calls']} calls (volume tiers applied):",
             f"  total {p['total']:,.2f} USD a month, {p['per_call']:.6f} per call"]
    for k, v in sorted(p["by_provider"].items(), key=lambda kv: -kv[1]):
        share = v / p["total"] * 100 if p["total"] else 0.0
        lines.append(f"  {k}: {v:,.2f} ({share:.1f}%)" + ("  <- dominant" if k == p["dominant"]
                                                          else ""))
    if p["unpriced"]:
        lines.append(f"  unpriced (counted at $0): {', '.join(p['unpriced'])}")
    return lines


def main(args: argparse.Namespace) -> int:
    """`ivr report`: args.db, args.since, args.flow, args.project_monthly, args.json,
    args.csv."""
    import asyncio

    try:
        since = parse_since(args.since)
        db = database_url(args.db)
        if not is_database_url(db) and not Path(db).exists():
            raise ConfigError(f"{db}: no such database")
        project = getattr(args, "project_monthly", None)
        if project is not None and project <= 0:
            raise ConfigError("--project-monthly: a number of calls a month, above 0")
        report = asyncio.run(build_report(db, since=since, flow=args.flow,
                                          project_monthly=project))
    except ConfigError as e:
        print(f"ivr report: {e}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    elif args.csv:
        sys.stdout.write(render_csv(report))
    else:
        sys.stdout.write(render_text(report))
    return 0
