"""A call in text: the one dialog driver, fed typed turns, with real tools.

`ivr chat`, `ivr flows test` and the equivalence tests use this; a phone call
(`session.call.CallSession`) runs the same `Dialog` over audio, so a flow behaves the
same typed and spoken, `llm` steps included when a model is given.

The driver pulls answers (`ask`); a conversation is pushed turns. `TextConversation`
runs the driver as a task and hands each typed turn to the `ask` waiting for it: a
`start()` or `turn()` returns once the driver waits for the next answer or has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ivr.dialog.agent_step import ModelFor
from ivr.dialog.driver import Dialog
from ivr.dialog.port import NoLap, ToolRun
from ivr.flows import engine
from ivr.flows.model import Flow
from ivr.tools.base import ToolContext
from ivr.tools.registry import ToolRegistry

T = TypeVar("T")


@dataclass
class Exchange:
    """What the bot said after one caller turn (or at the start), and what it did."""

    caller: str | None  # None at the start of the call
    bot: list[str] = field(default_factory=list)
    tools: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    ended: str | None = None  # hangup reason, transfer number, or goto flow


def typed_answer(text: str, listen: engine.Listen) -> engine.Event:
    """A typed turn as the phone would take it: `#12` presses keys 1 and 2, other text
    is speech, an empty turn is no input. Keys where the question takes none (or speech
    where it takes only keys) are ignored on a phone line, so they are no input here."""
    text = text.strip()
    if text.startswith("#"):
        return engine.Digits(text[1:].strip()) if listen.dtmf is not None else engine.NoInput()
    if text:
        return engine.Speech(text) if listen.speech else engine.NoInput()
    return engine.NoInput()


class TextConversation:
    """Drive one flow by text. `#12` presses keys 1 and 2; an empty turn is no input."""

    def __init__(
        self,
        flows: dict[str, Flow],
        flow: str,
        registry: ToolRegistry,
        *,
        db_path: Path | str,
        caller: str = "",
        now: Callable[[], datetime] | None = None,
        call_sid: str | None = None,
        model: ModelFor | None = None,
        llm_max_tokens_per_call: int = 0,
    ) -> None:
        self.flows = flows
        self.dialog = Dialog(self, lambda: self.flows, flows[flow], registry, caller=caller,
                             call_sid=call_sid, db_path=db_path, model=model, now=now,
                             llm_max_tokens_per_call=llm_max_tokens_per_call)
        self.exchanges: list[Exchange] = []
        self.tool_calls: list[str] = []
        self._exchange = Exchange(None)
        self._task: asyncio.Task[None] | None = None
        self._asked: asyncio.Future[None] | None = None  # the driver waits for an answer
        self._answer: asyncio.Future[str] | None = None

    @property
    def runner(self) -> engine.FlowRunner:
        return self.dialog.runner

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def start(self) -> Exchange:
        self._exchange = Exchange(None)
        self._task = asyncio.create_task(self.dialog.run(), name="text-conversation")
        return await self._settle()

    async def turn(self, text: str) -> Exchange:
        self._exchange = Exchange(text.strip())
        if self._answer is None or self.done:
            self.exchanges.append(self._exchange)
            return self._exchange  # the call has ended: nobody listens
        answer, self._answer = self._answer, None
        answer.set_result(text)
        return await self._settle()

    async def close(self) -> None:
        """Stop a conversation left in the middle (the caller hung up)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _settle(self) -> Exchange:
        assert self._task is not None
        asked = self._asked = asyncio.get_running_loop().create_future()
        await asyncio.wait({self._task, asked}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()  # the driver's failure is the caller's
            self._exchange.ended = self.dialog.ended
        self.exchanges.append(self._exchange)
        return self._exchange

    # ------------------------------------------------------------------ the port

    @property
    def gone(self) -> bool:
        return False

    async def say(
        self, play: engine.Play, *, leads_to: engine.Listen | None = None,
        then: str | None = None,
    ) -> None:
        self._exchange.bot.append(play.text)

    async def ask(self, listen: engine.Listen) -> engine.Event:
        answer = self._answer = asyncio.get_running_loop().create_future()
        if self._asked is not None and not self._asked.done():
            self._asked.set_result(None)
        return typed_answer(await answer, listen)

    def answered(self, reading: engine.Turn | None) -> None:
        pass  # the exchange already holds what was typed

    def answered_in_llm_step(self, answer: engine.Event) -> None:
        pass

    async def with_filler(self, work: Coroutine[Any, Any, T]) -> T:
        return await work

    async def transfer(self, number: str) -> None:
        pass  # the driver ends the conversation with "transfer <number>"

    async def say_audio(
        self, step: str, audio: AsyncIterator[tuple[bytes, int]], transcript: Callable[[], str],
    ) -> None:
        async for _ in audio:  # a typed conversation shows the words, not the sound
            pass
        await self.say(engine.Play(transcript(), False, step))

    async def realtime_step(
        self, action: engine.RunAgent, runner: engine.FlowRunner, tools: ToolRegistry,
        ctx: Callable[[], ToolContext], model: str | None,
    ) -> engine.AgentDone | None:
        return None  # typed text: the step runs as a pipeline

    def span(self, stage: str) -> NoLap:
        return NoLap()

    def used(self, role: str, engine: str, units: dict[str, int]) -> None:
        pass  # a typed conversation keeps no cost

    def tool_ran(self, run: ToolRun) -> None:
        self._exchange.tools.append((run.tool, run.args, run.ok))
        self.tool_calls.append(run.tool)
