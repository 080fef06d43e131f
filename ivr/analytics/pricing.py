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
from typing import Any

import yaml

from ivr.errors import ConfigError

ENV_VAR = "IVR_PRICING"


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

        def unpriced(name: str) -> None:
            out[f"unpriced:{name}"] = 0.0

        stt = str(usage.get("stt_engine") or "")
        if stt:
            entry = self._entry("stt", stt)
            if entry is None:
                unpriced(stt)
            else:
                minutes = _num(usage, "stt_audio_s") / 60
                out[f"stt:{stt}"] = minutes * float(entry.get("per_minute", 0.0))

        tts = str(usage.get("tts_engine") or "")
        if tts:
            entry = self._entry("tts", tts)
            if entry is None:
                unpriced(tts)
            else:
                chars = _num(usage, "tts_chars")
                out[f"tts:{tts}"] = chars / 1e6 * float(entry.get("per_1m_chars", 0.0))

        llm = str(usage.get("llm_model") or "")
        if llm:
            entry = self._entry("llm", llm)
            if entry is None:
                unpriced(llm)
            else:
                prompt = _num(usage, "llm_prompt_tokens")
                cached = min(_num(usage, "llm_cached_tokens"), prompt)
                completion = _num(usage, "llm_completion_tokens")
                prompt_rate = float(entry.get("prompt", 0.0))
                cached_rate = float(entry.get("cached", prompt_rate))
                out[f"llm:{llm}"] = (
                    (prompt - cached) * prompt_rate
                    + cached * cached_rate
                    + completion * float(entry.get("completion", 0.0))
                ) / 1e6

        result = {k: round(v, 6) for k, v in out.items()}
        result["total"] = round(sum(v for k, v in out.items()), 6)
        return result
