"""What the driver feeds the runner: what the caller said, typed or pressed, that they
said nothing or hung up, and how a tool or an agent ended."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "AgentDone",
    "CallerHangup",
    "Digits",
    "Event",
    "NoInput",
    "Speech",
    "ToolDone",
]


@dataclass(frozen=True, slots=True)
class Speech:
    """What the caller said (recognized) or typed.

    `confidence` is the recognizer's score for `text` (typed text: 1.0). `margin` is how
    far `text` is ahead of the next-best hypothesis, normalized to 0..1, when the
    recognizer ranks its hypotheses; None when it does not say. Both decide whether the
    flow acts on the answer or checks it first (`AskStep.verify`, `Flow.certainty`).
    """

    text: str
    confidence: float = 1.0
    margin: float | None = None
    # The utterance as 16 kHz mono PCM16, when the question asked for it (`Listen.keep_audio`).
    audio: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Digits:
    """Keys the caller pressed, as collected per the step's `DtmfSpec`."""

    digits: str


@dataclass(frozen=True, slots=True)
class NoInput:
    """The caller said and pressed nothing before the timeout."""


@dataclass(frozen=True, slots=True)
class CallerHangup:
    """The caller hung up."""


@dataclass(frozen=True, slots=True)
class ToolDone:
    """The result of the last `CallTool`: `value` when `ok`, else `error` (words)."""

    ok: bool
    value: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AgentDone:
    """How an agent step ended: `ok` reasons ("exit", "model") go to `next`; anything
    else ("transfer", "max_rounds", "error") takes the step's `fallback`."""

    ok: bool
    reason: str
    detail: str = ""


Event: TypeAlias = Speech | Digits | NoInput | CallerHangup | ToolDone | AgentDone
