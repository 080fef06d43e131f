"""The tool-calling loop of a flow's `llm` step, independent of audio and the flow engine.

`Agent.turn(user_text)` runs model rounds until the model needs the caller (an answer
without tool calls: `ModelListens`), the step's exit condition holds (`Done("exit")`), the model
ends the conversation or asks for a human, or a bound is hit (rounds per turn, or the
tokens the step may still use: `Done("budget")`). Sentences are yielded as
`ModelSays` events as soon as each one is complete, so the session can start synthesis before
the model has finished its reply.

Speech-to-speech (`AgentStep.audio`): the caller's utterance goes to the model as audio
(`turn(..., user_audio=...)`), the reply comes back as `ModelAudio` pieces to play as they
arrive, and `ModelSaid` carries its transcript once the round's stream has ended. Earlier
spoken replies stay in the history by the provider's audio id while it is valid, then by
their transcript.

Which tools the model sees and how its calls are checked before any runs: `tool_calls`.
Consecutive rounds with a refused call are bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import structlog

from ivr.audio.codec import pcm16_to_wav
from ivr.llm.client import (
    AudioDelta,
    AudioDone,
    AudioTranscriptDelta,
    ChatDelta,
    Finish,
    TextDelta,
    ToolCallDone,
    Usage,
)
from ivr.llm.events import (
    AgentEvent,
    AgentStep,
    ChatModel,
    Done,
    DoneReason,
    ExitCheck,
    Lap,
    ModelAudio,
    ModelListens,
    ModelSaid,
    ModelSays,
    Stopwatch,
    ToolRan,
    UsageEvent,
)
from ivr.llm.sentences import SentenceSplitter
from ivr.llm.tool_calls import (
    BUILTINS,
    END_CONVERSATION,
    SET_SLOT,
    TRANSFER_TO_HUMAN,
    CheckedCall,
    StepTools,
)
from ivr.providers.http import ProviderError
from ivr.tools.base import ToolContext
from ivr.tools.registry import ToolRegistry

__all__ = [
    "END_CONVERSATION",
    "SET_SLOT",
    "TRANSFER_TO_HUMAN",
    "USER_AUDIO_RATE",
    "Agent",
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

log = structlog.get_logger("ivr.llm")

USER_AUDIO_RATE = 16000  # `turn(user_audio=...)`: what the recognizer path already has
# An audio id is replaced by its transcript this long before the provider forgets it:
# the request that names it must still reach the provider in time.
_AUDIO_ID_MARGIN_S = 60.0

_END = object()


async def _read_ahead(
    stream: AsyncGenerator[ChatDelta, None], lap: Lap | None, model: str,
) -> AsyncGenerator[ChatDelta, None]:
    """`stream`'s deltas, read as they arrive while the consumer is busy (the phone speaks
    each sentence as it completes): the provider's connection never idles into its read
    timeout behind a long sentence, and `lap` times the model's first token (text, audio
    or a tool call) and its real end, not when the consumer got round to them."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with aclosing(stream):
                async for delta in stream:
                    if lap is not None and isinstance(delta,
                                                      TextDelta | ToolCallDone | AudioDelta):
                        lap.first()
                    queue.put_nowait(delta)
            if lap is not None:
                lap.done(model)
            queue.put_nowait(_END)
        except Exception as e:  # handed to the consumer, raised there
            queue.put_nowait(e)

    task = asyncio.create_task(pump())
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass(slots=True)
class _Reply:
    """What one round's stream brought so far."""

    text: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # audio mode: sentences, if no audio
    transcript: list[str] = field(default_factory=list)
    audio: bool = False  # any audio came
    heard: AudioDone | None = None
    calls: list[ToolCallDone] = field(default_factory=list)
    usage: Usage | None = None

    def words(self) -> str:
        """What the model said: its audio's transcript when it spoke, else its text."""
        if self.audio or self.heard is not None:
            if self.heard is not None and self.heard.transcript:
                return self.heard.transcript
            return "".join(self.transcript)
        return "".join(self.text)


