"""What the runner asks its driver to do: play words, listen, run a tool or an agent,
transfer, hand over to another flow, hang up. The driver (a phone call, `ivr chat`, a
flow test) carries each out its own way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from ivr.grammar import Grammar

__all__ = [
    "Action",
    "CallTool",
    "DtmfSpec",
    "GotoFlow",
    "Hangup",
    "Listen",
    "Outcome",
    "Play",
    "RunAgent",
    "Transfer",
]

Outcome: TypeAlias = Literal["completed", "fallback", "hangup", "goto_flow", "transferred", "error"]
"""How a run ended: reached its end normally; ended after an ask ran out of reprompts;
the caller hung up; handed over to another flow; transferred to a phone number; the
flow failed (a step loop, a tool or template failure with no on_error)."""


@dataclass(frozen=True, slots=True)
class Play:
    """Speak `text`; `barge_in` says whether caller speech or keys may cut it short."""

    text: str
    barge_in: bool
    step: str


@dataclass(frozen=True, slots=True)
class DtmfSpec:
    """Keypad collection: done at `max_digits`, at `terminator`, or after an inter-digit gap."""

    max_digits: int
    terminator: str | None
    inter_digit_ms: int


@dataclass(frozen=True, slots=True)
class Listen:
    """Wait for the caller's answer to `step`, after the prompts queued before it.

    `phrases` is the recognizer's phrase list (empty: free speech, or see `grammar`).
    `grammar` is the full recognizer grammar: phrases for menus, choice and yes/no
    answers, a JSGF grammar for dates, times, numbers and digit strings, None for free
    speech. `slot` names the slot this answer fills (None for menus and confirmations).
    `dtmf` is None when keys are not accepted. A None timing means "use the service's
    configured default". `barge_in` repeats the prompt's setting so the session may
    listen while it plays.
    """

    step: str
    phrases: tuple[str, ...]
    dtmf: DtmfSpec | None
    timeout_ms: int | None
    end_silence_ms: int | None
    max_utterance_ms: int | None
    speech: bool
    barge_in: bool
    slot: str | None = None
    grammar: Grammar | None = None
    # Keep the caller's audio with the answer (`Speech.audio`): a model that hears it
    # (`engines.llm_mode: audio`) gets the voice, not only what the recognizer made of it.
    keep_audio: bool = False


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call; `reason` is the run's outcome."""

    reason: Outcome


@dataclass(frozen=True, slots=True)
class GotoFlow:
    """Continue the call in the flow called `name` (this run is then done)."""

    name: str


@dataclass(frozen=True, slots=True)
class CallTool:
    """Run tool `tool` with `args` (JSON values), then feed the result as `ToolDone`."""

    step: str
    tool: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Transfer:
    """Transfer the call to `number` (this run is then done, outcome "transferred")."""

    step: str
    number: str


@dataclass(frozen=True, slots=True)
class RunAgent:
    """Run an LLM agent for an `llm` step (only when the runner was built with
    `agent=True`); feed its end as `AgentDone`, and its slot/var updates through
    `FlowRunner.agent_update` while it runs (that also evaluates `exit_when`)."""

    step: str
    system: str
    tools: tuple[str, ...]
    max_rounds: int
    slots: tuple[str, ...]  # the flow's slots the model may fill


Action: TypeAlias = Play | Listen | Hangup | GotoFlow | CallTool | Transfer | RunAgent
