"""`CallSession`: one call's orchestration, the only place that knows every part.

Two sides meet here:

* the media side, synchronous and called per inbound frame by the WebSocket handler
  (`on_media`, `on_dtmf`, `on_mark`): decode, endpoint, stream speech to recognition,
  collect keys. It never awaits; what it finds goes on `self._inputs` for the other side.
* the conductor, one task per call: it plays the flow runner's actions in order (speak
  prompts, listen for an answer, hang up), feeds the answers back to the runner, and
  writes each turn to the store.

Barge-in crosses the two: speech (or a key) during a prompt that allows it cancels the
play task and sends `clear` within one frame of the speech-start decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aiohttp import web

from ivr.audio.codec import ToUlaw8k, Upsampler, ulaw_to_pcm16
from ivr.audio.endpoint import (
    DigitsComplete,
    DtmfCollector,
    EndpointConfig,
    Endpointer,
    NoInput,
    SpeechEnded,
    SpeechStarted,
)
from ivr.audio.player import Player, Prompt
from ivr.dialog.conversation import run_tool
from ivr.flows import engine
from ivr.flows.model import Flow
from ivr.grammar import Grammar
from ivr.llm.agent import Agent, AgentEvent, AgentStep, Done, ToolRan
from ivr.llm.agent import Listen as AgentListen
from ivr.llm.agent import Say as AgentSay
from ivr.llm.client import ChatClient
from ivr.logging import mask_number
from ivr.server.services import Services
from ivr.speech.base import Recognition, Utterance
from ivr.store.db import ABANDONED, COMPLETED, DROPPED, FAILED, TRANSFERRED, Turn
from ivr.telephony import control
from ivr.telephony.inbound import Dtmf, Mark, Media, Start
from ivr.telephony.outbound import TwilioOutbound
from ivr.tools.base import ToolContext

# How long past its expected end we wait for a prompt's mark before giving up on it:
# Twilio echoes marks within a few hundred ms, a lost echo must not stall the call.
MARK_GRACE_S = 3.0
RECOGNITION_TIMEOUT_S = 10.0
# After this long without an answer from a tool or an engine, the caller hears a filler.
FILLER_AFTER_S = 1.5
FILLERS = ("One moment, please.", "Still working on it.", "Thanks for waiting.",
           "Almost there.")
FILLER_TEXT = FILLERS[0]
MAX_AGENT_TURNS = 20  # caller turns inside one `llm` step
T = TypeVar("T")

_FLOW_OUTCOMES = {
    "completed": COMPLETED, "fallback": COMPLETED, "goto_flow": COMPLETED,
    "hangup": ABANDONED, "error": FAILED, "transferred": TRANSFERRED,
}


@dataclass(frozen=True, slots=True)
class _Digits:
    result: DigitsComplete


@dataclass(frozen=True, slots=True)
class _SpeechEnded:
    event: SpeechEnded


@dataclass(frozen=True, slots=True)
class _NoInput:
    event: NoInput


_Input = _Digits | _SpeechEnded | _NoInput


class CallSession:
    def __init__(
        self, services: Services, start: Start, *, ws: web.WebSocketResponse,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.start_msg = start
        self.stream_sid = start.stream_sid
        self.call_sid = start.call_sid
        self.ws = ws
        self.log = log
        params = start.custom_parameters
        assert services.library is not None
        self.flow: Flow = services.library.pick(params.get("flow"), params.get("to"))
        self.caller = params.get("from", "")
        self.runner = self._new_runner()
        self.player = Player(
            TwilioOutbound(self._send, self.stream_sid), lead=self.settings.lead_ms / 1000
        )
        self.endpointer = Endpointer()
        self.dtmf = DtmfCollector()
        self.upsampler = Upsampler()
        self.stats: Counter[str] = Counter()
        self._t0 = time.monotonic()
        self._caller_ms = 0  # the caller's clock: last media.timestamp seen
        self._inputs: asyncio.Queue[_Input] = asyncio.Queue()
        self._listen: engine.Listen | None = None  # the answer being (or about to be) taken
        self._utt: Utterance | None = None
        self._utt_task: asyncio.Task[Utterance] | None = None
        self._utt_backlog: list[bytes] = []
        self._speech_started: SpeechStarted | None = None
        self._speech_started_at = 0.0
        self._play_task: asyncio.Task[Prompt] | None = None
        self._barge_ok = False
        self._barged = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conductor: asyncio.Task[None] | None = None
        self._ended = False
        self._ending: asyncio.Task[None] | None = None
        self._hangup_task: asyncio.Task[None] | None = None
        self._prefetched: dict[str, asyncio.Task[bytes]] = {}
        self.transfer_to: str | None = None
        self.usage_labels: dict[str, str] = {}  # which engines/models the usage counts are for
        self.stt_audio_s = 0.0  # seconds of caller audio sent to recognition
        self.stt_cpu_s = 0.0  # CPU the embedded recognizer spent on them (worker processes)
        self._turn_seq = 0
        self._turn: Turn | None = None  # the turn awaiting its reply's first frame
        self._prompts: list[Prompt] = []  # prompts since the last answer
        self._pending_turn: Turn | None = None  # the turn whose answer is being taken

    # ---------------------------------------------------------------- lifecycle

    async def begin(self) -> None:
        params = self.start_msg.custom_parameters
        if self.services.store is not None:
            await self.services.store.start_call(
                self.call_sid, stream_sid=self.stream_sid,
                account_sid=self.start_msg.account_sid,
                from_masked=mask_number(params.get("from", "")),
                to_masked=mask_number(params.get("to", "")), flow=self.flow.name,
            )
        self.services.metrics.call_started()
        self.log.info("call_started", flow=self.flow.name)
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
        if not self.runner.done:
            self.runner.handle(engine.CallerHangup())
            outcome = ABANDONED if reason == "stop" else DROPPED
        else:
            outcome = _FLOW_OUTCOMES.get(self.runner.outcome or "", COMPLETED)
        tasks = [t for t in (self._conductor, self._play_task, self._utt_task, *self._tasks)
                 if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._utt is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._utt.cancel(), 2)
        self.player.abandon()
        if self._pending_turn is not None:
            # The caller left while we were waiting for an answer.
            self._pending_turn.result = "hangup"
            self._turn, self._pending_turn = self._pending_turn, None
        await self._flush_turn()
        stats = {
            **self.stats, **self.usage_labels,
            "stt_engine": getattr(self.services.recognizer, "name", ""),
            "stt_audio_s": round(self.stt_audio_s, 2),
            "stt_cpu_s": round(self.stt_cpu_s, 3),
            "tts_engine": getattr(self.services.synthesizer, "name", ""),
            "frames_out": self.player.frames_sent,
            "late_frames": self.player.late_frames, "clears": self.player.clears,
            "flow_outcome": self.runner.outcome, "end_reason": reason,
            "last_step": self.runner.current_step,
            "duration_ms": round((time.monotonic() - self._t0) * 1000),
        }
        if self.services.pricing is not None:
            stats["cost"] = self.services.pricing.cost(stats)
        if self.services.store is not None:
            await self.services.store.end_call(self.call_sid, outcome=outcome, stats=stats)
        self.services.calls.pop(self.stream_sid, None)
        self.services.counters[f"calls_{outcome}"] += 1
        self.services.metrics.call_ended(outcome, stats)
        self.log.info("call_ended", outcome=outcome, reason=reason, **{
            k: v for k, v in stats.items() if k in ("duration_ms", "frames_out", "late_frames")
        })

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ms(self) -> float:
        return round((time.monotonic() - self._t0) * 1000, 1)

    async def _send(self, text: str) -> None:
        if not self.ws.closed:
            await self.ws.send_str(text)

    # ------------------------------------------------------------ media side

    def on_media(self, msg: Media) -> None:
        self._caller_ms = msg.timestamp
        self.stats["frames_in"] += 1
        pcm = ulaw_to_pcm16(msg.payload)
        event = self.endpointer.process(pcm, msg.timestamp)
        if self.endpointer.in_speech and not isinstance(event, SpeechStarted):
            self._feed(self.upsampler.process(pcm))
        if event is not None:
            if isinstance(event, SpeechStarted):
                self._on_speech_started(event)
            elif isinstance(event, SpeechEnded):
                self._feed(self.upsampler.flush())
                self._inputs.put_nowait(_SpeechEnded(event))
            else:
                self._inputs.put_nowait(_NoInput(event))
        if self.dtmf.active:
            done = self.dtmf.poll(msg.timestamp)
            if done is not None:
                self._inputs.put_nowait(_Digits(done))

    def _on_speech_started(self, event: SpeechStarted) -> None:
        self._speech_started = event
        self._speech_started_at = time.monotonic()
        listen = self._listen
        if listen is None or not listen.speech:
            self.endpointer.disarm()
            return
        if self.player.playing:
            if not self._barge_ok:
                # Speech over a prompt that may not be interrupted is not an answer.
                self.endpointer.disarm()
                return
            self._barge_in("speech")
        self.upsampler.reset()
        self._utt_backlog = [self.upsampler.process(event.preroll)]
        grammar = listen.grammar or (Grammar(listen.phrases) if listen.phrases else None)
        if grammar is not None and not grammar.phrases and grammar.jsgf is None:
            grammar = None  # free text: the language model
        assert self.services.recognizer is not None
        self._utt_task = asyncio.create_task(self.services.recognizer.start(grammar))
        self._utt_task.add_done_callback(self._utt_ready)

    def _utt_ready(self, task: asyncio.Task[Utterance]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        self._utt = task.result()
        for chunk in self._utt_backlog:
            self._utt.feed(chunk)
        self._utt_backlog = []

    def _feed(self, pcm16k: bytes) -> None:
        if not pcm16k:
            return
        if self._utt is not None:
            self._utt.feed(pcm16k)
        else:
            self._utt_backlog.append(pcm16k)

    def on_dtmf(self, msg: Dtmf) -> None:
        self.stats["dtmf"] += 1
        if self._listen is None or self._listen.dtmf is None:
            self.log.info("dtmf_ignored", digit=msg.digit)
            return
        if not self.dtmf.active:
            spec = self._listen.dtmf
            self.dtmf.start(spec.max_digits, terminator=spec.terminator,
                            inter_digit_ms=spec.inter_digit_ms)
        if self.player.playing and self._barge_ok:
            self._barge_in("dtmf")
        # Keys win over speech: a caller who presses keys is not answering by voice.
        self.endpointer.disarm()
        done = self.dtmf.press(msg.digit, self._caller_ms)
        if done is not None:
            self._inputs.put_nowait(_Digits(done))

    def on_mark(self, msg: Mark) -> None:
        if self.player.on_mark(msg.name) is None:
            self.stats["stale_marks"] += 1

    def _barge_in(self, by: str) -> None:
        if self._barged:
            return
        self._barged = True
        self.stats["barge_ins"] += 1
        if self._play_task is not None:
            self._play_task.cancel()
        self._spawn(self.player.clear())
        self.log.info("barge_in", by=by, caller_ms=self._caller_ms)

    # ------------------------------------------------------------- conductor

    async def _conduct(self) -> None:
        try:
            actions: deque[engine.Action] = deque(self.runner.start())
            while actions and not self._ended:
                action = actions.popleft()
                if isinstance(action, engine.Play):
                    nxt = next((a for a in actions if not isinstance(a, engine.Play)), None)
                    self._listen = nxt if isinstance(nxt, engine.Listen) else None
                    if self._barged:
                        continue  # the caller already answers: skip the rest of the prompts
                    if actions and isinstance(actions[0], engine.Play):
                        self._prefetch(actions[0].text)
                    await self._play(action)
                elif isinstance(action, engine.Listen):
                    self._listen = action
                    answer = await self._take_answer(action)
                    actions.extend(self.runner.handle(answer))
                    self._record_turn()
                elif isinstance(action, engine.GotoFlow):
                    if action.name not in self.services.flows:
                        self.log.error("goto_unknown_flow", flow=action.name)
                        break
                    self.flow = self.services.flows[action.name]
                    self.runner = self._new_runner()
                    actions.extend(self.runner.start())
                elif isinstance(action, engine.CallTool):
                    actions.extend(self.runner.handle(await self._call_tool(action)))
                elif isinstance(action, engine.RunAgent):
                    actions.extend(self.runner.handle(await self._run_agent(action)))
                elif isinstance(action, engine.Transfer):
                    await self._wait_heard()
                    self.transfer_to = action.number
                    self.stats["transfer_via_" + await control.transfer(
                        self.services, self.call_sid, action.number)] += 1
                    break
                elif isinstance(action, engine.Hangup):
                    break
            await self._wait_heard()
            await self._flush_turn()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("call_failed", step=self.runner.current_step)
            self.stats["failures"] += 1
        # Closing the socket is how a call hangs up: Twilio moves past <Connect>. Not a
        # _spawn()ed task: ending the call cancels those, and this one must finish the close.
        self._hangup_task = asyncio.create_task(self._hang_up())

    async def _hang_up(self) -> None:
        if self._ending is None:  # claim the reason before the handler sees the close
            self._ended = True
            self._ending = asyncio.create_task(self._end("hangup"), name=f"end-{self.call_sid}")
        await self.ws.close()
        await asyncio.shield(self._ending)

    def _new_runner(self) -> engine.FlowRunner:
        return engine.FlowRunner(self.flow, caller=self.caller,
                                 agent=self.services.llm is not None)

    def _tool_ctx(self) -> ToolContext:
        return ToolContext(call_sid=self.call_sid, caller=self.caller,
                           db_path=self.settings.db, now=self.runner.now())

    async def _run_agent(self, action: engine.RunAgent) -> engine.AgentDone:
        """An `llm` step: the model talks (each sentence spoken as soon as it is complete),
        calls tools, and listens to the caller, until it exits, ends or fails."""
        assert self.services.llm is not None and self.services.tools is not None
        slots: dict[str, str] = {}
        runner = self.runner

        def exit_check(values: dict[str, str], found: dict[str, Any], called: list[str]) -> bool:
            return runner.agent_update(
                dict(values), {k.replace(".", "__"): v for k, v in found.items()})

        system = action.system
        if action.slots:
            system += ("\nUse set_slot to record what the caller tells you: "
                       + ", ".join(action.slots) + ".")
        system += f"\nToday is {runner.now().date().isoformat()}; give dates as YYYY-MM-DD."
        chat = self.services.llm
        if self.flow.engines is not None and self.flow.engines.llm_model:
            chat = ChatClient(chat.provider, self.flow.engines.llm_model)  # per-flow model
        agent = Agent(chat, self.services.tools, self._tool_ctx,
                      AgentStep(system_prompt=system, tools=action.tools,
                                max_rounds=action.max_rounds, exit_when=exit_check,
                                slot_names=action.slots),
                      slots)
        user: str | None = None
        try:
            for _ in range(MAX_AGENT_TURNS):
                said = self.stats["agent_sentences"]
                done = await self._agent_turn(action, agent, user)
                if done is not None:
                    return done
                if self.stats["agent_sentences"] == said:
                    # The model wants the caller to talk but said nothing: the caller
                    # would sit in silence. Treat it as a failed step.
                    return engine.AgentDone(False, "error", "the model replied with nothing")
                listen = engine.Listen(step=action.step, phrases=(), dtmf=None, timeout_ms=None,
                                       end_silence_ms=None, max_utterance_ms=None, speech=True,
                                       barge_in=False)
                self._listen = listen
                answer = await self._take_answer(listen)
                self._record_free_turn(answer)
                user = (answer.text if isinstance(answer, engine.Speech)
                        else f"[keys pressed: {answer.digits}]" if isinstance(answer, engine.Digits)
                        else "[the caller said nothing]")
            return engine.AgentDone(False, "max_rounds", "too many caller turns")
        finally:
            self.stats["llm_prompt_tokens"] += agent.prompt_tokens
            self.stats["llm_completion_tokens"] += agent.completion_tokens
            self.stats["llm_cached_tokens"] += agent.cached_tokens
            self.usage_labels["llm_model"] = chat.model

    async def _agent_turn(
        self, action: engine.RunAgent, agent: Agent, user: str | None
    ) -> engine.AgentDone | None:
        """One model turn; None when the model waits for the caller."""
        events = agent.turn(user)

        async def next_event() -> AgentEvent | None:
            try:
                return await anext(events)
            except StopAsyncIteration:
                return None

        try:
            while (event := await self._with_filler(next_event())) is not None:
                if isinstance(event, AgentSay):
                    self.stats["agent_sentences"] += 1
                    await self._play(engine.Play(event.text, False, action.step))
                elif isinstance(event, ToolRan):
                    self.stats["tool_calls"] += 1
                    self.stats["tool_errors"] += not event.ok
                    self.log.info("agent_tool", tool=event.name, ok=event.ok, error=event.error)
                elif isinstance(event, AgentListen):
                    return None
                elif isinstance(event, Done):
                    self.log.info("agent_done", reason=event.reason, error=event.error)
                    return engine.AgentDone(event.reason in ("exit", "model"), event.reason,
                                            event.error or "")
        finally:
            await events.aclose()
        return engine.AgentDone(False, "error", "the model's turn ended without a result")

    def _record_free_turn(self, answer: engine.Event) -> None:
        """A caller turn inside an agent step (the flow runner does not see those)."""
        turn, self._pending_turn = self._pending_turn, None
        if turn is None:
            return
        if isinstance(answer, engine.Speech):
            turn.input_kind, turn.input_text, turn.result = "speech", answer.text, "match"
        elif isinstance(answer, engine.Digits):
            turn.input_kind, turn.input_text, turn.result = "dtmf", answer.digits, "match"
        else:
            turn.input_kind, turn.result = "no_input", "no_input"
        self._turn = turn

    async def _call_tool(self, action: engine.CallTool) -> engine.ToolDone:
        assert self.services.tools is not None
        ctx = self._tool_ctx()
        started = self._ms()
        done = await self._with_filler(run_tool(self.services.tools, action, ctx))
        self.stats["tool_calls"] += 1
        if not done.ok:
            self.stats["tool_errors"] += 1
        took = round(self._ms() - started, 1)
        self.services.metrics.observe("tool", took / 1000)
        self.log.info("tool_call", step=action.step, tool=action.tool, ok=done.ok,
                      error=done.error, ms=took)
        return done

    async def _with_filler(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`; while it is slow, say short fillers so the caller never sits in
        unexplained silence (a slow tool, a recognizer queue, a remote provider)."""
        task = asyncio.ensure_future(work)
        try:
            for filler in FILLERS:
                done, _ = await asyncio.wait({task}, timeout=FILLER_AFTER_S)
                if done:
                    break
                self.stats["fillers"] += 1
                self.log.info("filler", after_s=FILLER_AFTER_S, text=filler)
                saved, self._listen = self._listen, None  # a filler is not a question
                try:
                    await self._play(engine.Play(filler, False, "filler"))
                finally:
                    self._listen = saved
            return await task
        finally:
            if not task.done():
                task.cancel()

    def _voice(self) -> tuple[str, int]:
        return self.services.voice_for(self.flow)

    def _prefetch(self, text: str) -> None:
        """Synthesize the next prompt while this one plays, so no gap opens between them
        when many calls share the synthesizer."""
        if text not in self._prefetched:
            self._prefetched[text] = asyncio.create_task(self._collect(text))
            self._tasks.add(self._prefetched[text])
            self._prefetched[text].add_done_callback(self._tasks.discard)

    async def _collect(self, text: str) -> bytes:
        return b"".join([chunk async for chunk in self._synthesize(text)])

    async def _audio(self, text: str) -> AsyncIterator[bytes]:
        task = self._prefetched.pop(text, None)
        if task is not None:
            yield await task
            return
        async for chunk in self._synthesize(text):
            yield chunk

    async def _synthesize(self, text: str) -> AsyncIterator[bytes]:
        assert self.services.synthesizer is not None
        voice, rate = self._voice()
        cached = self.services.speech_cache
        if cached is not None and text in self.services.static_prompts(self.flow):
            # Static prompts come from the cache (prewarmed at start-up and on reload);
            # filled-in templates are synthesized each time and never fill the disk.
            async for chunk in cached.stream(text, voice, rate):
                yield chunk
            return
        self.stats["tts_chars"] += len(text)  # prewarmed static prompts cost nothing per call
        conv: ToUlaw8k | None = None
        async for pcm, sr in self.services.synthesizer.synthesize(text, voice=voice, rate=rate):
            if conv is None:
                conv = ToUlaw8k(sr)
            yield conv.push(pcm)
        if conv is not None:
            yield conv.flush()

    async def _play(self, action: engine.Play) -> None:
        listen = self._listen
        self._barge_ok = bool(action.barge_in and listen is not None and listen.barge_in)
        if self._barge_ok and listen is not None and listen.speech:
            self.endpointer.watch_barge_in(self._endpoint_config(listen), self._caller_ms)
        prompt = self.player.new_prompt(action.text)
        self._prompts.append(prompt)
        self._play_task = asyncio.create_task(self.player.play(prompt, self._audio(action.text)))
        # wait(), not await: a cancelled play (barge-in) must not cancel the conductor.
        await asyncio.wait({self._play_task})
        self._play_task = None
        if self._turn is not None and prompt.first_frame_at is not None:
            self._turn.timings["reply_first_frame"] = self._at(prompt.first_frame_at)
            await self._flush_turn()
        self.log.info("prompt", step=action.step, name=prompt.name, text=action.text,
                      frames=prompt.frames, state=prompt.state)

    def _at(self, t: float) -> float:
        return round((t - self._t0) * 1000, 1)

    def _endpoint_config(self, listen: engine.Listen) -> EndpointConfig:
        base = EndpointConfig()
        return EndpointConfig(
            end_silence_ms=listen.end_silence_ms or base.end_silence_ms,
            no_input_ms=listen.timeout_ms or base.no_input_ms,
            max_utterance_ms=listen.max_utterance_ms or base.max_utterance_ms,
        )

    async def _wait_heard(self) -> None:
        """Wait until the caller has heard every prompt sent (marks echoed or cleared)."""
        for prompt in self._prompts:
            if not prompt.done.is_set():
                budget = max(0.0, prompt.duration_ms / 1000) + MARK_GRACE_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(prompt.done.wait(), budget)

    async def _take_answer(self, listen: engine.Listen) -> engine.Event:
        await self._wait_heard()
        config = self._endpoint_config(listen)
        if listen.speech and not self.endpointer.in_speech and not self.dtmf.digits:
            self.endpointer.arm(config, self._caller_ms)
        if listen.dtmf is not None and not self.dtmf.active:
            self.dtmf.start(listen.dtmf.max_digits, terminator=listen.dtmf.terminator,
                            inter_digit_ms=listen.dtmf.inter_digit_ms)
        # The wall clock is only a safety net: media normally drives every timer.
        budget = (config.no_input_ms + config.max_utterance_ms) / 1000 + 10
        try:
            answer = await asyncio.wait_for(self._answer(), budget)
        except TimeoutError:
            self.stats["answer_timeouts"] += 1
            answer = engine.NoInput()
        finally:
            self.endpointer.disarm()
            self.dtmf.cancel()
            self._barged = False
            self._listen = None
            while not self._inputs.empty():  # leftovers (keys and speech both ended) are stale
                self._inputs.get_nowait()
        return answer

    async def _answer(self) -> engine.Event:
        turn = self._new_turn()
        while True:
            item = await self._inputs.get()
            if isinstance(item, _Digits):
                await self._drop_utterance()
                turn.timings["digits_done"] = self._ms()
                return engine.Digits(item.result.digits)
            if isinstance(item, _NoInput):
                if self.dtmf.digits:
                    continue  # keys are being pressed; their own timeout decides
                return engine.NoInput()
            # Speech ended: the recognizer has had the audio all along; ask for the result.
            if self.dtmf.digits:
                await self._drop_utterance()
                continue
            ev = item.event
            started = self._speech_started
            turn.timings.update({
                "caller_speech_start": float(started.at_ms if started else ev.at_ms),
                "caller_speech_end": float(ev.last_voice_ms),
                "speech_start": self._at(self._speech_started_at),
                "endpoint": self._ms(),
            })
            rec = await self._with_filler(self._recognize())
            turn.timings["recognized"] = self._ms()
            if rec is None:
                return engine.Speech("", 0.0)
            return engine.Speech(rec.text, rec.confidence)

    async def _recognize(self) -> Recognition | None:
        task, self._utt_task = self._utt_task, None
        if task is None:
            return None
        try:
            utt = await asyncio.wait_for(asyncio.shield(task), RECOGNITION_TIMEOUT_S)
            rec = await asyncio.wait_for(utt.finish(), RECOGNITION_TIMEOUT_S)
        except (TimeoutError, Exception) as exc:  # a failed engine is a no-match, not a crash
            self.log.warning("recognition_failed", error=repr(exc))
            self.stats["recognition_errors"] += 1
            return None
        finally:
            self._utt = None
        self.stats["recognitions"] += 1
        self.stt_audio_s += rec.audio_seconds
        self.stt_cpu_s += rec.cpu_seconds
        self.log.info("recognized", text=rec.text, confidence=rec.confidence,
                      audio_s=rec.audio_seconds, cpu_s=rec.cpu_seconds)
        return rec

    async def _drop_utterance(self) -> None:
        task, self._utt_task = self._utt_task, None
        utt, self._utt = self._utt, None
        if task is not None and not task.done():
            task.cancel()
        if utt is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(utt.cancel(), 2)

    # ------------------------------------------------------------------ record

    def _new_turn(self) -> Turn:
        self._turn_seq += 1
        prompts = self._prompts
        first = next((p.first_frame_at for p in prompts if p.first_frame_at is not None), None)
        states = {p.state for p in prompts}
        heard = ("interrupted" if "interrupted" in states
                 else "played" if states and states <= {"played"} else "unheard")
        turn = Turn(
            seq=self._turn_seq, step=self._listen.step if self._listen else None,
            prompt=" ".join(p.text for p in prompts), prompt_heard=heard,
            timings={"prompt_first_frame": self._at(first)} if first is not None else {},
        )
        if prompts and heard == "interrupted":
            turn.timings["prompt_heard_ms"] = round(sum(p.heard_ms for p in prompts), 1)
        self._prompts = []
        self._pending_turn = turn
        return turn

    def _record_turn(self) -> None:
        turn = self._pending_turn
        if turn is None:
            return
        result = self.runner.turns[-1] if self.runner.turns else None
        turn.input_kind = {"speech": "speech", "dtmf": "dtmf"}.get(
            result.input if result else "", "no_input")
        turn.input_text = result.text if result else None
        turn.confidence = result.confidence if result else None
        turn.understood = result.understood if result else None
        if result is not None and result.slot is not None:
            turn.slot, turn.slot_value = result.slot, result.value
        turn.result = result.result if result else "no_input"
        self._turn, self._pending_turn = turn, None
        self.log.info("turn", seq=turn.seq, step=turn.step, input=turn.input_kind,
                      text=turn.input_text, understood=turn.understood, result=turn.result)

    async def _flush_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is None and self._prompts and self.runner.done:
            # Prompts after the last answer (the goodbye): a turn with no input.
            turn = self._new_turn()
            turn.result = None
        if turn is None:
            return
        # Voice-to-voice: from the end-of-speech decision (or the last key) to the reply.
        start = turn.timings.get("endpoint", turn.timings.get("digits_done"))
        end = turn.timings.get("reply_first_frame")
        if start is not None and end is not None:
            turn.timings["response_ms"] = round(end - start, 1)
        self.services.metrics.turn(turn.timings)
        if self.services.store is not None:
            await self.services.store.add_turn(self.call_sid, turn)
