"""An `llm` step, driven over a `DialogPort`: the model talks, calls tools, and listens.

Each sentence the model completes is spoken at once (the phone starts synthesis before
the reply is whole); tools run through the registry; between model turns the caller is
asked for an answer, as in any other step. Slot and var updates go to the runner
(`agent_update`, which also evaluates `exit_when`); the step ends with `AgentDone`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from ivr.dialog.port import DialogPort, ToolRun
from ivr.flows import engine
from ivr.flows.model import Flow
from ivr.llm.agent import (
    Agent,
    AgentEvent,
    AgentStep,
    ChatModel,
    Done,
    ModelAudio,
    ModelListens,
    ModelSaid,
    ModelSays,
    ToolRan,
    UsageEvent,
)
from ivr.llm.client import AudioOut, ChatClient
from ivr.tools.base import ToolContext
from ivr.tools.registry import ToolRegistry

MAX_AGENT_TURNS = 20  # caller turns inside one `llm` step

# The chat model an `llm` step of a flow talks to.
ModelFor = Callable[[Flow], ChatModel]


def per_flow_model(chat: ChatClient) -> ModelFor:
    """The configured model (`IVR_LLM_*`), or the flow's own (`engines: llm_model`) on
    the same provider."""

    def pick(flow: Flow) -> ChatModel:
        if flow.engines is not None and flow.engines.llm_model:
            return ChatClient(chat.provider, flow.engines.llm_model)
        return chat

    return pick


def step_instructions(action: engine.RunAgent, runner: engine.FlowRunner) -> str:
    """The model's instructions for an `llm` step: the flow's, the slots it may set,
    and today's date (the model has no clock)."""
    system = action.system
    if action.slots:
        system += ("\nUse set_slot to record what the caller tells you: "
                   + ", ".join(action.slots) + ".")
    return system + f"\nToday is {runner.now().date().isoformat()}; give dates as YYYY-MM-DD."


def _answer_for_model(answer: engine.Event) -> str:
    if isinstance(answer, engine.Speech):
        return answer.text
    if isinstance(answer, engine.Digits):
        return f"[keys pressed: {answer.digits}]"
    return "[the caller said nothing]"


async def run_llm_step(
    action: engine.RunAgent,
    runner: engine.FlowRunner,
    chat: ChatModel,
    tools: ToolRegistry,
    port: DialogPort,
    ctx: Callable[[], ToolContext],
    *,
    stats: Counter[str],
    labels: dict[str, str],
    log: structlog.typing.FilteringBoundLogger,
    max_tokens_per_call: int = 0,
    audio: AudioOut | None = None,
) -> engine.AgentDone:
    """Run one `llm` step until the model exits, ends or fails; never raises for the
    provider's failures (they end the step with `AgentDone(ok=False)`: the fallback).

    `audio` (`llm_mode: audio`): the model hears the caller's voice (the answer's
    `Speech.audio`; the recognizer's words are kept for the record) and speaks its reply,
    played as it streams (`DialogPort.say_audio`), instead of text for the synthesizer.

    `max_tokens_per_call` (0: no limit) bounds the tokens of all the call's `llm` steps
    together: `stats` holds what the earlier ones used, and once the budget is spent the
    step ends with `AgentDone(ok=False, "budget")`, which takes its fallback.
    """
    slots: dict[str, str] = {}
    spent_before = stats["llm_prompt_tokens"] + stats["llm_completion_tokens"]
    remaining = (max(0, max_tokens_per_call - spent_before) if max_tokens_per_call > 0
                 else None)

    def exit_check(values: dict[str, str], found: dict[str, Any], called: list[str]) -> bool:
        return runner.agent_update(
            dict(values), {k.replace(".", "__"): v for k, v in found.items()})

    system = step_instructions(action, runner)
    agent = Agent(chat, tools, ctx,
                  AgentStep(system_prompt=system, tools=action.tools,
                            max_rounds=action.max_rounds, exit_when=exit_check,
                            slot_names=action.slots, max_tokens=remaining, audio=audio),
                  slots, stopwatch=port.span)
    user: str | None = None
    heard: bytes | None = None
    try:
        for _ in range(MAX_AGENT_TURNS):
            said = stats["agent_sentences"]
            done = await _model_turn(action, agent, user, heard, port, stats, log)
            if done is not None:
                if done.reason == "budget":
                    stats["llm_budget_spent"] += 1
                    log.warning("llm_budget_spent", step=action.step,
                                limit=max_tokens_per_call, used=spent_before + agent.tokens)
                return done
            if stats["agent_sentences"] == said:
                # The model wants the caller to talk but said nothing: the caller
                # would sit in silence. Treat it as a failed step.
                return engine.AgentDone(False, "error", "the model replied with nothing")
            listen = engine.Listen(step=action.step, phrases=(), dtmf=None, timeout_ms=None,
                                   end_silence_ms=None, max_utterance_ms=None, speech=True,
                                   barge_in=False, keep_audio=audio is not None)
            answer = await port.ask(listen)
            port.answered_in_llm_step(answer)
            user = _answer_for_model(answer)
            heard = answer.audio if isinstance(answer, engine.Speech) else None
        return engine.AgentDone(False, "max_rounds", "too many caller turns")
    finally:
        stats["llm_prompt_tokens"] += agent.prompt_tokens
        stats["llm_completion_tokens"] += agent.completion_tokens
        stats["llm_cached_tokens"] += agent.cached_tokens
        labels["llm_model"] = chat.model


