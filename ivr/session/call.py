"""`CallSession`: one phone call, wired from small collaborators.

* `inbound.Inbound`: media, keys and marks, called per frame by the WebSocket handler
  (it never awaits): endpointing, speech streamed to recognition, barge-in;
* `speaker.Speaker`: synthesis (cache first), prefetch of the next prompt, playback;
* `answers.Answers`: taking one answer: listen, recognize, time out;
* `record.CallRecord`: turns and their timings, usage, cost, the call's end;
* `dialog.driver.Dialog`: the flow's actions, the same driver `ivr chat` runs. The
  session is its `DialogPort`: what saying, asking, fillers and transfers mean on a phone.

What stays here is the wiring and the call's lifecycle: begin, end (shielded), hang up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import structlog
from aiohttp import web

from ivr.audio.player import Player
from ivr.config import Settings
from ivr.dialog.agent_step import per_flow_model
from ivr.dialog.driver import Dialog
from ivr.dialog.port import ToolRun
from ivr.flows import engine
from ivr.logging import mask_number
from ivr.server.services import SHUTDOWN_PROMPT, Services
from ivr.session.answers import Answers
from ivr.session.inbound import Inbound
from ivr.session.record import CallRecord, SpanTimer, call_outcome
from ivr.session.speaker import Speaker, ulaw_of
from ivr.store.db import FAILED
from ivr.telephony import control
from ivr.telephony.inbound import Dtmf, Mark, Media, Start
from ivr.telephony.outbound import TwilioOutbound, Writer
from ivr.telephony.stream_token import StreamClaims
from ivr.tools.base import ToolContext
from ivr.tools.registry import ToolRegistry

FILLERS = ("One moment, please.", "Still working on it.", "Thanks for waiting.",
           "Almost there.")
T = TypeVar("T")


def outbound_player(ws: web.WebSocketResponse, stream_sid: str, settings: Settings) -> Player:
    """The call's outbound audio: what the player sends goes out on the stream's socket,
    written by the shared frame clock without waiting (`Writer`)."""

    async def send(text: str) -> None:
        if not ws.closed:
            await ws.send_str(text)

    # A `telephony.socket.MediaSocket` writes frames below `send_str` when it can.
    writer = Writer(send, now=getattr(ws, "write_now", None))
    out = TwilioOutbound(writer, stream_sid, raw=getattr(ws, "media_writer", None))
    return Player(out, lead=settings.lead_ms / 1000)


class CallSession:
    def __init__(
        self, services: Services, start: Start, claims: StreamClaims, *,
        ws: web.WebSocketResponse, log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        """`claims` are what `/voice` signed for this call (the handler verified them):
        the only source of the caller's number and the flow, never the start's own
        customParameters."""
        assert services.library is not None and services.tools is not None
        assert services.recognizer is not None
        self.services = services
        self.settings = services.settings
        self.start_msg = start
        self.stream_sid = start.stream_sid
        self.call_sid = start.call_sid
        self.ws = ws
        self.log = log
        self.claims = claims
        flow = services.library.pick(claims.flow, claims.called)
        self.caller = claims.caller
        self.stats: Counter[str] = Counter()
        self.record = CallRecord(services, self.call_sid, self.stats, log)
        # The parts call back into the session through a weak reference: a strong one
        # would make every call a reference cycle, and the call's objects and buffers
        # would wait for a full garbage collection instead of going when the call ends
        # (`ivr bench soak` saw every call's graph left to the collector).
        me = weakref.proxy(self)
        self.speaker = Speaker(services, outbound_player(ws, self.stream_sid, self.settings),
                               lambda: me.dialog.flow, self.record, log)
        self.inbound = Inbound(services.recognizer, self.speaker, self.stats, log,
                               complete_ms=self.settings.endpoint_complete_ms)
        self.answers = Answers(self.settings, self.inbound, self.speaker, self.record,
                               lambda work: me.with_filler(work), self.stats, log)
        self.dialog = Dialog(
            me, lambda: services.flows, flow, services.tools, caller=self.caller,
            call_sid=self.call_sid, db_path=self.settings.db,
            model=per_flow_model(services.llm) if services.llm is not None else None,
            stats=self.stats, labels=self.record.labels, log=log,
            llm_max_tokens_per_call=self.settings.llm_max_tokens_per_call,
            llm_mode=self.settings.llm_mode, llm_voice=self.settings.llm_voice,
        )
        self.transfer_to: str | None = None
        self._conductor: asyncio.Task[None] | None = None
        self._ended = False
        self._ending: asyncio.Task[None] | None = None
        self._hangup_task: asyncio.Task[None] | None = None
        self._failed = False  # the conductor raised: the call ends as `failed`

    # ---------------------------------------------------------------- lifecycle

    async def begin(self) -> None:
        flow = self.dialog.flow.name
        await self.record.start(
            stream_sid=self.stream_sid, account_sid=self.start_msg.account_sid,
            from_masked=mask_number(self.claims.caller),
            to_masked=mask_number(self.claims.called), flow=flow,
        )
        self.log.info("call_started", flow=flow)
        self._conductor = asyncio.create_task(self._conduct(), name=f"call-{self.call_sid}")

    async def end(self, reason: str) -> None:
        """End the call (idempotent): stop every task, write the record.

        The work runs in a task of its own, shielded: the WebSocket handler that calls
        this is cancelled by aiohttp when the connection drops, and a cancelled end
        would lose the call record.
        """
        if self._ending is None:
            self._ended = True
            self._ending = asyncio.create_task(self._end(reason), name=f"end-{self.call_sid}")
        await asyncio.shield(self._ending)

    async def _end(self, reason: str) -> None:
        runner = self.dialog.runner
        # A conductor that raised is our failure, whatever the socket did next: `failed`,
        # never `dropped` (which containment leaves out) -- and the flow takes no more steps.
        outcome = FAILED if self._failed else call_outcome(runner, reason)
        stats: dict[str, Any] = {}
        try:
            if not runner.done and not self._failed:
                runner.handle(engine.CallerHangup())
            tasks = [t for t in (self._conductor, *self.speaker.running(),
                                 *self.inbound.running(), *self.answers.running())
                     if t is not None and not t.done()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # A cancelled task keeps its CancelledError, whose traceback holds the frames
            # that hold this session: keeping the task would make the call a cycle.
            self._conductor = None
            await self.inbound.close()
            self.speaker.abandon()
            self.record.hung_up()
            await self._flush_turn()
            stats = await self.record.finish(outcome, reason, runner, self.speaker.counters())
        finally:
            # Whatever failed above, the call is no longer live: out of the live set and
            # the active-calls gauge (the record's writes retry on their own).
            self.services.calls.pop(self.stream_sid, None)
            self.record.count(outcome, reason, stats)

    def prompts_played(self) -> list[dict[str, str]]:
        """The prompts played to the caller so far: mark name, text and state
        ("playing", "sent", "played" once the mark came back, or "interrupted")."""
        return [{"mark": p.name, "text": p.text, "state": p.state} for p in self.speaker.played]

    async def shut_down(self, *, budget_s: float) -> None:
        """The server is going away (a drain ran out of time): the flow stops where it
        is, the caller hears `SHUTDOWN_PROMPT` (what is left of it after `budget_s` is
        cut), and the call ends with outcome `shutdown` and hangs up."""
        if self._ending is None and budget_s > 0 and not self.ws.closed:
            conductor = self._conductor
            if conductor is not None and not conductor.done():
                conductor.cancel()  # no flow step runs after this
                await asyncio.gather(conductor, return_exceptions=True)
            self.inbound.listen = None  # nothing the caller says now answers anything
            if self.speaker.playing:
                self.speaker.interrupt()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(budget_s):
                    await self.speaker.play(engine.Play(SHUTDOWN_PROMPT, False, "shutdown"),
                                            interruptible=False)
                    await self.speaker.wait_heard(budget_s)
        await self.end("shutdown")
        # Closing the socket hangs up; a peer that never answers the close is not waited on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self.ws.close()

    async def _conduct(self) -> None:
        try:
            await self.dialog.run()
            await self.speaker.wait_heard(self.settings.mark_grace_ms / 1000)
            await self._flush_turn()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("call_failed", step=self.dialog.runner.current_step)
            self.stats["failures"] += 1
            self._failed = True
            await self._apologize()
        # Closing the socket is how a call hangs up: Twilio moves past <Connect>. Not a
        # task of a collaborator: ending the call cancels those, and this one must finish.
        self._hangup_task = asyncio.create_task(self._hang_up())

    async def _apologize(self) -> None:
        """After a failure: the fixed apology (`IVR_ERROR_PROMPT`), heard, if the caller is
        still there. No flow step runs; a speaker that fails again is only logged."""
        if self.ws.closed or self._ended:
            return
        self.inbound.listen = None  # nothing the caller says now answers anything
        try:
            await self.speaker.play(engine.Play(self.settings.error_prompt, False, "error"),
                                    interruptible=False)
            await self.speaker.wait_heard(self.settings.mark_grace_ms / 1000)
        except Exception:
            self.log.exception("apology_failed")

    async def _hang_up(self) -> None:
        if self._ending is None:  # claim the reason before the handler sees the close
            self._ended = True
            self._ending = asyncio.create_task(self._end("hangup"), name=f"end-{self.call_sid}")
        await self.ws.close()
        await asyncio.shield(self._ending)

    async def _flush_turn(self) -> None:
        goodbye = None
        if self.record.turn is None and self.speaker.prompts and self.dialog.runner.done:
            # Prompts after the last answer (the goodbye): a turn with no input.
            listen = self.inbound.listen
            goodbye = (listen.step if listen else None, self.speaker.take_prompts())
        await self.record.flush(goodbye)

    # ------------------------------------------------ from the WebSocket handler

    def on_media(self, msg: Media) -> None:
        self.inbound.on_media(msg)

    def on_dtmf(self, msg: Dtmf) -> None:
        self.inbound.on_dtmf(msg)

    def on_mark(self, msg: Mark) -> None:
        self.inbound.on_mark(msg)

    # ------------------------------------------------ DialogPort: the phone side

    @property
    def gone(self) -> bool:
        return self._ended

    async def say(
        self, play: engine.Play, *, leads_to: engine.Listen | None = None,
        then: str | None = None,
    ) -> None:
        self.inbound.listen = leads_to
        if self.inbound.barged:
            return  # the caller already answers: skip the rest of the prompts
        if then is not None:
            self.speaker.prefetch(then)
        await self._play(play, leads_to)

    async def ask(self, listen: engine.Listen) -> engine.Event:
        self.inbound.listen = listen
        return await self.answers.take(listen)

    def answered(self, reading: engine.Turn | None) -> None:
        self.record.read(reading)

    def answered_in_llm_step(self, answer: engine.Event) -> None:
        self.record.read_free(answer)

    async def with_filler(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`; while it is slow, say short fillers so the caller never sits in
        unexplained silence (a slow tool, a recognizer queue, a remote provider)."""
        task = asyncio.ensure_future(work)
        after = self.settings.filler_after_ms / 1000
        try:
            for filler in FILLERS:
                done, _ = await asyncio.wait({task}, timeout=after)
                if done:
                    break
                self.stats["fillers"] += 1
                self.log.debug("filler", after_s=after, text=filler)
                # A filler is not a question: speech over it answers nothing.
                saved, self.inbound.listen = self.inbound.listen, None
                try:
                    await self._play(engine.Play(filler, False, "filler"), None)
                finally:
                    self.inbound.listen = saved
            return await task
        finally:
            if not task.done():
                task.cancel()

    async def transfer(self, number: str) -> None:
        await self.speaker.wait_heard(self.settings.mark_grace_ms / 1000)
        self.transfer_to = number
        via = await control.transfer(self.settings, self.services.park_transfer, self.call_sid,
                                     number)
        self.stats["transfer_via_" + via] += 1

    def tool_ran(self, run: ToolRun) -> None:
        if not run.by_model and run.ms is not None:
            self.services.metrics.observe("tool", run.ms / 1000)
            # A `call` step's tool (the model's are timed as they run): its span ends now.
            self.record.span("tool", at=time.monotonic() - run.ms / 1000).done(run.tool)

    async def say_audio(
        self, step: str, audio: AsyncIterator[tuple[bytes, int]], transcript: Callable[[], str],
    ) -> None:
        prompt = await self.speaker.play(engine.Play("", False, step), interruptible=False,
                                         audio=ulaw_of(audio))
        prompt.text = transcript()  # the words came with the sound: known once it is sent
        await self.record.replied(prompt)
        self.log.debug("model_spoke", step=step, name=prompt.name, frames=prompt.frames,
                       state=prompt.state)

    async def realtime_step(
        self, action: engine.RunAgent, runner: engine.FlowRunner, tools: ToolRegistry,
        ctx: Callable[[], ToolContext], model: str | None,
    ) -> engine.AgentDone | None:
        from ivr.session.realtime_step import run_realtime_step  # only realtime flows pay

        return await run_realtime_step(self, action, runner, tools, ctx,
                                       model or self.settings.realtime_model)

    def span(self, stage: str) -> SpanTimer:
        return self.record.span(stage)

    def used(self, role: str, engine: str, units: dict[str, int]) -> None:
        self.record.usage.add(role, engine, {**units, "requests": 1})

    def _barge_in_mode(self) -> str:
        """`vad` or `words`: the flow speaking now decides (`engines.barge_in`), else
        `IVR_BARGE_IN`."""
        engines = self.dialog.flow.engines
        if engines is not None and engines.barge_in is not None:
            return engines.barge_in
        return self.settings.barge_in

    async def _play(self, action: engine.Play, listen: engine.Listen | None) -> None:
        interruptible = bool(action.barge_in and listen is not None and listen.barge_in)
        if interruptible and listen is not None and listen.speech:
            self.inbound.watch_barge_in(listen, words=self._barge_in_mode() == "words")
        prompt = await self.speaker.play(action, interruptible=interruptible)
        await self.record.replied(prompt)
        self.log.debug("prompt", step=action.step, name=prompt.name, text=action.text,
                       frames=prompt.frames, state=prompt.state)