class Agent:
    """One `llm` step's conversation; keep it for the step's whole life (it holds history).

    `slots` is the flow's slot dict and is updated in place by `set_slot`; `vars` receives
    each successful tool's latest result under its dotted name. `clock` (Unix seconds)
    dates the provider's audio ids in audio mode.
    """

    def __init__(
        self,
        chat: ChatModel,
        registry: ToolRegistry,
        ctx_factory: Callable[[], ToolContext],
        step: AgentStep,
        slots: dict[str, str],
        vars: dict[str, Any] | None = None,
        stopwatch: Stopwatch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.chat = chat
        self.stopwatch = stopwatch
        self.registry = registry
        self.ctx_factory = ctx_factory
        self.step = step
        self.slots = slots
        self.clock = clock
        self.vars: dict[str, Any] = vars if vars is not None else {}
        self.called_tools: list[str] = []
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": step.system_prompt}]
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0
        self._box = StepTools(registry, step, slots, stopwatch)
        self._tools = self._box.schemas
        # audio id -> (transcript, expires_at): the history's fallback once an id expires.
        self._spoken: dict[str, tuple[str, int | None]] = {}

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The function definitions offered to the model."""
        return self._tools

    @property
    def tokens(self) -> int:
        """Tokens this step has used, as the provider reported them."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def budget_spent(self) -> bool:
        limit = self.step.max_tokens
        return limit is not None and self.tokens >= limit

    def _exit(self) -> bool:
        check = self.step.exit_when
        return check is not None and check(self.slots, self.vars, self.called_tools)

    # ---------------------------------------------------------------------------- the loop

    async def turn(
        self, user_text: str | None, *, user_audio: bytes | None = None,
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run rounds for one caller turn (None: the step just started, the model speaks).

        `user_audio` (16 kHz mono PCM16, `USER_AUDIO_RATE`) is the caller's utterance for
        the model to hear; `user_text` is then not sent (a local transcript would only
        contradict what the model hears)."""
        self._repair_history()
        if user_audio is not None:
            wav = base64.b64encode(pcm16_to_wav(user_audio, USER_AUDIO_RATE)).decode("ascii")
            self.messages.append({"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
            ]})
        elif user_text is not None:
            self.messages.append({"role": "user", "content": user_text})
        invalid_rounds = 0
        for _ in range(self.step.max_rounds):
            if self.budget_spent:
                # Checked before each request, never inside one: a reply under way is
                # finished and its tools run, so nothing is left half done.
                yield Done("budget", f"the call's LLM budget is spent ({self.tokens} tokens "
                                     f"used in this step, {self.step.max_tokens} allowed)")
                return
            self._expire_audio_ids()
            reply = _Reply()
            splitter = SentenceSplitter()
            lap = self.stopwatch("llm") if self.stopwatch is not None else None
            try:
                # aclosing: a turn abandoned mid-reply closes the HTTP stream now, not
                # whenever the garbage collector finalizes the generator.
                async with aclosing(_read_ahead(self._request(), lap, self.chat.model)) \
                        as stream:
                    async for delta in stream:
                        for event in self._take(delta, reply, splitter):
                            yield event
            except ProviderError as e:
                yield Done("error", str(e))
                return
            except GeneratorExit:
                # The session stopped listening mid-reply (barge-in, hang-up): keep what
                # was generated so the model knows what it had started to say.
                if words := reply.words():
                    self.messages.append({"role": "assistant", "content": words})
                raise
            finally:
                if lap is not None:
                    lap.done(self.chat.model)  # no-op if the stream already ended
            # Recorded before anything more is yielded: the consumer may stop at any yield.
            self.messages.append(self._assistant_message(reply))
            for event in self._round_end(reply, splitter):
                yield event
            calls = reply.calls
            if not calls:
                yield Done("exit") if self._exit() else ModelListens()
                return

            checked = [self._box.check(c) for c in calls]
            if any(c.error is not None for c in checked):
                invalid_rounds += 1
                for c in checked:
                    error = c.error or "not run: another call in this round was refused; " \
                                        "send it again with the corrected ones"
                    self._tool_message(c, json.dumps({"ok": False, "error": error}))
                    yield ToolRan(c.name, c.args, False, {}, error)
                if invalid_rounds >= self.step.max_invalid_rounds:
                    yield Done("error", f"{invalid_rounds} rounds of refused tool calls")
                    return
                continue
            invalid_rounds = 0

            events = await self._run(checked)
            for event in events:
                yield event
            ran = {e.name for e in events if isinstance(e, ToolRan) and e.ok}
            if TRANSFER_TO_HUMAN in ran:
                yield Done("transfer")
                return
            if END_CONVERSATION in ran:
                yield Done("model")
                return
            if self._exit():
                yield Done("exit")
                return
        yield Done("max_rounds")

    def _request(self) -> AsyncGenerator[ChatDelta, None]:
        if self.step.audio is None:
            return self.chat.stream(self.messages, self._tools)
        return self.chat.stream(self.messages, self._tools, audio=self.step.audio)

    def _take(
        self, delta: ChatDelta, reply: _Reply, splitter: SentenceSplitter
    ) -> list[AgentEvent]:
        """Note one delta in `reply`; the events to yield for it now."""
        if isinstance(delta, AudioDelta):
            reply.audio = True
            return [ModelAudio(delta.pcm, delta.rate)]
        if isinstance(delta, TextDelta):
            reply.text.append(delta.text)
            sentences = splitter.push(delta.text)
            if self.step.audio is None:
                return [ModelSays(s) for s in sentences]
            # Audio mode: spoken only if the round brings no audio, known once it ended.
            reply.held.extend(sentences)
        elif isinstance(delta, AudioTranscriptDelta):
            reply.transcript.append(delta.text)
        elif isinstance(delta, AudioDone):
            reply.heard = delta
        elif isinstance(delta, ToolCallDone):
            reply.calls.append(delta)
        elif isinstance(delta, Usage):
            reply.usage = delta
        elif isinstance(delta, Finish) and delta.reason == "length":
            log.warning("llm_truncated", rounds=len(self.messages))
        return []

    def _assistant_message(self, reply: _Reply) -> dict[str, Any]:
        """The round's reply for the history: its audio by the provider's id when there
        is one (the model hears its own voice again, and the tokens are cached), else
        its words."""
        message: dict[str, Any] = {"role": "assistant"}
        heard = reply.heard
        if heard is not None and heard.id:
            message["audio"] = {"id": heard.id}
            self._spoken[heard.id] = (reply.words(), heard.expires_at)
        else:
            # null content is only valid next to tool calls.
            message["content"] = reply.words() or (None if reply.calls else "")
        if reply.calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments_json}}
                for c in reply.calls
            ]
        return message

    def _round_end(self, reply: _Reply, splitter: SentenceSplitter) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        if not reply.audio:
            events.extend(ModelSays(s) for s in reply.held)
            if rest := splitter.flush():
                events.append(ModelSays(rest))
        if self.step.audio is not None and (words := reply.words()):
            events.append(ModelSaid(words))
        if (usage := reply.usage) is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.cached_tokens += usage.cached_tokens
            events.append(UsageEvent(usage.prompt_tokens, usage.completion_tokens,
                                     usage.cached_tokens, dict(usage.units)))
        return events

    def _expire_audio_ids(self) -> None:
        """Name earlier spoken replies by their transcript once their audio id is about
        to expire: the provider refuses a request that names a forgotten id."""
        now = self.clock()
        for message in self.messages:
            ref = message.get("audio")
            if message["role"] != "assistant" or not isinstance(ref, dict):
                continue
            words, expires_at = self._spoken.get(ref.get("id", ""), ("", None))
            if expires_at is None or expires_at - _AUDIO_ID_MARGIN_S > now:
                continue
            del message["audio"]
            message["content"] = words or (None if message.get("tool_calls") else "")

    # ---------------------------------------------------------------------- tool calls

    async def _run(self, calls: list[CheckedCall]) -> list[AgentEvent]:
        results = await self._box.run(calls, self.ctx_factory)
        events: list[AgentEvent] = []
        for c, r in zip(calls, results, strict=True):
            self._tool_message(c, r.to_json())
            if r.ok:
                self.called_tools.append(c.name)
                if c.name not in BUILTINS:
                    self.vars[c.name] = r.value
            events.append(ToolRan(c.name, c.args, r.ok, r.value, r.error))
        return events

    def _repair_history(self) -> None:
        """Answer tool calls left unanswered by an interrupted turn.

        A turn cancelled while its tools ran leaves an assistant message whose calls have
        no `tool` results, which the API refuses on the next request.
        """
        for i in range(len(self.messages) - 1, -1, -1):
            m = self.messages[i]
            if m["role"] == "assistant":
                answered = {x.get("tool_call_id") for x in self.messages[i + 1:]}
                for call in m.get("tool_calls") or []:
                    if call["id"] not in answered:
                        self.messages.append({"role": "tool", "tool_call_id": call["id"],
                                              "content": '{"ok": false, "error": "interrupted"}'})
                return

    def _tool_message(self, c: CheckedCall, content: str) -> None:
        self.messages.append({"role": "tool", "tool_call_id": c.id, "content": content})
