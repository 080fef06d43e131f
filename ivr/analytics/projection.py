"""What a month of calls would cost: the observed mix of calls scaled to N calls a month.

From the stored calls (each with its duration and its usage per engine), the average call
is taken: billed telephony minutes, and the units of every engine that served (seconds
recognized, characters synthesized, tokens). N of those make a month; each quantity is
then priced through the pricing table's volume tiers (`Pricing.price_units(...,
monthly=True)`), so a discount that starts at a million minutes shows at a volume that
reaches it. Which provider dominates the bill is named; engines with no rate are listed as
unpriced (counted at $0), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ivr.analytics.pricing import Pricing, graduated
from ivr.analytics.usage import number, usage_entries

__all__ = ["project_monthly"]


def project_monthly(
    pricing: Pricing, calls: list[Mapping[str, Any]], calls_per_month: int,
) -> dict[str, Any]:
    """The monthly cost of `calls_per_month` calls like `calls` (their stored stats)."""
    observed = [c for c in calls if number(c, "duration_ms") > 0 or c.get("usage")]
    n = len(observed)
    out: dict[str, Any] = {"calls_per_month": calls_per_month, "observed_calls": n,
                           "per_call_mix": None, "by_provider": {}, "total": None,
                           "per_call": None, "dominant": None, "unpriced": []}
    if n == 0 or calls_per_month <= 0:
        return out
    minutes = sum(pricing.billed_minutes(number(c, "duration_ms")) for c in observed) / n
    mix: dict[tuple[str, str], dict[str, float]] = {}
    for c in observed:
        for e in usage_entries(c):
            units = mix.setdefault((str(e["role"]), str(e["engine"])), {})
            for unit, amount in e["units"].items():
                if isinstance(amount, int | float) and not isinstance(amount, bool):
                    units[unit] = units.get(unit, 0.0) + amount / n

    by_provider: dict[str, float] = {}
    month_minutes = minutes * calls_per_month
    if month_minutes > 0:
        by_provider["telephony"] = sum(graduated(month_minutes, bands)
                                       for bands in pricing.telephony_bands())
    unpriced: set[str] = set()
    for (role, engine), units in mix.items():
        month = {unit: amount * calls_per_month for unit, amount in units.items()}
        priced = pricing.price_units(role, engine, month, monthly=True)
        if priced is None or priced[1]:
            unpriced.add(engine)
        if priced is not None:
            key = f"{role}:{engine}"
            by_provider[key] = by_provider.get(key, 0.0) + priced[0]
    total = sum(by_provider.values())
    out.update(
        per_call_mix={
            "telephony_minutes": round(minutes, 4),
            "usage": [{"role": role, "engine": engine,
                       "units": {u: round(v, 4) for u, v in units.items()}}
                      for (role, engine), units in mix.items()],
        },
        by_provider={k: round(v, 2) for k, v in sorted(by_provider.items())},
        total=round(total, 2),
        per_call=round(total / calls_per_month, 6),
        dominant=max(by_provider, key=lambda k: by_provider[k]) if by_provider else None,
        unpriced=sorted(unpriced),
    )
    return out
