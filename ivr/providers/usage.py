"""OpenAI-style `usage` objects (chat completions, Realtime) as the billable token units of
`analytics.usage`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["realtime_token_units", "token_units"]


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


def _detail(details: object, key: str) -> int:
    return _int(details.get(key)) if isinstance(details, Mapping) else 0


def realtime_token_units(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """A Realtime `response.done` usage object as disjoint token units.

    Realtime names differ from chat completions (`input_tokens`, `input_token_details`
    with `text_tokens`, `audio_tokens`, `cached_tokens`), and the cached tokens are a part
    of the text and audio ones, not a third kind: they are moved to `cached_in`, by
    modality from `cached_tokens_details` when sent, else from text first (the cached
    prefix is mostly the instructions and tools)."""
    if not usage:
        return {}
    inp, out = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
    ind, outd = usage.get("input_token_details"), usage.get("output_token_details")
    audio_in = min(_detail(ind, "audio_tokens"), inp)
    text_in = inp - audio_in  # what is not audio is text (images, if any, bill as text)
    cached = min(_detail(ind, "cached_tokens"), inp)
    split = ind.get("cached_tokens_details") if isinstance(ind, Mapping) else None
    if isinstance(split, Mapping):
        cached_audio = min(_detail(split, "audio_tokens"), audio_in, cached)
    else:
        cached_audio = max(0, cached - text_in)
    cached_text = min(cached - cached_audio, text_in)
    audio_out = min(_detail(outd, "audio_tokens"), out)
    units = {"text_in": text_in - cached_text, "cached_in": cached_text + cached_audio,
             "audio_in": audio_in - cached_audio, "text_out": out - audio_out,
             "audio_out": audio_out}
    return {k: v for k, v in units.items() if v}
