"""Prices (USD) and the cost of one call's usage.

`Pricing.load()` reads the packaged `pricing.yaml` (documented defaults) and merges an
override file over it: the path given, else the file named by `IVR_PRICING`.
`Pricing.cost(usage)` turns the usage units a call session records in its stats into
money per provider and role, rounded to 6 decimals. A model with no price costs 0 and is
listed as `unpriced:<name>` (value 0.0) instead of failing.
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

from ivr.errors import ConfigError

ENV_VAR = "IVR_PRICING"


class _Meter(NamedTuple):
    quantity: str  # a key of `_metered(usage)`
    rate: str  # its price key in the engine's pricing.yaml entry
    fallback: str | None = None  # the price key used when `rate` is absent

    def price(self, entry: Mapping[str, Any]) -> float:
        key = self.rate if self.rate in entry or self.fallback is None else self.fallback
        return float(entry.get(key, 0.0))


class _Billed(NamedTuple):
    role: str  # also the pricing.yaml section its engines are priced in
    engine: str  # the usage key naming the engine or model
    per: float  # the summed cost is divided by this (prices per 1M tokens)
    meters: tuple[_Meter, ...]


# What each engine role is billed for. Speech quantities come in the unit they are priced
# in; token costs are summed and then divided. The order of the float operations decides
# the sixth decimal at rounding boundaries, and reports must not drift: keep it.
_BILLED: Final = (
    _Billed("stt", "stt_engine", 1, (_Meter("stt_minutes", "per_minute"),)),
    _Billed("tts", "tts_engine", 1, (_Meter("tts_million_chars", "per_1m_chars"),)),
    _Billed("llm", "llm_model", 1e6, (
        _Meter("llm_uncached_tokens", "prompt"),
        _Meter("llm_cached_tokens", "cached", fallback="prompt"),  # no cached price: prompt's
        _Meter("llm_completion_tokens", "completion"),
    )),
)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _num(usage: Mapping[str, object], key: str) -> float:
    value = usage.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0.0
    try:
        return float(value)
    except ValueError:
        return 0.0


def _metered(usage: Mapping[str, object]) -> dict[str, float]:
    """The quantities prices apply to. Prompt tokens include the cached ones (OpenAI's
    usage convention), so they are split into cached and not."""
    prompt = _num(usage, "llm_prompt_tokens")
    cached = min(_num(usage, "llm_cached_tokens"), prompt)
    return {
        "stt_minutes": _num(usage, "stt_audio_s") / 60,
        "tts_million_chars": _num(usage, "tts_chars") / 1e6,
        "llm_uncached_tokens": prompt - cached,
        "llm_cached_tokens": cached,
        "llm_completion_tokens": _num(usage, "llm_completion_tokens"),
    }


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return data


@dataclass(frozen=True, slots=True)
class Pricing:
    table: dict[str, Any]

    @classmethod
    def defaults(cls) -> Pricing:
        text = resources.files("ivr.analytics").joinpath("pricing.yaml").read_text("utf-8")
        return cls(_read_yaml(text, "ivr/analytics/pricing.yaml"))

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
        return cls(_merge(base, _read_yaml(text, str(p))))

    def _entry(self, role: str, name: str) -> dict[str, Any] | None:
        table = self.table.get(role) or {}
        for key in (name, name.rsplit(":", 1)[-1]):
            entry = table.get(key)
            if isinstance(entry, dict):
                return entry
        return None

    def telephony_per_minute(self) -> float:
        per_minute = (self.table.get("telephony") or {}).get("per_minute", 0.0)
        if isinstance(per_minute, dict):
            return float(sum(float(v) for v in per_minute.values()))
        return float(per_minute)

    def cost(self, usage: Mapping[str, object]) -> dict[str, float]:
        """Money per provider/role for one call's usage, plus `total`."""
        out: dict[str, float] = {}
        duration_ms = _num(usage, "duration_ms")
        if duration_ms > 0:
            minutes = duration_ms / 60_000
            if (self.table.get("telephony") or {}).get("round_up_minutes", False):
                minutes = float(math.ceil(minutes))
            out["telephony"] = minutes * self.telephony_per_minute()

        quantities = _metered(usage)
        for billed in _BILLED:
            name = str(usage.get(billed.engine) or "")
            if not name:
                continue
            entry = self._entry(billed.role, name)
            if entry is None:
                out[f"unpriced:{name}"] = 0.0
                continue
            amount = sum(quantities[m.quantity] * m.price(entry) for m in billed.meters)
            out[f"{billed.role}:{name}"] = amount / billed.per

        result = {k: round(v, 6) for k, v in out.items()}
        result["total"] = round(sum(v for k, v in out.items()), 6)
        return result
