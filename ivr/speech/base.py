"""Interfaces between the call session and speech engines.

Engines know audio, never flows: a step's expected answers arrive here as a
`Grammar` (a list of phrases), and a result leaves as a `Recognition`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ivr.grammar import Grammar


@dataclass(frozen=True, slots=True)
class Recognition:
    """The final result of one utterance."""

    text: str
    # The engine's own score (pocketsphinx's posterior); None: the engine gives none
    # (the remote ones), and the flow's certainty thresholds, which are measured on
    # pocketsphinx's scale, do not apply to it.
    confidence: float | None = None
    engine: str = ""
    audio_seconds: float = 0.0
    cpu_seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)
    # What `engine` bills this utterance in (`analytics.usage` units); empty: its audio
    # seconds (`audio_s`), the unit of per-minute recognizers.
    usage: dict[str, float] = field(default_factory=dict)
    # How far `text` leads the recognizer's best other answer, in [0, 1] (0: a tie, 1: no
    # rival); None when the engine has no N-best list. The embedded recognizer's
    # normalization is `ivr.speech.sphinx.utterance.answer_margin`.
    margin: float | None = None


class Utterance(Protocol):
    """One utterance being recognized: audio streamed in, one result out."""

    def feed(self, pcm16_16k: bytes) -> None:
        """Queue 16 kHz mono PCM16 audio; never blocks."""

    async def finish(self) -> Recognition:
        """Signal end of speech and wait for the final result."""

    async def cancel(self) -> None:
        """Abandon the utterance (barge-in aborted, call ended)."""


@runtime_checkable
class PartialResults(Protocol):
    """An utterance that also tells what it has heard so far (the embedded recognizer).

    Optional: remote recognizers that only answer at the end leave it out, and
    `partial_text` then gives None.
    """

    def partial(self) -> str | None:
        """The latest partial hypothesis (as the grammar spells a phrase it matches),
        or None before the first; never blocks."""


def partial_text(utterance: Utterance) -> str | None:
    """`utterance`'s latest partial hypothesis, or None if its engine gives none."""
    return utterance.partial() if isinstance(utterance, PartialResults) else None


class Recognizer(Protocol):
    name: str

    async def start(self, grammar: Grammar | None) -> Utterance:
        """Begin an utterance, constrained by `grammar` when given."""


class Synthesizer(Protocol):
    name: str

    def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncIterator[tuple[bytes, int]]:
        """Yield (PCM16 mono chunk, sample rate) as synthesis progresses."""


# Set (to the engine's name) by a synthesizer that answered a request with a stand-in
# engine (`speech.fallback`): the audio is not the voice the request named, so the
# synthesis cache must not keep it under that voice's key. A synthesizer's generator runs
# in the task that iterates it, so the consumer reads what the engine set.
STAND_IN: ContextVar[str | None] = ContextVar("ivr_speech_stand_in", default=None)
