"""The port a conversation runs over: what `dialog.driver.Dialog` needs of its medium.

A phone call (`session.call.CallSession`) speaks through a player and listens through
an endpointer and a recognizer; a text conversation (`dialog.conversation`) prints lines
and reads typed ones. Both implement `DialogPort`, so the one driver serves both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ivr.flows import engine
from ivr.llm.agent import Lap
from ivr.tools.base import ToolContext
from ivr.tools.registry import ToolRegistry

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One tool call: by a `call` step, or by the model during an `llm` step."""

    step: str
    tool: str  # dotted registry name, or an agent built-in (`set_slot`, ...)
    args: dict[str, Any]
    ok: bool
    error: str | None = None
    ms: float | None = None  # a `call` step's tool, timed with its fillers
    by_model: bool = False


class DialogPort(Protocol):
    """What a conversation needs of the medium it runs over (a phone call, a terminal)."""

    @property
    def gone(self) -> bool:
        """The caller has left: stop before the next action."""
        ...

    async def say(
        self, play: engine.Play, *, leads_to: engine.Listen | None = None,
        then: str | None = None,
    ) -> None:
        """Speak `play`. `leads_to` is the question it asks (the caller may answer over
        it, if both allow barge-in); `then` is the prompt that follows at once."""
        ...

    async def ask(self, listen: engine.Listen) -> engine.Event:
        """Take the caller's answer: speech, keys, or no input."""
        ...

    def answered(self, reading: engine.Turn | None) -> None:
        """The answer to a flow's question, as the runner read it."""
        ...

    def answered_in_llm_step(self, answer: engine.Event) -> None:
        """An answer inside an `llm` step (the runner never sees those)."""
        ...

    async def with_filler(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`; a phone says short fillers while it is slow."""
        ...

    async def transfer(self, number: str) -> None:
        """Hand the caller to `number`; the conversation ends here."""
        ...

    def tool_ran(self, run: ToolRun) -> None:
        """A tool call finished (it has already been fed back)."""
        ...

    async def say_audio(
        self, step: str, audio: AsyncIterator[tuple[bytes, int]], transcript: Callable[[], str],
    ) -> None:
        """Play audio a model speaks (PCM16 pieces at their rate) as it arrives; once it is
        all sent, `transcript()` gives its words for the record."""
        ...

    async def realtime_step(
        self, action: engine.RunAgent, runner: engine.FlowRunner, tools: ToolRegistry,
        ctx: Callable[[], ToolContext], model: str | None,
    ) -> engine.AgentDone | None:
        """Run an `llm` step over a Realtime session (`model`, None: the configured one);
        None when this medium has no audio to stream (the step then runs as a pipeline)."""
        ...

    def span(self, stage: str) -> Lap:
        """Start timing a provider stage ("llm", "tool") of the current turn."""
        ...

    def used(self, role: str, engine: str, units: dict[str, int]) -> None:
        """`engine` served a request of `role` and bills these units (`analytics.usage`)."""
        ...


class NoLap:
    """A `Lap` for media that keep no timings (a typed conversation)."""

    def first(self) -> None:
        pass

    def done(self, provider: str) -> None:
        pass
