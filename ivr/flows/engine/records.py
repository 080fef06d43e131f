"""What a run leaves behind: a `Turn` for every input handled at an ask, a `Trace` for
everything else the runner did or decided (tools, slots set, errors handled)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = ["Trace", "TraceKind", "Turn"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One handled input at an ask step: what came in and what the flow made of it."""

    step: str
    attempt: int  # 1-based count of inputs handled at this visit of the step
    input: Literal["speech", "dtmf", "none"]
    text: str | None  # recognized text or pressed digits
    confidence: float | None
    result: Literal["match", "no_match", "no_input"]
    understood: str | None  # the matched choice's label, the slot value's text, yes/no
    slot: str | None = None  # the slot the step fills
    value: str | None = None  # the slot value's text when this input filled it
    confirm: bool = False  # an answer to a yes/no check: the read-back, an unsure answer's


TraceKind: TypeAlias = Literal[
    "set",
    "tool_call",
    "tool_done",
    "tool_failed",
    "template_failed",
    "llm_fallback",
    "transfer",
    "ignored",
    "agent_slot_rejected",
    "agent_done",
    "unsure",
    "expect_fallback",  # an ask's `expect` gave nothing to listen for: the whole slot's grammar
]


@dataclass(frozen=True, slots=True)
class Trace:
    """Something the runner did or decided besides handling an answer."""

    step: str | None
    kind: TraceKind
    detail: str
