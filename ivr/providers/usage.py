"""OpenAI-style `usage` objects as the billable token units of `analytics.usage`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["token_units"]


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


def token_units(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """An OpenAI-style `usage` object as disjoint token units.

    `prompt_tokens` includes the cached and the audio ones (`prompt_tokens_details`), and
    `completion_tokens` the audio ones (`completion_tokens_details`); each token is
    counted once, under the rate that applies to it."""
    if not usage:
        return {}
    prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    pd = usage.get("prompt_tokens_details") or {}
    cd = usage.get("completion_tokens_details") or {}
    cached = min(_int(pd.get("cached_tokens")) if isinstance(pd, Mapping) else 0, prompt)
    audio_in = min(_int(pd.get("audio_tokens")) if isinstance(pd, Mapping) else 0,
                   prompt - cached)
    audio_out = min(_int(cd.get("audio_tokens")) if isinstance(cd, Mapping) else 0, completion)
    units = {"text_in": prompt - cached - audio_in, "cached_in": cached, "audio_in": audio_in,
             "text_out": completion - audio_out, "audio_out": audio_out}
    return {k: v for k, v in units.items() if v}
