"""Cost by provider over time: the figures behind `/api/costs` and the dashboard's chart.

Calls are grouped by when they started, in UTC buckets of an hour or a day, from each
call's `stats["cost"]` as written at its end (`{"stt:openai:whisper-1": usd, ...,
"telephony": usd, "unpriced:<engine>": 0.0, "total": usd}`). Every bucket of the range is
present, empty ones with zeros, so a chart's time axis has no holes; that is why the
number of buckets is capped (`MAX_BUCKETS`): a year of hourly zeros is no chart.
An engine that served with no rate (`unpriced:<engine>`) is listed apart, so the page can
say its usage is counted at $0, rather than showing a silent gap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ivr.analytics.report import parse_timestamp
from ivr.errors import InvalidValue

BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# 31 days of hours (a month's chart at hourly resolution); daily, about two years.
MAX_BUCKETS = 31 * 24
UNPRICED = "unpriced:"
# Sums of many small per-call costs pick up float noise (0.0375 as 0.037500000000000006);
# nine places keep a fraction of a token's price.
_PLACES = 9


def floor(moment: datetime, bucket: str) -> datetime:
    """The start of the UTC hour or day `moment` falls in."""
    utc = moment.astimezone(UTC)
    if bucket == "day":
        return utc.replace(hour=0, minute=0, second=0, microsecond=0)
    return utc.replace(minute=0, second=0, microsecond=0)


def bucket_count(since: datetime, until: datetime, bucket: str) -> int:
    """How many buckets of `bucket` size cover [since, until)."""
    span = until - floor(since, bucket)
    return max(1, math.ceil(span / BUCKETS[bucket]))


def choose_bucket(since: datetime, until: datetime, requested: str | None) -> str:
    """The bucket size asked for, checked; unasked, hourly if the range has at most
    `MAX_BUCKETS` hours, else daily. Raises `InvalidValue` with what to ask instead."""
    if since >= until:
        raise InvalidValue(f"since ({since.isoformat()}) must be before until "
                           f"({until.isoformat()})")
    if requested is None or requested == "":
        requested = "hour" if bucket_count(since, until, "hour") <= MAX_BUCKETS else "day"
    if requested not in BUCKETS:
        raise InvalidValue(f"bucket must be hour or day, not {requested!r}")
    n = bucket_count(since, until, requested)
    if n > MAX_BUCKETS:
        hint = "bucket=day or a shorter range" if requested == "hour" else "a shorter range"
        raise InvalidValue(f"the range has {n} {requested} buckets, more than {MAX_BUCKETS}: "
                           f"ask for {hint}")
    return requested


def cost_series(
    rows: Iterable[Mapping[str, Any]], *, since: datetime, until: datetime, bucket: str,
) -> dict[str, Any]:
    """Bucketed cost from call rows (`started_at`, `stats` as stored). Rows outside
    [since, until) or with an unreadable start are left out."""
    step = BUCKETS[bucket]
    first = floor(since, bucket)
    slots: list[dict[str, Any]] = [
        {"start": (first + i * step).isoformat(), "calls": 0, "by_provider": {}, "total": 0.0}
        for i in range(bucket_count(since, until, bucket))
    ]
    providers: set[str] = set()
    unpriced: set[str] = set()
    for row in rows:
        started = parse_timestamp(row.get("started_at"))
        if started is None or not since <= started < until:
            continue
        slot = slots[(floor(started, bucket) - first) // step]
        slot["calls"] += 1
        cost = _cost(row.get("stats"))
        by_provider = {k: float(v) for k, v in cost.items()
                       if k != "total" and not k.startswith(UNPRICED) and _is_number(v)}
        unpriced.update(k.removeprefix(UNPRICED) for k in cost if k.startswith(UNPRICED))
        for key, usd in by_provider.items():
            slot["by_provider"][key] = slot["by_provider"].get(key, 0.0) + usd
        providers.update(by_provider)
        total = cost.get("total")
        slot["total"] += (float(total) if isinstance(total, int | float)
                          else sum(by_provider.values()))
    for slot in slots:
        slot["total"] = round(slot["total"], _PLACES)
        slot["by_provider"] = {k: round(slot["by_provider"].get(k, 0.0), _PLACES)
                               for k in sorted(providers)}
    return {
        "since": since.astimezone(UTC).isoformat(), "until": until.astimezone(UTC).isoformat(),
        "bucket": bucket, "providers": sorted(providers), "unpriced": sorted(unpriced),
        "calls": sum(s["calls"] for s in slots),
        "total": round(sum(s["total"] for s in slots), _PLACES), "buckets": slots,
    }


def _cost(stats: Any) -> dict[str, Any]:
    if isinstance(stats, str):
        try:
            stats = json.loads(stats or "{}")
        except ValueError:
            return {}
    cost = stats.get("cost") if isinstance(stats, dict) else None
    return cost if isinstance(cost, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
