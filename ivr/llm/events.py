"""What an `llm` step is given and what its agent yields: the step, the events, the ports.

A leaf of `ivr.llm` so the session and the dialog can name the events without importing
the loop, and the loop and the tool calls share one definition of the step.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ivr.llm.client import AudioOut, ChatDelta

__all__ = [
    "AgentEvent",
    "AgentStep",
    "ChatModel",
    "Done",
    "DoneReason",
    "ExitCheck",
    "Lap",
    "ModelAudio",
    "ModelListens",
    "ModelSaid",
    "ModelSays",
    "Stopwatch",
    "ToolRan",
    "UsageEvent",
]

ExitCheck = Callable[[dict[str, str], dict[str, Any], list[str]], bool]
DoneReason = Literal["exit", "model", "transfer", "max_rounds", "budget", "error"]


class ChatModel(Protocol):
    """What the agent needs of a chat model: `ChatClient`, or one scripted in a flow test.

    The agent passes `audio` only in audio mode (`AgentStep.audio`): a text request is
    the same call it always was. A model that cannot speak may ignore it and answer in
    text; the agent then speaks the text as sentences."""

    model: str

    def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
        *, audio: AudioOut | None = None,
    ) -> AsyncGenerator[ChatDelta, None]: ...


@dataclass(frozen=True, slots=True)
class AgentStep:
    system_prompt: str  # already rendered; should name the slots the model may set
    tools: tuple[str, ...] = ()  # dotted registry names the model may call
    max_rounds: int = 8  # model requests per `turn()` (one caller turn)
    exit_when: ExitCheck | None = None  # (slots, vars, called_tools) -> end the step
    slot_names: tuple[str, ...] = ()  # `set_slot` names; empty: the keys of `slots`
    max_invalid_rounds: int = 2  # consecutive rounds with a refused call, then error
    # Tokens (prompt + completion) this step may use before no further request is made:
    # what is left of the call's budget when the step starts. None: no bound.
    max_tokens: int | None = None
    # Speech-to-speech: the model answers in audio (`ModelAudio`, then `ModelSaid`)
    # instead of text sentences. None: text, spoken by the phone's synthesizer.
    audio: AudioOut | None = None


@dataclass(frozen=True, slots=True)
class ModelSays:
    text: str  # one complete sentence


@dataclass(frozen=True, slots=True)
class ModelAudio:
    """A piece of the model's spoken reply (audio mode), to be played as it arrives."""

    pcm: bytes  # PCM16 mono, little-endian, whole samples
    rate: int


@dataclass(frozen=True, slots=True)
class ModelSaid:
    """The words of one round's reply in audio mode (the transcript of its audio, or its
    text), for the turn record: yielded once the round's stream has ended."""

    transcript: str


@dataclass(frozen=True, slots=True)
class ToolRan:
    name: str  # dotted registry name, or a built-in's name
    args: dict[str, Any]
    ok: bool
    value: dict[str, Any]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ModelListens:
    pass


@dataclass(frozen=True, slots=True)
class Done:
    reason: DoneReason
    error: str | None = None


@dataclass(frozen=True, slots=True)
class UsageEvent:
    prompt: int
    completion: int
    cached: int = 0
    # Billable token units (`providers.usage.token_units`), for the call's cost.
    units: dict[str, int] = field(default_factory=dict, compare=False)


class Lap(Protocol):
    """The timing of one model round or tool call (`session.record.SpanTimer`)."""

    def first(self) -> None: ...

    def done(self, provider: str) -> None: ...


# Starts a lap for a stage ("llm", "tool"); the session records it in the caller's turn.
Stopwatch = Callable[[str], Lap]


AgentEvent = ModelSays | ModelAudio | ModelSaid | ToolRan | ModelListens | Done | UsageEvent