class _SpokenReply:
    """One spoken reply of the model, played while it streams: audio pieces go to a
    queue the port plays from; `end()` closes it once the round's words are known."""

    def __init__(self, port: DialogPort, step: str) -> None:
        self._queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self.transcript = ""
        self.task = asyncio.create_task(
            port.say_audio(step, self._pieces(), lambda: self.transcript))

    async def _pieces(self) -> AsyncIterator[tuple[bytes, int]]:
        while (piece := await self._queue.get()) is not None:
            yield piece

    def put(self, event: ModelAudio) -> None:
        self._queue.put_nowait((event.pcm, event.rate))

    async def end(self, transcript: str | None = None) -> None:
        if transcript is not None:
            self.transcript = transcript
        self._queue.put_nowait(None)
        await asyncio.wait({self.task})  # sent (or cut): then the caller may answer


async def _model_turn(
    action: engine.RunAgent, agent: Agent, user: str | None, heard: bytes | None,
    port: DialogPort, stats: Counter[str], log: structlog.typing.FilteringBoundLogger,
) -> engine.AgentDone | None:
    """One model turn; None when the model waits for the caller."""
    events = agent.turn(user, user_audio=heard)
    spoken: _SpokenReply | None = None

    async def next_event() -> AgentEvent | None:
        try:
            return await anext(events)
        except StopAsyncIteration:
            return None

    try:
        while (event := await port.with_filler(next_event())) is not None:
            if isinstance(event, ModelAudio):
                if spoken is None:
                    stats["agent_sentences"] += 1  # the model said something
                    spoken = _SpokenReply(port, action.step)
                spoken.put(event)
                continue
            if spoken is not None:  # the round's audio is over: play it out first
                await spoken.end(event.transcript if isinstance(event, ModelSaid) else None)
                spoken = None
            if isinstance(event, ModelSaid):
                continue
            if isinstance(event, ModelSays):
                stats["agent_sentences"] += 1
                await port.say(engine.Play(event.text, False, action.step))
            elif isinstance(event, ToolRan):
                stats["tool_calls"] += 1
                stats["tool_errors"] += not event.ok
                log.info("agent_tool", tool=event.name, ok=event.ok, error=event.error)
                port.tool_ran(ToolRun(action.step, event.name, dict(event.args), event.ok,
                                      event.error, by_model=True))
            elif isinstance(event, UsageEvent):
                port.used("llm", agent.chat.model, event.units)
            elif isinstance(event, ModelListens):
                return None
            elif isinstance(event, Done):
                log.info("agent_done", reason=event.reason, error=event.error)
                return engine.AgentDone(event.reason in ("exit", "model"), event.reason,
                                        event.error or "")
    finally:
        if spoken is not None:
            await spoken.end()
        await events.aclose()
    return engine.AgentDone(False, "error", "the model's turn ended without a result")
