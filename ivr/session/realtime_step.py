"""An `llm` step over a Realtime session (`llm_mode: realtime`): speech to speech, µ-law
both ways.

The caller's frames go to the provider as they arrive (`Inbound.tap`: no decoding, no
resampling) and the model's µ-law is played as it comes, byte for byte. The step's
instructions and tools are the session's; a function call is checked and run like the
agent's (`llm.tool_calls.StepTools`: allowed tools only, arguments against their schema),
its result sent back, and the flow's `exit_when` checked after it. Barge-in: the local
VAD (the endpointer watches while the model speaks) or the provider's `speech_started`
stops the reply, sends Twilio `clear`, cancels the response and truncates the assistant
item to what the caller heard. The caller's words (input transcription) and the model's
(output transcript) go into the turn record, usage into the call's cost. A session that
cannot start or drops mid-call ends the step as a failure: the flow's fallback (the
scripted path) speaks next.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import structlog

from ivr.audio.player import Prompt
from ivr.config import Settings
from ivr.dialog.agent_step import step_instructions
from ivr.dialog.port import ToolRun
from ivr.flows import engine
from ivr.llm.client import ToolCallDone
from ivr.llm.events import AgentStep
from ivr.llm.realtime import (
    AudioDelta,
    AudioDone,
    Closed,
    FunctionCall,
    InputTranscript,
    OutputTranscript,
    RealtimeConfig,
    RealtimeError,
    RealtimeEvent,
    RealtimeSession,
    ResponseDone,
    SpeechStarted,
    SpeechStopped,
    usage_units,
)
from ivr.llm.realtime_wire import realtime_url
from ivr.llm.tool_calls import END_CONVERSATION, TRANSFER_TO_HUMAN, StepTools
from ivr.providers.errors import ProviderError
from ivr.server.services import Services
from ivr.session.inbound import Inbound
from ivr.session.record import CallRecord, SpanTimer
from ivr.session.speaker import Speaker
from ivr.store.db import TurnRecord
from ivr.tools.base import ToolContext
from ivr.tools.registry import ToolRegistry


class CallSide(Protocol):
    """What the step needs of the call (`session.call.CallSession`)."""

    settings: Settings
    services: Services
    inbound: Inbound
    speaker: Speaker
    record: CallRecord
    stats: Counter[str]
    log: structlog.typing.FilteringBoundLogger

    def span(self, stage: str) -> SpanTimer: ...

    def tool_ran(self, run: ToolRun) -> None: ...

__all__ = ["run_realtime_step"]


class _Reply:
    """One spoken reply of the model, played while its audio streams in."""

    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        self.transcript = ""
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.prompt: Prompt | None = None
        self.task: asyncio.Task[None] | None = None

    async def pieces(self) -> AsyncIterator[bytes]:
        while (piece := await self.queue.get()) is not None:
            yield piece

    def heard_ms(self) -> int:
        """How much of it the caller has heard by now (it plays from its first frame)."""
        prompt = self.prompt
        return 0 if prompt is None else int(prompt.heard_ms_at(time.monotonic()))


class RealtimeStep:
    def __init__(
        self, call: CallSide, action: engine.RunAgent, runner: engine.FlowRunner,
        registry: ToolRegistry, ctx: Callable[[], ToolContext], model: str,
    ) -> None:
        self.call = call
        self.action = action
        self.runner = runner
        self.ctx = ctx
        self.model = model
        self.vars: dict[str, Any] = {}
        self.called: list[str] = []
        slots: dict[str, str] = {}
        self.system = system = step_instructions(action, runner)
        self.step = AgentStep(system_prompt=system, tools=action.tools,
                              max_rounds=action.max_rounds, slot_names=action.slots)
        self.tools = StepTools(registry, self.step, slots, stopwatch=call.span)
        self.reply: _Reply | None = None
        self.turn: TurnRecord | None = None  # the caller's turn awaiting its words
        self.session: RealtimeSession | None = None
        self.barge_ins = 0
        # The responses asked for and not yet done, oldest first (an llm span each): the
        # provider answers in order, and a response's `done` may come after the next ask.
        self.laps: deque[SpanTimer] = deque()

    # ------------------------------------------------------------------ the step

    async def run(self) -> engine.AgentDone:
        call, settings = self.call, self.call.settings
        llm = settings.llm
        if llm is None or call.services.http is None:
            return engine.AgentDone(False, "error", "realtime needs IVR_LLM_* configured")
        config = RealtimeConfig(
            url=realtime_url(settings.realtime_url, llm.base_url), api_key=llm.api_key,
            model=self.model, voice=settings.llm_voice, instructions=self.system,
            tools=self.tools.schemas)
        try:
            self.session = session = await RealtimeSession.connect(call.services.http, config)
        except ProviderError as exc:
            call.stats["realtime_failures"] += 1
            call.log.warning("realtime_failed", error=str(exc))
            return engine.AgentDone(False, "error", f"realtime: {exc}")
        inbound = call.inbound
        inbound.tap, inbound.on_voice = session.append_audio, self._caller_spoke
        try:
            self.laps.append(call.span("llm"))
            await session.respond()  # the model opens the conversation
            async for event in session.events():
                done = await self._handle(event)
                if done is not None:
                    return done
            return engine.AgentDone(False, "error", "realtime session ended")
        finally:
            inbound.tap = inbound.on_voice = None
            for lap in self.laps:  # asked, never answered: the step ended first
                lap.span["error"] = "unanswered"
                lap.done(self.model)
            await self._end_reply()
            await session.close()

    async def _handle(self, event: RealtimeEvent) -> engine.AgentDone | None:
        call = self.call
        if isinstance(event, AudioDelta):
            if self.laps:
                self.laps[0].first()
            self._play(event)
        elif isinstance(event, AudioDone):
            if self.reply is not None and self.reply.item_id == event.item_id:
                self.reply.queue.put_nowait(None)
        elif isinstance(event, OutputTranscript):
            if self.reply is not None and self.reply.item_id == event.item_id:
                self.reply.transcript = event.text
        elif isinstance(event, SpeechStarted):
            self._caller_spoke()
        elif isinstance(event, SpeechStopped):
            self._caller_done()
        elif isinstance(event, InputTranscript):
            self._caller_words(event.text)
        elif isinstance(event, FunctionCall):
            return await self._function(event)
        elif isinstance(event, ResponseDone):
            if self.laps:
                self.laps.popleft().done(self.model)
            call.record.usage.add("llm", self.model, {**usage_units(event.usage), "requests": 1})
        elif isinstance(event, RealtimeError):
            call.stats["realtime_errors"] += 1
            call.log.warning("realtime_error", code=event.code, message=event.message)
        elif isinstance(event, Closed):
            if event.reason == "closed":
                return engine.AgentDone(False, "error", "realtime session closed")
            call.stats["realtime_dropped"] += 1
            call.log.warning("realtime_dropped", reason=event.reason, code=event.code)
            return engine.AgentDone(False, "error", f"realtime session {event.reason}")
        return None

    # ------------------------------------------------------------ the model speaks

    def _play(self, event: AudioDelta) -> None:
        reply = self.reply
        if reply is None or reply.item_id != event.item_id:
            before = reply.task if reply is not None else None
            if reply is not None:
                reply.queue.put_nowait(None)
            reply = self.reply = _Reply(event.item_id)
            reply.task = asyncio.create_task(self._speak(reply, before))
        reply.queue.put_nowait(event.ulaw)

    async def _speak(self, reply: _Reply, before: asyncio.Task[None] | None) -> None:
        call = self.call
        if before is not None:  # one reply at a time on the line
            await asyncio.wait({before})
        listen = engine.Listen(step=self.action.step, phrases=(), dtmf=None, timeout_ms=None,
                               end_silence_ms=None, max_utterance_ms=None, speech=True,
                               barge_in=True)
        call.inbound.watch_barge_in(listen)  # the local VAD listens while the model speaks
        prompt = reply.prompt = call.speaker.start(
            engine.Play("", True, self.action.step), interruptible=True, audio=reply.pieces())
        await call.speaker.sent()
        prompt.text = reply.transcript
        await call.record.replied(prompt)

    def _caller_spoke(self) -> None:
        """The caller started talking (local VAD or the provider's): stop the reply."""
        reply, session = self.reply, self.session
        if reply is None or session is None or reply.prompt is None:
            return
        if reply.prompt.state not in ("playing", "sent") or not self.call.speaker.playing:
            return
        self.barge_ins += 1
        self.call.stats["barge_ins"] += 1
        heard = reply.heard_ms()
        self.call.speaker.interrupt()  # stop sending, Twilio `clear`
        reply.queue.put_nowait(None)
        self.call.log.info("barge_in", by="realtime", heard_ms=heard)
        asyncio.get_running_loop().create_task(self._cut(session, reply.item_id, heard))

    async def _cut(self, session: RealtimeSession, item_id: str, heard_ms: int) -> None:
        await session.cancel()
        await session.truncate(item_id, heard_ms)

    async def _end_reply(self) -> None:
        reply, self.reply = self.reply, None
        if reply is not None and reply.task is not None:
            reply.queue.put_nowait(None)
            await asyncio.wait({reply.task})

    # ------------------------------------------------------------ the caller

    def _caller_done(self) -> None:
        """End of the caller's speech: a turn, its words to come (transcription)."""
        record = self.call.record
        turn = record.open_turn(self.action.step, self.call.speaker.take_prompts())
        turn.timings["endpoint"] = record.ms()
        record.read_free(engine.Speech(""))
        self.turn = turn
        self.laps.append(self.call.span("llm"))  # the provider answers the turn just ended

    def _caller_words(self, text: str) -> None:
        turn = self.turn
        if turn is None:
            return
        turn.input_text = text
        self.call.record.span_ended(turn)  # written again if it already was

    # ------------------------------------------------------------ tools

    async def _function(self, event: FunctionCall) -> engine.AgentDone | None:
        call, session = self.call, self.session
        assert session is not None
        checked = self.tools.check(ToolCallDone(event.call_id, event.name, event.arguments_json))
        error: str | None
        if checked.error is not None:
            result = {"ok": False, "error": checked.error}
            ok, error = False, checked.error
        else:
            (done,) = await self.tools.run([checked], self.ctx)
            result = json.loads(done.to_json())
            ok, error = done.ok, done.error
            if ok:
                self.called.append(checked.name)
                self.vars[checked.name] = done.value
        call.stats["tool_calls"] += 1
        call.stats["tool_errors"] += not ok
        call.log.info("agent_tool", tool=checked.name, ok=ok, error=error)
        call.tool_ran(ToolRun(self.action.step, checked.name, dict(checked.args), ok, error,
                              by_model=True))
        if ok and checked.name == TRANSFER_TO_HUMAN:
            return engine.AgentDone(False, "transfer")
        if ok and checked.name == END_CONVERSATION:
            return engine.AgentDone(True, "model")
        found = {k.replace(".", "__"): v for k, v in self.vars.items()}
        if self.runner.agent_update(dict(self.tools.slots), found):
            return engine.AgentDone(True, "exit")
        self.laps.append(call.span("llm"))
        await session.send_function_result(event.call_id, json.dumps(result))
        return None


async def run_realtime_step(
    call: CallSide, action: engine.RunAgent, runner: engine.FlowRunner,
    registry: ToolRegistry, ctx: Callable[[], ToolContext], model: str,
) -> engine.AgentDone:
    """Run `action` over a Realtime session; never raises for the provider's failures."""
    return await RealtimeStep(call, action, runner, registry, ctx, model).run()
