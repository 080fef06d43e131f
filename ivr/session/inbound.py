"""A call's inbound side: media frames, endpointing, keys, barge-in.

Called by the WebSocket handler once per frame, synchronously: it never awaits (reading
slowly makes Twilio drop inbound audio). Speech is streamed to recognition while the
caller talks; what the endpointer and the key collector decide (speech ended, no input,
keys complete) goes on `inputs`, for `answers.Answers` to take.

Barge-in: speech (or a key) during a prompt that allows it interrupts the speaker within
one frame of the speech-start decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import structlog

from ivr.audio.codec import Upsampler, ulaw_to_pcm16
from ivr.audio.endpoint import (
    DigitsComplete,
    DtmfCollector,
    EndpointConfig,
    Endpointer,
    NoSpeech,
    SpeechEnded,
    SpeechStarted,
)
from ivr.flows import engine
from ivr.grammar import Grammar
from ivr.session.speaker import Speaker
from ivr.speech.base import Recognizer, Utterance
from ivr.telephony.inbound import Dtmf, Mark, Media


@dataclass(frozen=True, slots=True)
class KeysDone:
    result: DigitsComplete


@dataclass(frozen=True, slots=True)
class SpeechDone:
    event: SpeechEnded


@dataclass(frozen=True, slots=True)
class NothingHeard:
    event: NoSpeech


Input = KeysDone | SpeechDone | NothingHeard


def endpoint_config(listen: engine.Listen) -> EndpointConfig:
    base = EndpointConfig()
    return EndpointConfig(
        end_silence_ms=listen.end_silence_ms or base.end_silence_ms,
        no_input_ms=listen.timeout_ms or base.no_input_ms,
        max_utterance_ms=listen.max_utterance_ms or base.max_utterance_ms,
    )


class Inbound:
    def __init__(
        self, recognizer: Recognizer, speaker: Speaker, stats: Counter[str],
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.recognizer = recognizer
        self.speaker = speaker
        self.stats = stats
        self.log = log
        self.endpointer = Endpointer()
        self.dtmf = DtmfCollector()
        self.upsampler = Upsampler()
        self.caller_ms = 0  # the caller's clock: last media.timestamp, never backwards
        self.inputs: asyncio.Queue[Input] = asyncio.Queue()
        self.listen: engine.Listen | None = None  # the answer being (or about to be) taken
        self.barged = False  # the caller barged in on the prompts of this answer
        self.speech_started: SpeechStarted | None = None
        self.speech_started_at = 0.0
        self._utt: Utterance | None = None
        self._utt_task: asyncio.Task[Utterance] | None = None
        self._utt_backlog: list[bytes] = []

    # ------------------------------------------------------------ frames

    def on_media(self, msg: Media) -> None:
        self.stats["frames_in"] += 1
        pcm = ulaw_to_pcm16(msg.payload)
        event = self.endpointer.process(pcm, msg.timestamp)
        # The endpointer's clock, not the raw timestamp: a frozen one must not stop the
        # key timers (or leave them behind the endpointer's).
        self.caller_ms = self.endpointer.now_ms
        if self.endpointer.in_speech and not isinstance(event, SpeechStarted):
            self._feed(self.upsampler.process(pcm))
        if event is not None:
            if isinstance(event, SpeechStarted):
                self._on_speech_started(event)
            elif isinstance(event, SpeechEnded):
                self._feed(self.upsampler.flush())
                self.inputs.put_nowait(SpeechDone(event))
            else:
                self.inputs.put_nowait(NothingHeard(event))
        if self.dtmf.active:
            done = self.dtmf.poll(self.caller_ms)
            if done is not None:
                self.inputs.put_nowait(KeysDone(done))

    def on_dtmf(self, msg: Dtmf) -> None:
        self.stats["dtmf"] += 1
        if self.listen is None or self.listen.dtmf is None:
            self.log.debug("dtmf_ignored", digit=msg.digit)
            return
        if not self.dtmf.active:
            spec = self.listen.dtmf
            self.dtmf.start(spec.max_digits, terminator=spec.terminator,
                            inter_digit_ms=spec.inter_digit_ms)
        if self.speaker.playing and self.speaker.interruptible:
            self._barge_in("dtmf")
        # Keys win over speech: a caller who presses keys is not answering by voice.
        self.endpointer.disarm()
        done = self.dtmf.press(msg.digit, self.caller_ms)
        if done is not None:
            self.inputs.put_nowait(KeysDone(done))

    def on_mark(self, msg: Mark) -> None:
        self.speaker.on_mark(msg.name)

    def _on_speech_started(self, event: SpeechStarted) -> None:
        self.speech_started = event
        self.speech_started_at = time.monotonic()
        listen = self.listen
        if listen is None or not listen.speech:
            self.endpointer.disarm()
            return
        if self.speaker.playing:
            if not self.speaker.interruptible:
                # Speech over a prompt that may not be interrupted is not an answer.
                self.endpointer.disarm()
                return
            self._barge_in("speech")
        self.upsampler.reset()
        self._utt_backlog = [self.upsampler.process(event.preroll)]
        grammar = listen.grammar or (Grammar(listen.phrases) if listen.phrases else None)
        if grammar is not None and not grammar.phrases and grammar.jsgf is None:
            grammar = None  # free text: the language model
        self._utt_task = asyncio.create_task(self.recognizer.start(grammar))
        self._utt_task.add_done_callback(self._utt_ready)

    def _barge_in(self, by: str) -> None:
        if self.barged:
            return
        self.barged = True
        self.stats["barge_ins"] += 1
        self.speaker.interrupt()
        self.log.info("barge_in", by=by, caller_ms=self.caller_ms)

    # ------------------------------------------------------ listening

    def watch_barge_in(self, listen: engine.Listen) -> None:
        """A prompt that may be interrupted starts: listen for speech over it."""
        self.endpointer.watch_barge_in(endpoint_config(listen), self.caller_ms)

    def arm(self, listen: engine.Listen) -> EndpointConfig:
        """Start taking `listen`'s answer (speech already under way is kept)."""
        config = endpoint_config(listen)
        if listen.speech and not self.endpointer.in_speech and not self.dtmf.digits:
            self.endpointer.arm(config, self.caller_ms)
        if listen.dtmf is not None and not self.dtmf.active:
            self.dtmf.start(listen.dtmf.max_digits, terminator=listen.dtmf.terminator,
                            inter_digit_ms=listen.dtmf.inter_digit_ms)
        return config

    def disarm(self) -> None:
        """The answer is taken (or given up on): what comes in now answers nothing."""
        self.endpointer.disarm()
        self.dtmf.cancel()
        self.barged = False
        self.listen = None
        while not self.inputs.empty():  # leftovers (keys and speech both ended) are stale
            self.inputs.get_nowait()

    # ------------------------------------------------------ the utterance

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

    def claim_utterance(self) -> asyncio.Task[Utterance] | None:
        """The utterance of the speech that just ended, for recognition to finish."""
        task, self._utt_task = self._utt_task, None
        return task

    def utterance_finished(self) -> None:
        self._utt = None

    async def drop_utterance(self) -> None:
        """Keys won over speech: the recognizer may stop."""
        task, self._utt_task = self._utt_task, None
        utt, self._utt = self._utt, None
        if task is not None and not task.done():
            task.cancel()
        if utt is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(utt.cancel(), 2)

    def running(self) -> list[asyncio.Task[Any]]:
        task = self._utt_task
        return [task] if task is not None and not task.done() else []

    async def close(self) -> None:
        """The call ended: release the recognizer."""
        if self._utt is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._utt.cancel(), 2)
