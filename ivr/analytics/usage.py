"""What a call used, per engine that served it: the units each request was billed in.

A request is counted against the engine that *answered* it: a remote recognizer that
failed and was replaced by pocketsphinx for that utterance adds nothing for the remote
provider (the failed request served nobody) and adds the utterance's seconds to
pocketsphinx. The session adds one entry per served request (`UsageLedger.add`); at call
end the ledger goes into the call's stats as `usage`, a list of
`{"role": "stt", "engine": "openai:whisper-1", "units": {"audio_s": 3.2, "requests": 2}}`,
which `analytics.pricing` prices and `analytics.projection` scales to a month.

Units (the billable ones; others, such as `requests`, are informational):

- `audio_s`: seconds of caller audio recognized (priced `per_minute`);
- `chars`: characters synthesized (priced `per_1m_chars`);
- `text_in`, `cached_in`, `audio_in`: prompt tokens that were text (uncached), cached
  (any modality), audio; `text_out`, `audio_out`: completion tokens, text and audio
  (priced per 1M tokens: `prompt`, `cached`, `audio_prompt`, `completion`,
  `audio_completion`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["BILLABLE", "UsageLedger", "number", "usage_entries"]

BILLABLE: Final = ("audio_s", "chars", "text_in", "cached_in", "audio_in", "text_out",
                   "audio_out")


class UsageLedger:
    """One call's usage: units per (role, engine), in the order engines first served."""

    def __init__(self) -> None:
        self._units: dict[tuple[str, str], dict[str, float]] = {}

    def add(self, role: str, engine: str, units: Mapping[str, float]) -> None:
        counter = self._units.setdefault((role, engine or "unknown"), {})
        for unit, amount in units.items():
            if amount:
                counter[unit] = counter.get(unit, 0.0) + amount

    def total(self, role: str, unit: str) -> float:
        return sum(c.get(unit, 0.0) for (r, _), c in self._units.items() if r == role)

    def entries(self) -> list[dict[str, Any]]:
        return [{"role": role, "engine": engine,
                 "units": {k: round(v, 3) for k, v in units.items()}}
                for (role, engine), units in self._units.items()]


def number(stats: Mapping[str, object], key: str) -> float:
    """`stats[key]` as a float (0.0 when absent or not a number)."""
    value = stats.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0.0
    try:
        return float(value)
    except ValueError:
        return 0.0


def usage_entries(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A stored call's usage list; for records written before the ledger (flat keys
    `stt_engine`/`stt_audio_s`, `tts_engine`/`tts_chars`, `llm_model`/`llm_*_tokens`),
    the same list rebuilt from them, each role billed to the engine it names (a
    `primary|fallback` pair to its primary: those records did not say who served)."""
    usage = stats.get("usage")
    if isinstance(usage, list):
        return [u for u in usage if isinstance(u, dict) and isinstance(u.get("units"), dict)]
    ledger = UsageLedger()

    def engine(key: str) -> str:
        return str(stats.get(key) or "").split("|", 1)[0]

    if engine("stt_engine"):
        ledger.add("stt", engine("stt_engine"), {"audio_s": number(stats, "stt_audio_s")})
    if engine("tts_engine"):
        ledger.add("tts", engine("tts_engine"), {"chars": number(stats, "tts_chars")})
    if engine("llm_model"):
        prompt = number(stats, "llm_prompt_tokens")
        cached = min(number(stats, "llm_cached_tokens"), prompt)
        ledger.add("llm", engine("llm_model"), {
            "text_in": prompt - cached, "cached_in": cached,
            "text_out": number(stats, "llm_completion_tokens")})
    return ledger.entries()
