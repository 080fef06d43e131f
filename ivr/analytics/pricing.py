"""Prices (USD) and the cost of one call's usage.

`Pricing.load()` reads the packaged `pricing.yaml` (documented defaults) and merges an
override file over it: the path given, else the file named by `IVR_PRICING`.
`Pricing.cost(stats)` turns the usage a call session records (`analytics.usage`: units
per engine that served) into money per role and engine, rounded to 6 decimals, each call
at the first tier of a tiered price. An engine with no price is listed as
`unpriced:<name>` (value 0.0) instead of failing, and warned about at start-up.
`price_units(..., monthly=True)` prices a month's units through the volume tiers
(`analytics.projection`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final, NamedTuple

import yaml

from ivr.analytics.usage import number as _num
from ivr.analytics.usage import usage_entries
from ivr.errors import ConfigError

ENV_VAR = "IVR_PRICING"


class _Meter(NamedTuple):
    unit: str  # a billable usage unit (`analytics.usage`)
    rate: str  # its price key in an engine's pricing.yaml entry
    per: float  # how many natural units the price is for (1 minute, 1M characters, ...)
    natural: float = 1.0  # usage units per natural unit (seconds per minute)
    fallback: str | None = None  # the price key used when `rate` is absent


# Every billable unit and the price that applies to it, whatever the engine's role: a
# GPT-4o audio recognizer is billed in tokens, Whisper in minutes, both as "stt".
_METERS: Final = (
    _Meter("audio_s", "per_minute", 1, natural=60),
    _Meter("chars", "per_1m_chars", 1e6),
    _Meter("text_in", "prompt", 1e6),
    _Meter("cached_in", "cached", 1e6, fallback="prompt"),  # no cached price: prompt's
    _Meter("audio_in", "audio_prompt", 1e6),
    _Meter("text_out", "completion", 1e6),
    _Meter("audio_out", "audio_completion", 1e6),
)

# A price: one number, or volume tiers graduated by natural units per month, e.g.
#   per_minute: [{up_to: 100000, price: 0.006}, {price: 0.005}]
# (the first 100,000 minutes of a month at 0.006, the rest at 0.005).
Bands = tuple[tuple[float | None, float], ...]


def _bands(value: object, where: str) -> Bands:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return ((None, float(value)),)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: a price is a number or a list of tiers "
                          "({up_to: N, price: P}, ..., {price: P})")
    bands: list[tuple[float | None, float]] = []
    for i, tier in enumerate(value):
        price = tier.get("price") if isinstance(tier, dict) else None
        up_to = tier.get("up_to") if isinstance(tier, dict) else None
        last = i == len(value) - 1
        if (not isinstance(price, int | float) or (up_to is None) != last
                or (up_to is not None and not isinstance(up_to, int | float))
                or (bands and up_to is not None and up_to <= (bands[-1][0] or 0))):
            raise ConfigError(
                f"{where}[{i}]: each tier is {{up_to: N, price: P}} with N rising, and the "
                "last one {price: P} alone (it has no upper bound)")
        bands.append((None if up_to is None else float(up_to), float(price)))
    return tuple(bands)


def graduated(quantity: float, bands: Bands) -> float:
    """`quantity` natural units priced band by band (all of it at the first band's price
    when there is one band)."""
    cost, floor = 0.0, 0.0
    for up_to, price in bands:
        take = quantity - floor if up_to is None else min(quantity, up_to) - floor
        if take <= 0:
            break
        cost += take * price
        if up_to is None:
            break
        floor = up_to
    return cost


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return data


_RATE_KEYS: Final = frozenset(k for m in _METERS for k in (m.rate, m.fallback) if k)


def _checked(table: dict[str, Any], where: str) -> dict[str, Any]:
    """`table`, once every price in it parses (a broken override fails at start-up,
    naming the key, not at the first call's end)."""
    for role in ("stt", "tts", "llm"):
        for engine, entry in (table.get(role) or {}).items():
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: {role}.{engine}: expected a mapping of prices")
            for key, value in entry.items():
                if key in _RATE_KEYS:
                    _bands(value, f"{where}: {role}.{engine}.{key}")
    Pricing(table).telephony_bands()
    return table


@dataclass(frozen=True, slots=True)
class Pricing:
    table: dict[str, Any]

    @classmethod
    def defaults(cls) -> Pricing:
        text = resources.files("ivr.analytics").joinpath("pricing.yaml").read_text("utf-8")
        return cls(_checked(_read_yaml(text, "ivr/analytics/pricing.yaml"), "pricing.yaml"))

    @classmethod
    def load(cls, path: Path | str | None = None) -> Pricing:
        """Packaged defaults, with `path` (or `$IVR_PRICING` when None) merged over them."""
        base = cls.defaults().table
        override = path if path is not None else os.environ.get(ENV_VAR) or None
        if override is None:
            return cls(base)
        p = Path(override)
        try:
            text = p.read_text("utf-8")
        except OSError as e:
            raise ConfigError(f"{p}: cannot read pricing file: {e}") from e
        return cls(_checked(_merge(base, _read_yaml(text, str(p))), str(p)))

    def _entry(self, role: str, name: str) -> dict[str, Any] | None:
        table = self.table.get(role) or {}
        for key in (name, name.rsplit(":", 1)[-1]):
            entry = table.get(key)
            if isinstance(entry, dict):
                return entry
        return None

    def telephony_bands(self) -> list[Bands]:
        """The per-minute price of each telephony component (inbound voice, streams)."""
        per_minute = (self.table.get("telephony") or {}).get("per_minute", 0.0)
        items = per_minute.items() if isinstance(per_minute, dict) else [("", per_minute)]
        return [_bands(v, f"pricing telephony.per_minute{'.' + k if k else ''}")
                for k, v in items]

    def telephony_per_minute(self) -> float:
        """The first-tier price of a call minute, all components together."""
        return sum(bands[0][1] for bands in self.telephony_bands())

    def billed_minutes(self, duration_ms: float) -> float:
        minutes = duration_ms / 60_000
        if (self.table.get("telephony") or {}).get("round_up_minutes", False):
            minutes = float(math.ceil(minutes))
        return minutes

    def price_units(
        self, role: str, engine: str, units: Mapping[str, float], *, monthly: bool = False,
    ) -> tuple[float, list[str]] | None:
        """What `units` of `engine` cost, and the billable units used that have no price;
        None when the engine has no pricing entry at all. `monthly`: `units` are a month's
        total, priced through the volume tiers; otherwise at the first tier (one call)."""
        entry = self._entry(role, engine)
        if entry is None:
            return None
        amount, missing = 0.0, []
        for m in _METERS:
            quantity = float(units.get(m.unit) or 0)
            if quantity <= 0:
                continue
            key = m.rate if m.rate in entry or m.fallback is None else m.fallback
            if key not in entry:
                missing.append(m.unit)
                continue
            bands = _bands(entry[key], f"pricing {role}.{engine}.{key}")
            natural = quantity / m.natural
            amount += (graduated(natural, bands) if monthly else natural * bands[0][1]) / m.per
        return amount, missing

    def unpriced(self, engines: list[tuple[str, str]]) -> list[str]:
        """Which of these (role, engine) pairs have no pricing entry."""
        return [f"{role}:{name}" for role, name in engines
                if name and self._entry(role, name) is None]

    def cost(self, stats: Mapping[str, Any]) -> dict[str, float]:
        """Money per role and engine for one call (`telephony`, `stt:openai:whisper-1`,
        ...), plus `total`; an engine with no price is listed as `unpriced:<engine>` (0.0)
        so it is seen, never a silent $0. Usage is `stats["usage"]`, or the flat keys of
        records written before it (`analytics.usage.usage_entries`)."""
        out: dict[str, float] = {}
        duration_ms = _num(stats, "duration_ms")
        if duration_ms > 0:
            out["telephony"] = self.billed_minutes(duration_ms) * self.telephony_per_minute()
        for e in usage_entries(stats):
            role, engine = str(e.get("role")), str(e.get("engine"))
            priced = self.price_units(role, engine, e["units"])
            if priced is None or priced[1]:
                out[f"unpriced:{engine}"] = 0.0
            if priced is not None:
                key = f"{role}:{engine}"
                out[key] = out.get(key, 0.0) + priced[0]
        result = {k: round(v, 6) for k, v in out.items()}
        result["total"] = round(sum(out.values()), 6)
        return result
